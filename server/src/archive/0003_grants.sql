-- Every grant the server issued to each device, kept as long as the audit
-- events beside it: an event uploaded months late is judged against the
-- grant valid at its time. Sealed (grants name patients).
CREATE TABLE grants (
    device         BLOB NOT NULL,
    grant_ref      BLOB NOT NULL,      -- keyed hash of the grant id
    issued_at_ms   INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    retired_at_ms  INTEGER,            -- when its user logged out, if they did
    sealed         BLOB NOT NULL,      -- the grant (AAD: table, device, grant_ref)
    PRIMARY KEY (device, grant_ref)
) STRICT, WITHOUT ROWID;
CREATE INDEX grants_by_time ON grants (device, issued_at_ms);
