-- The server's directory: devices and one-time enrollment tokens.
CREATE TABLE enrollment_tokens (
    token_hash    BLOB PRIMARY KEY,   -- BLAKE3 of the token; the token itself is never stored
    organisation  TEXT NOT NULL,      -- ODS code
    device_class  TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_by       BLOB                -- the device key that used it
) STRICT;

CREATE TABLE devices (
    key            BLOB PRIMARY KEY,  -- the device's static x25519 public key
    organisation   TEXT NOT NULL,
    device_class   TEXT NOT NULL,
    enrolled_at_ms INTEGER NOT NULL,
    revoked        INTEGER NOT NULL
) STRICT;
