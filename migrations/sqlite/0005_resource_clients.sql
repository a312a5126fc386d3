-- Files and cached contents belong to the client key that created them through the gateway, not
-- only to a Google Cloud project: another client key may not see or use them. NULL: created
-- before this was recorded (or not through the gateway), usable by anyone.
ALTER TABLE resource_owners ADD COLUMN client_key_id INTEGER;
-- Owners expire (a week after creation): the creation time in ms, for pruning and for the
-- in-memory map's age. Existing rows take theirs from created_at.
ALTER TABLE resource_owners ADD COLUMN created_at_ms INTEGER NOT NULL DEFAULT 0;
UPDATE resource_owners
   SET created_at_ms = CAST((julianday(created_at) - 2440587.5) * 86400000 AS INTEGER);
CREATE INDEX resource_owners_created ON resource_owners (created_at_ms);
