-- Admin sessions, so that a token can be revoked before it expires: each admin token names its
-- row (the `sid` claim). A logout revokes one session; a new admin password revokes them all.
-- Times in milliseconds since the epoch; rows past expires_at_ms are pruned.
CREATE TABLE admin_sessions (
    id             TEXT   PRIMARY KEY,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    revoked_at_ms  BIGINT
);
