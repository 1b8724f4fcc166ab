-- Schema 2: the audit queue, and which patients the device holds and why.

-- Events wait here until the server acknowledges them. Sealed with the audit
-- key, which is not a record key: forgetting a patient keeps the trail. The
-- chain's head and base (last released event) live sealed in meta.
CREATE TABLE audit_queue (
    seq    INTEGER PRIMARY KEY,     -- the device's monotonic event counter
    sealed BLOB NOT NULL
) STRICT;

-- Why each record is on this device (caseload, incident, own record...),
-- for the retention rules. Sealed with the store's general key.
CREATE TABLE holdings (
    record_ref BLOB PRIMARY KEY,
    sealed     BLOB NOT NULL
) STRICT, WITHOUT ROWID;
