-- Version 7: a fleet-wide verify schedule (instance '*', kind 'verify'). SQLite cannot change
-- a CHECK constraint, so schedules is rebuilt (no foreign key refers to it).
CREATE TABLE schedules_v7 (
    instance   TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('logical', 'base', 'drill', 'verify')),
    cron       TEXT NOT NULL,
    origin     TEXT NOT NULL CHECK (origin IN ('config', 'cli')),
    last_slot  INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (instance, kind)
);
INSERT INTO schedules_v7 SELECT instance, kind, cron, origin, last_slot, updated_at FROM schedules;
DROP TABLE schedules;
ALTER TABLE schedules_v7 RENAME TO schedules;
