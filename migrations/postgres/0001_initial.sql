-- The schema of migrations/sqlite/0001–0003 in PostgreSQL's types, plus the tables that let
-- several instances share one quota (quota_leases) and hear each other's news (cluster_events).
-- Integers are BIGINT and flags are 0/1 BIGINTs so one set of queries decodes on both backends.
CREATE TABLE upstream_keys (
    id          BIGSERIAL PRIMARY KEY,
    api_key     TEXT   NOT NULL UNIQUE,
    project     TEXT,
    enabled     BIGINT NOT NULL DEFAULT 1,
    source      TEXT   NOT NULL CHECK (source IN ('env', 'api')),
    retired_at  TEXT,
    status      TEXT   NOT NULL DEFAULT 'active',
    last_error  TEXT,
    created_at  TEXT   NOT NULL
        DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
);

CREATE TABLE client_keys (
    id                BIGSERIAL PRIMARY KEY,
    name              TEXT   NOT NULL,
    digest            TEXT   NOT NULL UNIQUE,
    prefix            TEXT   NOT NULL,
    enabled           BIGINT NOT NULL DEFAULT 1,
    source            TEXT   NOT NULL CHECK (source IN ('env', 'api')),
    retired_at        TEXT,
    created_at        TEXT   NOT NULL
        DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    last_used_at      TEXT,
    rpm_limit         BIGINT,
    rpd_limit         BIGINT,
    daily_token_limit BIGINT,
    allowed_models    TEXT,
    expires_at_ms     BIGINT
);

CREATE TABLE resource_owners (
    resource   TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    key_id     BIGINT,
    created_at TEXT NOT NULL
        DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE request_logs (
    id                BIGSERIAL PRIMARY KEY,
    at_ms             BIGINT NOT NULL,
    client_key_id     BIGINT,
    upstream_key_id   BIGINT,
    project           TEXT,
    model             TEXT,
    route             TEXT   NOT NULL,
    status            BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    thoughts_tokens   BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    streamed          BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX request_logs_at ON request_logs (at_ms);

CREATE TABLE usage_daily (
    day               BIGINT NOT NULL,
    client_key_id     BIGINT NOT NULL DEFAULT 0,
    upstream_key_id   BIGINT NOT NULL DEFAULT 0,
    model             TEXT   NOT NULL DEFAULT '',
    requests          BIGINT NOT NULL DEFAULT 0,
    errors            BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    thoughts_tokens   BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, client_key_id, upstream_key_id, model)
);

CREATE TABLE quota_counts (
    day     BIGINT NOT NULL,
    project TEXT   NOT NULL,
    model   TEXT   NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (day, project, model)
);

-- Slices of a project's request quota for one model, granted to one instance at a time. A grant
-- is made under a per-(project, model) advisory lock only when the slices granted in the last
-- 60 s plus a lease's lifetime, and on this Pacific day, stay within the limits, so the
-- instances together never send more than the limit in any minute or day.
CREATE TABLE quota_leases (
    id            BIGSERIAL PRIMARY KEY,
    project       TEXT   NOT NULL,
    model         TEXT   NOT NULL,
    day           BIGINT NOT NULL,
    granted_at_ms BIGINT NOT NULL,
    count         BIGINT NOT NULL,
    instance      TEXT   NOT NULL
);
CREATE INDEX quota_leases_lookup ON quota_leases (project, model, granted_at_ms);

-- What one instance learned that the others must know: a quota cooldown after a 429, a key
-- taken out of service, a resource's owner, or a change made through the management API.
-- Every instance polls rows newer than the last it saw.
CREATE TABLE cluster_events (
    id        BIGSERIAL PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    instance  TEXT   NOT NULL,
    kind      TEXT   NOT NULL,
    project   TEXT,
    model     TEXT,
    key_id    BIGINT,
    until_ms  BIGINT,
    daily     BIGINT NOT NULL DEFAULT 0,
    detail    TEXT
);
CREATE INDEX cluster_events_at ON cluster_events (at_ms);
