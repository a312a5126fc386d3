-- Requests a client key may have in flight at once (NULL: no limit).
ALTER TABLE client_keys ADD COLUMN max_concurrent BIGINT;
