-- Every change an operator makes, whether it worked or not.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    who     TEXT NOT NULL,        -- the certificate's identity, e.g. admin:alice
    action  TEXT NOT NULL,        -- e.g. "start restore", "rotate keys"
    detail  TEXT NOT NULL,
    outcome TEXT NOT NULL         -- "ok", or the error
);

-- Certificates refused from now on, by the SHA-256 of their DER encoding.
CREATE TABLE revoked_certificates (
    fingerprint TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL,
    revoked_by  TEXT NOT NULL
);
