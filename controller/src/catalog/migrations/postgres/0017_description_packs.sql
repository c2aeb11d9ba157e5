-- The pack that describes an archived file (its description rides in the pack carrying the
-- file's last chunks, or alone when every chunk was stored before). Garbage collection
-- keeps it while the file is archived and queues it once retention deletes the file.
ALTER TABLE wal_files ADD COLUMN description_pack TEXT;
CREATE INDEX wal_files_description_pack ON wal_files (description_pack);
