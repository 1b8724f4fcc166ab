-- The people who run the admin commands: each acts, and is audited, under
-- their own name, proving it with a passcode (an Argon2id verifier).
CREATE TABLE operators (
    operator_id   TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    passcode_phc  TEXT NOT NULL,
    failed        INTEGER NOT NULL DEFAULT 0,
    added_at_ms   INTEGER NOT NULL
) STRICT;
