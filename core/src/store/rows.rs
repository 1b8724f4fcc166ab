//! The store's rows, whatever keeps them (ADR 0017): one trait of row
//! operations on already-sealed values and keyed hashes, one transaction's
//! worth at a time, and the trait a backend implements to run one.
//!
//! Everything that gives a row its meaning (sealing, the key hierarchy,
//! the audit chain, which record a chunk belongs to) stays in [`Store`],
//! above this trait, in one place for every backend. SQLite in this crate
//! ([`super::sqlite_rows`]) is the device's and the single server's;
//! the server crate adds PostgreSQL for several nodes.
//!
//! A backend holds exactly what SQLite holds: ciphertext and keyed hashes.
//!
//! [`Store`]: super::Store

use super::StoreError;

/// A keyed hash naming a row (of an NHS number, a document id, a storage
/// key).
pub type RowRef = crate::crypto::Ref;

/// Which chunks a range load asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkRange<'a> {
    /// Every chunk.
    All,
    /// A document's chunks (its key's first part).
    Document(&'a RowRef),
    /// A document's chunks under one key's first two parts.
    Range(&'a RowRef, &'a RowRef),
}

/// A row's two columns: a keyed hash and a sealed value (a chunk's
/// document and value, a holding's record and value, a quarantined
/// version's key and value).
pub type KeyedRow = (Vec<u8>, Vec<u8>);

/// A chunk row: its key's hash, its document's hash, the sealed key and
/// bytes.
pub type ChunkRow = (Vec<u8>, Vec<u8>, Vec<u8>);

/// The row operations of one transaction. In a write, every read sees the
/// transaction's own writes, and a value read to be changed (a record's
/// document list, a named value) is held against other writers until the
/// transaction ends.
pub trait Rows {
    // Named values, sealed (the store key, the audit chain's ends, secrets).
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Inserts unless the name is taken; whether it inserted.
    fn meta_insert_new(&self, name: &str, value: &[u8]) -> Result<bool, StoreError>;
    fn meta_delete(&self, name: &str) -> Result<(), StoreError>;

    // Records: a wrapped data key and a sealed list of documents.
    /// Inserts unless the record exists; whether it inserted.
    fn record_insert(
        &self,
        record: &RowRef,
        wrapped_key: &[u8],
        sealed_docs: &[u8],
    ) -> Result<bool, StoreError>;
    fn record_exists(&self, record: &RowRef) -> Result<bool, StoreError>;
    fn record_wrapped_key(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError>;
    fn record_docs(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError>;
    fn record_set_docs(&self, record: &RowRef, sealed_docs: &[u8]) -> Result<(), StoreError>;
    /// Deletes the record and everything of it (its documents' chunks and
    /// quarantined versions, its documents, its holding); whether it
    /// existed.
    fn record_forget(&self, record: &RowRef) -> Result<bool, StoreError>;

    // Documents: which record each belongs to.
    fn document_record(&self, doc: &RowRef) -> Result<Option<Vec<u8>>, StoreError>;
    fn document_insert(&self, doc: &RowRef, record: &RowRef) -> Result<(), StoreError>;
    /// Deletes the document's chunks, quarantined versions and row.
    fn document_forget(&self, doc: &RowRef) -> Result<(), StoreError>;

    // Chunks: samod's storage, one sealed row per storage key.
    fn chunk_put(
        &self,
        key: &RowRef,
        doc: &RowRef,
        range: &RowRef,
        sealed: &[u8],
    ) -> Result<(), StoreError>;
    /// The chunk's document hash and sealed value.
    fn chunk_get(&self, key: &RowRef) -> Result<Option<KeyedRow>, StoreError>;
    fn chunk_delete(&self, key: &RowRef) -> Result<(), StoreError>;
    /// Replaces a stored chunk's sealed value (sealed again under another
    /// key).
    fn chunk_reseal(&self, key: &RowRef, sealed: &[u8]) -> Result<(), StoreError>;
    fn chunks_delete_of(&self, doc: &RowRef) -> Result<(), StoreError>;
    fn chunks_exist(&self, doc: &RowRef) -> Result<bool, StoreError>;
    fn chunks_in(&self, range: ChunkRange<'_>) -> Result<Vec<ChunkRow>, StoreError>;

    // The audit queue: sealed events by sequence number.
    fn audit_insert(&self, seq: i64, sealed: &[u8]) -> Result<(), StoreError>;
    fn audit_count(&self) -> Result<u64, StoreError>;
    /// Events after `after`, oldest first, at most `limit` (`None`: all).
    fn audit_after(
        &self,
        after: i64,
        limit: Option<i64>,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    /// The newest event at or before `upto`.
    fn audit_last_through(&self, upto: i64) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Deletes the events at or before `upto`; how many.
    fn audit_delete_through(&self, upto: i64) -> Result<usize, StoreError>;

    // Holdings: why each record is kept, sealed, by record.
    fn holding_put(&self, record: &RowRef, sealed: &[u8]) -> Result<(), StoreError>;
    fn holding_get(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError>;
    fn holdings_all(&self) -> Result<Vec<KeyedRow>, StoreError>;

    // Quarantined versions, sealed, by (document, version) and document.
    fn quarantine_put(&self, key: &RowRef, doc: &RowRef, sealed: &[u8]) -> Result<(), StoreError>;
    fn quarantine_of(&self, doc: &RowRef) -> Result<Vec<KeyedRow>, StoreError>;
}

/// One piece of work inside a transaction, handed to a backend.
pub type RowWork<'w> = dyn FnMut(&dyn Rows) -> Result<(), StoreError> + 'w;

/// What keeps a store's rows for [`super::Store::over`].
pub trait RowBackend: Send + Sync {
    /// Runs `work` in a transaction that commits only if it returns `Ok`.
    fn write(&self, work: &mut RowWork<'_>) -> Result<(), StoreError>;
    /// Runs `work`, which only reads; each statement may see what is
    /// committed at its own moment (as SQLite's autocommit reads do).
    fn read(&self, work: &mut RowWork<'_>) -> Result<(), StoreError>;
    /// Moves whenever another handle (another node) commits a write this
    /// one must see; never moves for this handle's own writes.
    fn data_version(&self) -> Result<i64, StoreError>;
}
