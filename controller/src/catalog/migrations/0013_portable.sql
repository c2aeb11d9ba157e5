-- Version 13: facts the catalog read from SQLite-only places, moved into columns that a
-- PostgreSQL catalog has too.

-- The backup a restore job reads, which retention must keep (it was only in the job's JSON).
UPDATE jobs SET backup_id = json_extract(params, '$.backup_id')
 WHERE kind = 'restore' AND backup_id IS NULL AND json_extract(params, '$.backup_id') IS NOT NULL;

-- A backup's parts in the order they were declared (it was SQLite's rowid).
ALTER TABLE backup_parts ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE backup_parts SET seq = rowid;
