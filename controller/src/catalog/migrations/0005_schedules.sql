-- Version 5: schedules (per instance and kind) and their runs.

-- A cron expression per instance and kind ('logical', 'base', 'drill'), from the config
-- file or set with `tidemark policy` (origin 'cli', which the config does not overwrite).
-- 'off' switches a kind off. last_slot is the newest slot that fired, unix seconds.
CREATE TABLE schedules (
    instance   TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('logical', 'base', 'drill')),
    cron       TEXT NOT NULL,
    origin     TEXT NOT NULL CHECK (origin IN ('config', 'cli')),
    last_slot  INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (instance, kind)
);

-- One row per fired slot. A run makes attempts (a job or a drill each); one that fails or
-- times out is retried with backoff until the attempts run out.
CREATE TABLE scheduled_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    instance        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    slot            INTEGER NOT NULL,
    missed          INTEGER NOT NULL DEFAULT 0,   -- slots skipped while the controller was down
    attempt         INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL CHECK (state IN ('running', 'waiting', 'succeeded', 'failed')),
    job_id          INTEGER,
    drill_id        INTEGER,
    deadline        INTEGER,
    next_attempt_at INTEGER,
    message         TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX scheduled_runs_open ON scheduled_runs (state);
CREATE INDEX scheduled_runs_policy ON scheduled_runs (instance, kind, id);
