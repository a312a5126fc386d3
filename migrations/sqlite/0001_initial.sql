-- Upstream Gemini keys. The key itself must be stored to be sent upstream; it is never
-- returned whole by any route or written to a log.
CREATE TABLE upstream_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    api_key     TEXT    NOT NULL UNIQUE,
    project     TEXT,
    enabled     INTEGER NOT NULL DEFAULT 1,
    -- 'env': from GEMINI_API_KEYS (retired when it leaves the variable); 'api': added by an operator.
    source      TEXT    NOT NULL CHECK (source IN ('env', 'api')),
    retired_at  TEXT,
    status      TEXT    NOT NULL DEFAULT 'active',
    last_error  TEXT,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Client keys: only the SHA-256 digest is kept, and a short prefix to recognise the key by.
CREATE TABLE client_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    digest       TEXT    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    source       TEXT    NOT NULL CHECK (source IN ('env', 'api')),
    retired_at   TEXT,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_used_at TEXT
);

-- Which Google Cloud project owns a file or cached content (files/…, cachedContents/…).
CREATE TABLE resource_owners (
    resource   TEXT    PRIMARY KEY,
    project    TEXT    NOT NULL,
    key_id     INTEGER,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Generated secrets and runtime settings.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
