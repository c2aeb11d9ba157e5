-- Version 4: sandboxes, drills and the samples drills compare with.

-- archive_timeout as the server last reported it: a drill's recovered point must be within
-- one WAL switch interval of its target.
ALTER TABLE instances ADD COLUMN archive_timeout INTEGER NOT NULL DEFAULT 0;

-- 'agent' or 'sandbox': the certificate role the host registered with. A name belongs to
-- one role: a sandbox cannot take over an agent's name, or the other way round.
ALTER TABLE agents ADD COLUMN role TEXT NOT NULL DEFAULT 'agent';
-- A sandbox's engines, JSON [{"engine": "postgresql", "major": 15}].
ALTER TABLE agents ADD COLUMN sandbox_engines TEXT NOT NULL DEFAULT '[]';

-- One row per drill. Queued until a sandbox is free; the evidence columns are filled from
-- the sandbox's report. passed/failed/aborted are final.
CREATE TABLE drills (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    instance       TEXT NOT NULL,
    state          TEXT NOT NULL,
    target         INTEGER NOT NULL,           -- unix microseconds
    target_reason  TEXT NOT NULL,
    sandbox_wanted TEXT NOT NULL DEFAULT '',
    sandbox        TEXT NOT NULL DEFAULT '',
    backup_id      INTEGER,
    job_id         INTEGER,
    recovered_at   INTEGER NOT NULL DEFAULT 0,
    recovered_lsn  TEXT NOT NULL DEFAULT '',
    stop_record    TEXT NOT NULL DEFAULT '',
    bytes_restored INTEGER NOT NULL DEFAULT 0,
    wal_segments   INTEGER NOT NULL DEFAULT 0,
    rto_ms         INTEGER NOT NULL DEFAULT 0,
    restore_ms     INTEGER NOT NULL DEFAULT 0,
    replay_ms      INTEGER NOT NULL DEFAULT 0,
    rpo_secs       INTEGER NOT NULL DEFAULT 0,
    checks         TEXT NOT NULL DEFAULT '[]', -- JSON [CheckResult]
    log_tail       TEXT NOT NULL DEFAULT '',
    reason         TEXT NOT NULL DEFAULT '',
    -- Problems the controller saw while serving the drill (an unreadable WAL segment).
    notes          TEXT NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER
);
CREATE INDEX drills_instance ON drills (instance, id);
CREATE INDEX drills_state ON drills (state);

-- Probe values taken on the production server, for drills to compare with.
CREATE TABLE samples (
    instance TEXT NOT NULL,
    name     TEXT NOT NULL,
    taken_at INTEGER NOT NULL,                 -- unix microseconds
    value    TEXT NOT NULL,
    PRIMARY KEY (instance, name, taken_at)
);

-- Jobs gain the kind 'drill'. SQLite cannot change a CHECK constraint, so the table is
-- rebuilt (no foreign key refers to it).
CREATE TABLE jobs_v4 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('backup', 'restore', 'drill')),
    agent       TEXT NOT NULL,
    instance    TEXT NOT NULL,
    params      TEXT NOT NULL,               -- JSON, the job as sent to the agent
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    backup_id   INTEGER,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
INSERT INTO jobs_v4 SELECT id, kind, agent, instance, params, state, bytes_done, bytes_total,
    message, backup_id, created_at, finished_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v4 RENAME TO jobs;
