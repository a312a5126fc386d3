-- Files and cached contents belong to the client key that created them through the gateway, not
-- only to a Google Cloud project: another client key may not see or use them. NULL: created
-- before this was recorded (or not through the gateway), usable by anyone.
ALTER TABLE resource_owners ADD COLUMN client_key_id BIGINT;
-- Owners expire (a week after creation): the creation time in ms, for pruning and for the
-- in-memory map's age. Existing rows take theirs from created_at.
ALTER TABLE resource_owners ADD COLUMN created_at_ms BIGINT NOT NULL DEFAULT 0;
UPDATE resource_owners
   SET created_at_ms = CAST(EXTRACT(EPOCH FROM CAST(created_at AS TIMESTAMPTZ)) * 1000 AS BIGINT);
CREATE INDEX resource_owners_created ON resource_owners (created_at_ms);
-- "owner" news carries the owning client key, so the other instances enforce it at once.
ALTER TABLE cluster_events ADD COLUMN client_key_id BIGINT;
