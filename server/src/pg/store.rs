//! The sealed store's rows in PostgreSQL (ADR 0017): `scr_core::Store`
//! over this backend seals, hashes and checks exactly as on SQLite; here
//! are only its row operations, on the tables of `0003_store.sql`.
//!
//! The store's work is synchronous and spans several statements (an audit
//! event committed with the change it records), so each transaction is
//! held by a task on the pool's runtime that runs the caller's statements
//! one by one, as they come, and commits or rolls back at the end
//! ([`Held`]). A connection that failed mid-way never goes back to the
//! pool.
//!
//! In a write, what is read to be changed is held against other nodes
//! until the transaction ends: a record's row (`FOR UPDATE`) and a named
//! value (a transaction-scoped advisory lock on its name, which also holds
//! a name not yet written), so two nodes cannot lose each other's update
//! or fork the server's audit chain.
//!
//! What other nodes must see is told in the same transaction (delivered
//! at commit, or never):
//! - a write of records, documents, holdings or named values (a grant, a
//!   relationship: what share decisions read) bumps the `store` counter
//!   and notifies `scr_changes`, as the directory's writes do; the
//!   server's own audit chain does not (no node keeps it in memory);
//! - a write of a document's chunks records the documents' keyed hashes
//!   under the next number and wakes the other nodes on `scr_docs`
//!   (`pg::written`), so each node refreshes just those documents, and a
//!   node whose listening connection dropped reads on from its number.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use scr_core::StoreError;
use scr_core::store::rows::{ChunkRange, ChunkRow, KeyedRow, RowBackend, RowRef, RowWork, Rows};
use tokio::sync::mpsc;

use super::Pg;
use super::held::{Held, b, hold, p, r, store_error};

/// The store's rows on a PostgreSQL pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pg: Pg,
    /// The `store` counter's bumps this handle committed: its own writes,
    /// which [`RowBackend::data_version`] leaves out.
    own: Arc<AtomicI64>,
}

impl PgStore {
    pub fn new(pg: Pg) -> Self {
        Self {
            pg,
            own: Arc::default(),
        }
    }

    /// Whether a store was ever opened on this database (its key is there):
    /// a node with no key file must then not make a new key.
    pub fn has_store_key(&self) -> Result<bool, StoreError> {
        self.pg
            .run(|pool| async move {
                let c = super::client(&pool).await?;
                let row = c
                    .query_opt(
                        "SELECT 1 FROM store_meta WHERE name = $1",
                        &[&scr_core::store::STORE_KEY_ROW],
                    )
                    .await
                    .map_err(super::failed("store key"))?;
                Ok(row.is_some())
            })
            .map_err(store_error)
    }

    fn transaction(&self, write: bool, work: &mut RowWork<'_>) -> Result<(), StoreError> {
        let (ops, inbox) = mpsc::unbounded_channel();
        // A read runs outside a transaction, statement by statement, as on
        // SQLite: two round trips fewer.
        // Read committed whatever the database's default: the numbering of
        // document writes (`pg::written`) waits on a row lock, which a
        // stricter level would turn into serialization failures.
        let begin = write.then_some("BEGIN ISOLATION LEVEL READ COMMITTED");
        let _task = self
            .pg
            .spawn(move |pool| async move { hold(pool, begin, inbox).await });
        let held = Held {
            ops,
            write,
            limit: self.pg.limit,
            bump: Cell::new(false),
            docs: RefCell::default(),
        };
        let outcome = work(&held);
        let bumped = held.bump.get();
        let ended = match outcome.is_ok() {
            true => held.commit(self.pg.node()),
            false => held.end(None),
        };
        outcome?;
        ended?;
        if bumped {
            self.own.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl RowBackend for PgStore {
    fn write(&self, work: &mut RowWork<'_>) -> Result<(), StoreError> {
        self.transaction(true, work)
    }

    fn read(&self, work: &mut RowWork<'_>) -> Result<(), StoreError> {
        self.transaction(false, work)
    }

    /// The `store` change counter (`change_counters`), less this handle's
    /// own bumps: moves when another node wrote what share decisions read.
    /// (A read racing this handle's commit may see it move once.)
    fn data_version(&self) -> Result<i64, StoreError> {
        let counter = self
            .pg
            .run(|pool| async move {
                let c = super::client(&pool).await?;
                let row = c
                    .query_opt(
                        "SELECT seq FROM change_counters WHERE concern = 'store'",
                        &[],
                    )
                    .await
                    .map_err(super::failed("store counter"))?;
                Ok(row.map_or(0, |r| r.get::<_, i64>(0)))
            })
            .map_err(store_error)?;
        Ok(counter - self.own.load(Ordering::SeqCst))
    }
}

impl Rows for Held {
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.hold_name(name)?;
        self.bytes(
            "meta",
            "SELECT value FROM store_meta WHERE name = $1",
            vec![p(name.to_owned())],
        )
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.named_changed(name);
        self.changed(
            "meta",
            "INSERT INTO store_meta (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            vec![p(name.to_owned()), b(value)],
        )
        .map(drop)
    }

    fn meta_insert_new(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.named_changed(name);
        Ok(self.changed(
            "meta",
            "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![p(name.to_owned()), b(value)],
        )? > 0)
    }

    fn meta_delete(&self, name: &str) -> Result<(), StoreError> {
        self.named_changed(name);
        self.changed(
            "meta",
            "DELETE FROM store_meta WHERE name = $1",
            vec![p(name.to_owned())],
        )
        .map(drop)
    }

    fn record_insert(
        &self,
        record: &RowRef,
        wrapped_key: &[u8],
        sealed_docs: &[u8],
    ) -> Result<bool, StoreError> {
        self.changes_shared();
        Ok(self.changed(
            "record",
            "INSERT INTO store_records (record_ref, wrapped_key, sealed_docs) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            vec![r(record), b(wrapped_key), b(sealed_docs)],
        )? > 0)
    }

    fn record_exists(&self, record: &RowRef) -> Result<bool, StoreError> {
        Ok(self.record_docs(record)?.is_some())
    }

    fn record_wrapped_key(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.bytes(
            "record key",
            "SELECT wrapped_key FROM store_records WHERE record_ref = $1",
            vec![r(record)],
        )
    }

    fn record_docs(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        if self.write {
            self.bytes(
                "record",
                "SELECT sealed_docs FROM store_records WHERE record_ref = $1 FOR UPDATE",
                vec![r(record)],
            )
        } else {
            self.bytes(
                "record",
                "SELECT sealed_docs FROM store_records WHERE record_ref = $1",
                vec![r(record)],
            )
        }
    }

    fn record_set_docs(&self, record: &RowRef, sealed_docs: &[u8]) -> Result<(), StoreError> {
        self.changes_shared();
        self.changed(
            "record",
            "UPDATE store_records SET sealed_docs = $1 WHERE record_ref = $2",
            vec![b(sealed_docs), r(record)],
        )
        .map(drop)
    }

    fn record_forget(&self, record: &RowRef) -> Result<bool, StoreError> {
        self.changes_shared();
        self.changed(
            "forget",
            "DELETE FROM store_chunks WHERE doc_ref IN
             (SELECT doc_ref FROM store_documents WHERE record_ref = $1)",
            vec![r(record)],
        )?;
        self.changed(
            "forget",
            "DELETE FROM store_quarantine WHERE doc_ref IN
             (SELECT doc_ref FROM store_documents WHERE record_ref = $1)",
            vec![r(record)],
        )?;
        self.changed(
            "forget",
            "DELETE FROM store_documents WHERE record_ref = $1",
            vec![r(record)],
        )?;
        self.changed(
            "forget",
            "DELETE FROM store_holdings WHERE record_ref = $1",
            vec![r(record)],
        )?;
        Ok(self.changed(
            "forget",
            "DELETE FROM store_records WHERE record_ref = $1",
            vec![r(record)],
        )? > 0)
    }

    fn document_record(&self, doc: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.bytes(
            "document",
            "SELECT record_ref FROM store_documents WHERE doc_ref = $1",
            vec![r(doc)],
        )
    }

    fn document_insert(&self, doc: &RowRef, record: &RowRef) -> Result<(), StoreError> {
        self.changes_shared();
        self.changed(
            "document",
            "INSERT INTO store_documents (doc_ref, record_ref) VALUES ($1, $2)",
            vec![r(doc), r(record)],
        )
        .map(drop)
    }

    fn document_forget(&self, doc: &RowRef) -> Result<(), StoreError> {
        self.changes_document(doc);
        self.changes_shared();
        self.chunks_delete_of(doc)?;
        self.changed(
            "forget",
            "DELETE FROM store_quarantine WHERE doc_ref = $1",
            vec![r(doc)],
        )?;
        self.changed(
            "forget",
            "DELETE FROM store_documents WHERE doc_ref = $1",
            vec![r(doc)],
        )
        .map(drop)
    }

    fn chunk_put(
        &self,
        key: &RowRef,
        doc: &RowRef,
        range: &RowRef,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.changes_document(doc);
        self.changed(
            "chunk",
            "INSERT INTO store_chunks (key_ref, doc_ref, range_ref, sealed) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key_ref) DO UPDATE SET sealed = excluded.sealed",
            vec![r(key), r(doc), r(range), b(sealed)],
        )
        .map(drop)
    }

    fn chunk_get(&self, key: &RowRef) -> Result<Option<KeyedRow>, StoreError> {
        Ok(self
            .pairs(
                "chunk",
                "SELECT doc_ref, sealed FROM store_chunks WHERE key_ref = $1",
                vec![r(key)],
            )?
            .into_iter()
            .next())
    }

    fn chunk_delete(&self, key: &RowRef) -> Result<(), StoreError> {
        self.changed(
            "chunk",
            "DELETE FROM store_chunks WHERE key_ref = $1",
            vec![r(key)],
        )
        .map(drop)
    }

    fn chunk_reseal(&self, key: &RowRef, sealed: &[u8]) -> Result<(), StoreError> {
        self.changed(
            "chunk",
            "UPDATE store_chunks SET sealed = $1 WHERE key_ref = $2",
            vec![b(sealed), r(key)],
        )
        .map(drop)
    }

    fn chunks_delete_of(&self, doc: &RowRef) -> Result<(), StoreError> {
        self.changes_document(doc);
        self.changed(
            "chunks",
            "DELETE FROM store_chunks WHERE doc_ref = $1",
            vec![r(doc)],
        )
        .map(drop)
    }

    fn chunks_exist(&self, doc: &RowRef) -> Result<bool, StoreError> {
        Ok(!self
            .rows(
                "chunks",
                "SELECT 1 FROM store_chunks WHERE doc_ref = $1 LIMIT 1",
                vec![r(doc)],
            )?
            .is_empty())
    }

    fn chunks_in(&self, range: ChunkRange<'_>) -> Result<Vec<ChunkRow>, StoreError> {
        let rows = match range {
            ChunkRange::All => self.rows(
                "chunks",
                "SELECT key_ref, doc_ref, sealed FROM store_chunks",
                vec![],
            )?,
            ChunkRange::Document(doc) => self.rows(
                "chunks",
                "SELECT key_ref, doc_ref, sealed FROM store_chunks WHERE doc_ref = $1",
                vec![r(doc)],
            )?,
            ChunkRange::Range(doc, range) => self.rows(
                "chunks",
                "SELECT key_ref, doc_ref, sealed FROM store_chunks
                 WHERE doc_ref = $1 AND range_ref = $2",
                vec![r(doc), r(range)],
            )?,
        };
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect())
    }

    fn audit_insert(&self, seq: i64, sealed: &[u8]) -> Result<(), StoreError> {
        self.changed(
            "audit queue",
            "INSERT INTO store_audit_queue (seq, sealed) VALUES ($1, $2)",
            vec![p(seq), b(sealed)],
        )
        .map(drop)
    }

    fn audit_count(&self) -> Result<u64, StoreError> {
        let rows = self.rows(
            "audit queue",
            "SELECT COUNT(*) FROM store_audit_queue",
            vec![],
        )?;
        Ok(rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    fn audit_after(
        &self,
        after: i64,
        limit: Option<i64>,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .rows(
                "audit queue",
                "SELECT seq, sealed FROM store_audit_queue WHERE seq > $1 ORDER BY seq LIMIT $2",
                vec![p(after), p(limit)],
            )?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    fn audit_last_through(&self, upto: i64) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .rows(
                "audit queue",
                "SELECT seq, sealed FROM store_audit_queue WHERE seq <= $1
                 ORDER BY seq DESC LIMIT 1",
                vec![p(upto)],
            )?
            .first()
            .map(|row| (row.get(0), row.get(1))))
    }

    fn audit_delete_through(&self, upto: i64) -> Result<usize, StoreError> {
        Ok(self.changed(
            "audit queue",
            "DELETE FROM store_audit_queue WHERE seq <= $1",
            vec![p(upto)],
        )? as usize)
    }

    fn holding_put(&self, record: &RowRef, sealed: &[u8]) -> Result<(), StoreError> {
        self.changes_shared();
        self.changed(
            "holding",
            "INSERT INTO store_holdings (record_ref, sealed) VALUES ($1, $2)
             ON CONFLICT (record_ref) DO UPDATE SET sealed = excluded.sealed",
            vec![r(record), b(sealed)],
        )
        .map(drop)
    }

    fn holding_get(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.bytes(
            "holding",
            "SELECT sealed FROM store_holdings WHERE record_ref = $1",
            vec![r(record)],
        )
    }

    fn holdings_all(&self) -> Result<Vec<KeyedRow>, StoreError> {
        self.pairs(
            "holdings",
            "SELECT record_ref, sealed FROM store_holdings",
            vec![],
        )
    }

    fn quarantine_put(&self, key: &RowRef, doc: &RowRef, sealed: &[u8]) -> Result<(), StoreError> {
        self.changed(
            "quarantine",
            "INSERT INTO store_quarantine (key_ref, doc_ref, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (key_ref) DO UPDATE SET sealed = excluded.sealed",
            vec![r(key), r(doc), b(sealed)],
        )
        .map(drop)
    }

    fn quarantine_of(&self, doc: &RowRef) -> Result<Vec<KeyedRow>, StoreError> {
        self.pairs(
            "quarantine",
            "SELECT key_ref, sealed FROM store_quarantine WHERE doc_ref = $1",
            vec![r(doc)],
        )
    }
}
