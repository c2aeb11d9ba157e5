-- Encryption at rest. Key-encryption keys live in files on the controller, never here: the
-- catalog records each one's fingerprint, so a wrong file is recognised. Data keys are stored
-- wrapped (AES-256-GCM) by exactly one KEK; rotation rewraps them in one transaction.
CREATE TABLE keks (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER               -- set when a newer KEK rewrapped every data key
);

CREATE TABLE data_keys (
    id         INTEGER PRIMARY KEY,   -- written into every chunk sealed with it
    kek_id     INTEGER NOT NULL REFERENCES keks(id),
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
