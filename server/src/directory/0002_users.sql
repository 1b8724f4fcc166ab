-- Users and the role each may act in (one selected role per account here).
CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,  -- SDS user id
    display_name   TEXT NOT NULL,
    organisation   TEXT NOT NULL,     -- ODS code
    job_role       TEXT NOT NULL,     -- SDS job role code
    job_role_name  TEXT NOT NULL,
    activities     TEXT NOT NULL,     -- comma-separated activity codes
    privacy_officer INTEGER NOT NULL,
    card_serial    TEXT NOT NULL,
    passcode_phc   TEXT NOT NULL,     -- Argon2id verifier
    failed_logins  INTEGER NOT NULL DEFAULT 0
) STRICT;
