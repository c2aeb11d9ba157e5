-- Version 12: retention.

-- A backup retention removed keeps its row as history, with status 'expired' and when; its
-- manifest is deleted, so its chunks become garbage once nothing else refers to them. A
-- failed backup's manifest is removed the same way (it stays 'failed'). SQLite cannot change
-- a CHECK constraint, so backups is rebuilt; the tables that refer to it keep pointing at it
-- by name.
CREATE TABLE backups_v12 (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    instance       TEXT NOT NULL,
    agent          TEXT NOT NULL,
    kind           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed', 'expired')),
    job_id         INTEGER,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    reason         TEXT NOT NULL DEFAULT '',
    server_version TEXT NOT NULL DEFAULT '',
    tool_version   TEXT NOT NULL DEFAULT '',
    corrupt        TEXT NOT NULL DEFAULT '',
    databases      TEXT NOT NULL DEFAULT '[]',
    expired_at     INTEGER
);
INSERT INTO backups_v12 (id, instance, agent, kind, status, job_id, started_at, finished_at,
    reason, server_version, tool_version, corrupt, databases)
  SELECT id, instance, agent, kind, status, job_id, started_at, finished_at, reason,
    server_version, tool_version, corrupt, databases FROM backups;
DROP TABLE backups;
ALTER TABLE backups_v12 RENAME TO backups;
CREATE INDEX backups_instance ON backups (instance, id);

-- Store objects the catalog no longer refers to, waiting to be deleted: written in the
-- transaction that forgets their chunks, removed once the store's delete returned. A crash
-- in between is finished by the next collection.
CREATE TABLE gc_pending (
    object    TEXT PRIMARY KEY,         -- a pack's name, or a loose chunk's id in hex
    kind      TEXT NOT NULL CHECK (kind IN ('pack', 'chunk')),
    chunks    INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    queued_at INTEGER NOT NULL
);

-- A fleet-wide retention schedule (instance '*', kind 'retention').
CREATE TABLE schedules_v12 (
    instance   TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('logical', 'base', 'drill', 'verify', 'retention')),
    cron       TEXT NOT NULL,
    origin     TEXT NOT NULL CHECK (origin IN ('config', 'cli')),
    last_slot  INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (instance, kind)
);
INSERT INTO schedules_v12 SELECT instance, kind, cron, origin, last_slot, updated_at FROM schedules;
DROP TABLE schedules;
ALTER TABLE schedules_v12 RENAME TO schedules;
