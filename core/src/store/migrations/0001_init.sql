-- Schema 1. Every identifying column is a 16-byte keyed hash; every value
-- is sealed. Small tables are WITHOUT ROWID: no second index per table.

-- Store-wide values: the wrapped store key.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT, WITHOUT ROWID;

-- One row per patient record on this device: its data key wrapped by the
-- store key, and the list of its compartment documents (ids and
-- compartments) sealed with that data key. Deleting the row crypto-shreds
-- the record.
CREATE TABLE records (
    record_ref  BLOB PRIMARY KEY,   -- keyed hash of the NHS number
    wrapped_key BLOB NOT NULL,
    sealed_docs BLOB NOT NULL
) STRICT, WITHOUT ROWID;

-- Which record owns a document, so a chunk can be sealed with its key.
CREATE TABLE documents (
    doc_ref    BLOB PRIMARY KEY,    -- keyed hash of the document id
    record_ref BLOB NOT NULL REFERENCES records(record_ref) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Automerge chunks in samod's key layout ([doc id, kind, hash]). A rowid
-- table: rows are large, and appends fill pages in order.
CREATE TABLE chunks (
    key_ref   BLOB NOT NULL UNIQUE, -- keyed hash of the whole storage key
    doc_ref   BLOB NOT NULL,        -- keyed hash of the key's first part
    range_ref BLOB NOT NULL,        -- keyed hash of the key's first two parts
    sealed    BLOB NOT NULL         -- storage key and bytes, sealed
) STRICT;
-- One index serves both lookups: by document, and by (document, range).
CREATE INDEX chunks_by_doc_range ON chunks(doc_ref, range_ref);
