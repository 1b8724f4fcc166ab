-- Schema 3: versions this device wrote that the server refused (issue 16),
-- kept aside when their document is rebuilt: shown, never sent again.
-- Sealed with the owning record's key, so forgetting the patient shreds them.
CREATE TABLE quarantine (
    key_ref BLOB PRIMARY KEY,   -- keyed hash of (document, version key)
    doc_ref BLOB NOT NULL,      -- keyed hash of the document id
    sealed  BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX quarantine_by_doc ON quarantine (doc_ref);
