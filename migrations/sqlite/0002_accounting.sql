-- One row per request that reached a route handler (kept for the retention period).
CREATE TABLE request_logs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms             INTEGER NOT NULL,
    client_key_id     INTEGER,
    upstream_key_id   INTEGER,
    project           TEXT,
    model             TEXT,
    route             TEXT    NOT NULL,
    status            INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    thoughts_tokens   INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    streamed          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX request_logs_at ON request_logs (at_ms);

-- Totals per Pacific day, client key, upstream key and model (0 / '' where there is none).
-- Totals over all time are sums of these rows, so they survive log retention.
CREATE TABLE usage_daily (
    day               INTEGER NOT NULL,
    client_key_id     INTEGER NOT NULL DEFAULT 0,
    upstream_key_id   INTEGER NOT NULL DEFAULT 0,
    model             TEXT    NOT NULL DEFAULT '',
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    thoughts_tokens   INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, client_key_id, upstream_key_id, model)
);

-- The scheduler's request counts per project and model for the current Pacific day, so a
-- restart does not forget how much of the daily quota is used.
CREATE TABLE quota_counts (
    day     INTEGER NOT NULL,
    project TEXT    NOT NULL,
    model   TEXT    NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (day, project, model)
);
