-- Version 6: verify. A backup one of whose chunks verify found missing or corrupt carries
-- the reason here ('' when sound) and is no longer offered for restores or drills.
ALTER TABLE backups ADD COLUMN corrupt TEXT NOT NULL DEFAULT '';
