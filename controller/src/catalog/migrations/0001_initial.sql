-- Tidemark catalog, version 1. Times are unix seconds (UTC).

CREATE TABLE agents (
    name          TEXT PRIMARY KEY,          -- the NAME of agent:NAME in its certificate
    agent_version TEXT NOT NULL,
    tools         TEXT NOT NULL,             -- JSON [{name, version}]
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);

CREATE TABLE instances (
    name              TEXT PRIMARY KEY,      -- fleet-unique
    agent             TEXT NOT NULL REFERENCES agents(name),
    engine            TEXT NOT NULL,
    server_version    TEXT NOT NULL,
    system_identifier TEXT NOT NULL,
    databases         TEXT NOT NULL,         -- JSON ["db", ...]
    error             TEXT NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('backup', 'restore')),
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

CREATE TABLE backups (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    instance       TEXT NOT NULL,
    agent          TEXT NOT NULL,
    kind           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
    job_id         INTEGER,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    reason         TEXT NOT NULL DEFAULT '',
    server_version TEXT NOT NULL DEFAULT '',
    tool_version   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX backups_instance ON backups (instance, id);

CREATE TABLE backup_warnings (
    backup_id INTEGER NOT NULL REFERENCES backups(id),
    seq       INTEGER NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (backup_id, seq)
);

-- One stream of a backup. 'expected' until its upload ends with a verified trailer.
CREATE TABLE backup_parts (
    backup_id     INTEGER NOT NULL REFERENCES backups(id),
    name          TEXT NOT NULL,
    format        TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL CHECK (status IN ('expected', 'stored')),
    raw_bytes     INTEGER NOT NULL DEFAULT 0,
    chunks        INTEGER NOT NULL DEFAULT 0,
    new_chunks    INTEGER NOT NULL DEFAULT 0,
    new_bytes     INTEGER NOT NULL DEFAULT 0,
    stream_sha256 TEXT NOT NULL DEFAULT '',
    check_status  TEXT NOT NULL DEFAULT '',
    check_detail  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (backup_id, name)
);

-- The manifest of a part: its chunks in stream order.
CREATE TABLE part_chunks (
    backup_id INTEGER NOT NULL,
    part      TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    chunk_id  BLOB NOT NULL,
    raw_len   INTEGER NOT NULL,
    PRIMARY KEY (backup_id, part, seq)
);
CREATE INDEX part_chunks_chunk ON part_chunks (chunk_id);

-- Chunks durably in the store. A row is written only after the store's put returned, so the
-- catalog never vouches for bytes that are not there.
CREATE TABLE chunks (
    id         BLOB PRIMARY KEY,
    raw_len    INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
