-- The server's archive of audit events uploaded by devices. Each event is
-- sealed; identifiers that must be looked up are keyed hashes (no NHS
-- number, no event id in the clear).
CREATE TABLE events (
    id_ref         BLOB PRIMARY KEY,   -- keyed hash of the event id: idempotent upload
    device         BLOB NOT NULL,      -- the uploading device's public key
    seq            INTEGER NOT NULL,   -- the event's place in that device's chain
    patient_ref    BLOB,               -- keyed hash of the NHS number, for the patient's access log
    flag           TEXT,               -- NULL, or why it did not verify: gap, fork, foreign (named another device)
    received_at_ms INTEGER NOT NULL,
    sealed         BLOB NOT NULL       -- the event, sealed (AAD: table and id_ref)
) STRICT;
CREATE INDEX events_by_patient ON events (patient_ref);
CREATE INDEX events_by_device ON events (device, seq);

-- Where each device's chain stands, and what it last said it still holds.
CREATE TABLE chains (
    device         BLOB PRIMARY KEY,
    last_seq       INTEGER NOT NULL,
    last_hash      TEXT NOT NULL,
    queued         INTEGER NOT NULL,   -- events the device still held unsent when it last uploaded
    oldest_ms      INTEGER,            -- when the oldest of those was written
    reported_at_ms INTEGER NOT NULL
) STRICT;

-- Alerts for privacy officers: one per allowed (type, reason) on an event,
-- routed to the organisation of the user who acted.
CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY,
    event_ref      BLOB NOT NULL REFERENCES events (id_ref),
    organisation   TEXT NOT NULL,
    alert_type     INTEGER NOT NULL,
    reason         INTEGER NOT NULL,
    raised_at_ms   INTEGER NOT NULL,
    status         TEXT NOT NULL,      -- open, justified, referred
    closed_by      TEXT,
    closed_at_ms   INTEGER,
    UNIQUE (event_ref, alert_type, reason)
) STRICT;
CREATE INDEX alerts_by_organisation ON alerts (organisation, status);
