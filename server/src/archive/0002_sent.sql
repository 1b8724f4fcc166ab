-- Every document the server sent to each device (a sync message carrying
-- its changes): what a modified app could have read, whatever its own
-- trail says. Sealed; kept as long as the audit events beside it.
CREATE TABLE sent (
    device         BLOB NOT NULL,      -- the device's public key
    doc_ref        BLOB NOT NULL,      -- keyed hash of the document id
    patient_ref    BLOB NOT NULL,      -- keyed hash of the NHS number
    first_sent_ms  INTEGER NOT NULL,
    last_sent_ms   INTEGER NOT NULL,
    sealed         BLOB NOT NULL,      -- document id, NHS number, compartment (AAD: table, device, doc_ref)
    PRIMARY KEY (device, doc_ref)
) STRICT, WITHOUT ROWID;
CREATE INDEX sent_by_patient ON sent (patient_ref);
