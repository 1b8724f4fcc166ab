-- The server's directory in PostgreSQL: the same tables as SQLite's
-- directory.db (server/src/directory/0001..0006), at their latest shape.
-- Nothing here is patient data; tokens are kept only as BLAKE3 hashes.
CREATE TABLE enrollment_tokens (
    token_hash    BYTEA PRIMARY KEY,
    organisation  TEXT NOT NULL,
    device_class  TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_by       BYTEA
);

CREATE TABLE devices (
    key            BYTEA PRIMARY KEY,
    organisation   TEXT NOT NULL,
    device_class   TEXT NOT NULL,
    enrolled_at_ms BIGINT NOT NULL,
    revoked        BOOLEAN NOT NULL DEFAULT FALSE,
    revoked_at_ms  BIGINT
);

CREATE TABLE users (
    user_id         TEXT PRIMARY KEY,
    display_name    TEXT NOT NULL,
    organisation    TEXT NOT NULL,
    job_role        TEXT NOT NULL,
    job_role_name   TEXT NOT NULL,
    activities      TEXT NOT NULL,
    privacy_officer BOOLEAN NOT NULL,
    card_serial     TEXT NOT NULL,
    passcode_phc    TEXT NOT NULL,
    revoked         BOOLEAN NOT NULL DEFAULT FALSE,
    revoked_at_ms   BIGINT
);

CREATE TABLE login_attempts (
    user_id TEXT NOT NULL,
    device  BYTEA NOT NULL,
    failed  BIGINT NOT NULL,
    PRIMARY KEY (user_id, device)
);

CREATE TABLE operators (
    operator_id  TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    passcode_phc TEXT NOT NULL,
    failed       BIGINT NOT NULL DEFAULT 0,
    added_at_ms  BIGINT NOT NULL
);

-- One counter per concern, bumped in the same transaction as every write
-- other nodes must see (an enrollment, a revocation, a user changed): a
-- node that missed a notice catches up by comparing it.
CREATE TABLE change_counters (
    concern TEXT PRIMARY KEY,
    seq     BIGINT NOT NULL
);
INSERT INTO change_counters (concern, seq) VALUES ('directory', 0);
