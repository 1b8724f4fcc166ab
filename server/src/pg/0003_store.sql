-- The sealed store in PostgreSQL: the same tables as SQLite's server.db
-- (core/src/store/migrations), prefixed. Values are sealed; NHS numbers,
-- document ids and storage keys appear only as keyed hashes.
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE store_records (
    record_ref  BYTEA PRIMARY KEY,
    wrapped_key BYTEA NOT NULL,
    sealed_docs BYTEA NOT NULL
);

CREATE TABLE store_documents (
    doc_ref    BYTEA PRIMARY KEY,
    record_ref BYTEA NOT NULL REFERENCES store_records (record_ref) ON DELETE CASCADE
);
CREATE INDEX store_documents_by_record ON store_documents (record_ref);

CREATE TABLE store_chunks (
    key_ref   BYTEA PRIMARY KEY,
    doc_ref   BYTEA NOT NULL,
    range_ref BYTEA NOT NULL,
    sealed    BYTEA NOT NULL
);
CREATE INDEX store_chunks_by_doc_range ON store_chunks (doc_ref, range_ref);

CREATE TABLE store_audit_queue (
    seq    BIGINT PRIMARY KEY,
    sealed BYTEA NOT NULL
);

CREATE TABLE store_holdings (
    record_ref BYTEA PRIMARY KEY,
    sealed     BYTEA NOT NULL
);

CREATE TABLE store_quarantine (
    key_ref BYTEA PRIMARY KEY,
    doc_ref BYTEA NOT NULL,
    sealed  BYTEA NOT NULL
);
CREATE INDEX store_quarantine_by_doc ON store_quarantine (doc_ref);

-- Bumped by writes other nodes' share decisions read (pg/store.rs).
INSERT INTO change_counters (concern, seq) VALUES ('store', 0);
