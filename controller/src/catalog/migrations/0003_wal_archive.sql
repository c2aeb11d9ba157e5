-- Version 3: physical backups, the WAL archive, archiver status and alerts.

-- Where an instance's WAL may come from: archive_command runs in the data directory, so a
-- push from any other directory (a restored clone on the same host) is refused.
ALTER TABLE instances ADD COLUMN data_directory TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN wal_segment_size INTEGER NOT NULL DEFAULT 0;

-- A base backup's position in the WAL. Filled when the agent finishes it.
CREATE TABLE base_backups (
    backup_id         INTEGER PRIMARY KEY REFERENCES backups(id),
    start_lsn         TEXT NOT NULL,
    stop_lsn          TEXT NOT NULL,
    start_lsn_num     INTEGER NOT NULL,
    stop_lsn_num      INTEGER NOT NULL,
    timeline          INTEGER NOT NULL,
    system_identifier TEXT NOT NULL,
    backup_label      TEXT NOT NULL,
    start_time        INTEGER NOT NULL,
    stop_time         INTEGER NOT NULL,
    tablespaces       TEXT NOT NULL           -- JSON {oid: location}
);

-- Archived WAL files, one row per name per instance, written only once every chunk is
-- durably stored and the file's digest checked. Never updated: a different file under an
-- existing name is refused.
CREATE TABLE wal_files (
    instance    TEXT NOT NULL,
    name        TEXT NOT NULL,
    timeline    INTEGER NOT NULL,
    segno       INTEGER,                      -- NULL for .history files
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    chunks      INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    stored_at   INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    PRIMARY KEY (instance, name)
);
CREATE INDEX wal_files_segno ON wal_files (instance, segno);

CREATE TABLE wal_chunks (
    instance TEXT NOT NULL,
    name     TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    chunk_id BLOB NOT NULL,
    raw_len  INTEGER NOT NULL,
    PRIMARY KEY (instance, name, seq)
);
CREATE INDEX wal_chunks_chunk ON wal_chunks (chunk_id);

-- The last archiver status each agent reported per instance.
CREATE TABLE archiver_status (
    instance          TEXT PRIMARY KEY,
    last_archived_at  INTEGER NOT NULL,
    last_archived_wal TEXT NOT NULL,
    failed_count      INTEGER NOT NULL,
    last_failed_at    INTEGER NOT NULL,
    last_failed_wal   TEXT NOT NULL,
    ready             INTEGER NOT NULL,
    error             TEXT NOT NULL,
    reported_at       INTEGER NOT NULL
);

-- Things an operator must look at (a conflicting WAL push, say). Shown by `tidemark status`
-- and counted in the metrics until acknowledged.
CREATE TABLE alerts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    instance   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX alerts_instance ON alerts (instance, id);
