-- Per-client limits (NULL: unlimited).
ALTER TABLE client_keys ADD COLUMN rpm_limit INTEGER;
ALTER TABLE client_keys ADD COLUMN rpd_limit INTEGER;
ALTER TABLE client_keys ADD COLUMN daily_token_limit INTEGER;
-- JSON array of model ids, or NULL for every model.
ALTER TABLE client_keys ADD COLUMN allowed_models TEXT;
ALTER TABLE client_keys ADD COLUMN expires_at_ms INTEGER;
