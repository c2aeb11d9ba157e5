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
