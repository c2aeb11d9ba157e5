-- MariaDB/MySQL instances: binlogs are archived under the server's log_bin_basename.
ALTER TABLE instances ADD COLUMN log_bin_basename TEXT NOT NULL DEFAULT '';

-- The databases in a backup part that holds several (a MariaDB dump), JSON.
ALTER TABLE backups ADD COLUMN databases TEXT NOT NULL DEFAULT '[]';

-- The binlog position each MariaDB/MySQL backup is consistent with: point-in-time recovery
-- replays archived binlogs from exactly here. file is '' when binary logging was off.
CREATE TABLE binlog_coordinates (
    backup_id  INTEGER PRIMARY KEY REFERENCES backups(id),
    file       TEXT NOT NULL,
    seq        INTEGER,                 -- the file's sequence number, NULL when file is ''
    position   INTEGER NOT NULL,
    gtid       TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    stop_time  INTEGER NOT NULL
);

-- A binlog's first event (unix seconds); NULL for PostgreSQL WAL.
ALTER TABLE wal_files ADD COLUMN first_event_at INTEGER;
