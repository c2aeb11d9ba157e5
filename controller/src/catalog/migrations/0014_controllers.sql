-- Several controllers may share one catalog (on PostgreSQL). Each running controller
-- process has a row it keeps fresh; work in flight names the controller carrying it, so
-- that a controller that stops fails only its own work, and another fails it once the
-- stopped one's row goes stale.
CREATE TABLE controllers (
    id         TEXT PRIMARY KEY,       -- random, new each time a controller process starts
    address    TEXT NOT NULL,          -- where it listens, for operators
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
ALTER TABLE backups ADD COLUMN controller TEXT;   -- the controller receiving the upload
ALTER TABLE agents ADD COLUMN controller TEXT;    -- the controller holding its job stream
-- The controller whose job stream delivered the job; NULL while it waits for delivery.
ALTER TABLE jobs ADD COLUMN controller TEXT;
-- The job as sent (protobuf), for whichever controller holds the agent's job stream.
ALTER TABLE jobs ADD COLUMN spec BLOB;
-- The instance a restore or drill job reads from (was only inside params' JSON).
ALTER TABLE jobs ADD COLUMN source_instance TEXT;
UPDATE jobs SET source_instance = json_extract(params, '$.source_instance')
 WHERE kind IN ('restore', 'drill');
CREATE INDEX jobs_undelivered ON jobs (agent) WHERE state = 'queued' AND controller IS NULL;
