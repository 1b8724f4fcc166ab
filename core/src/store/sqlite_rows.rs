//! The store's rows on SQLite: every statement the store runs, on one
//! connection (a transaction, or the connection itself for a read).
//! SQLite has one writer at a time (`BEGIN IMMEDIATE`), so a value read in
//! a write is held by construction.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::rows::{ChunkRange, ChunkRow, KeyedRow, RowRef, Rows};

/// Row operations on an open SQLite connection or transaction.
pub(super) struct SqliteRows<'c>(pub(super) &'c Connection);

fn pair(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyedRow> {
    Ok((r.get(0)?, r.get(1)?))
}

fn triple(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

impl SqliteRows<'_> {
    fn one(&self, sql: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn pairs(&self, sql: &str, key: &[u8]) -> Result<Vec<KeyedRow>, StoreError> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .query_map([key], pair)?
            .collect::<Result<Vec<_>, _>>()?)
    }
}

impl Rows for SqliteRows<'_> {
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![name, value])?;
        Ok(())
    }

    fn meta_insert_new(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?
            .execute(params![name, value])?
            > 0)
    }

    fn meta_delete(&self, name: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM meta WHERE name = ?1")?
            .execute([name])?;
        Ok(())
    }

    fn record_insert(
        &self,
        record: &RowRef,
        wrapped_key: &[u8],
        sealed_docs: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "INSERT INTO records (record_ref, wrapped_key, sealed_docs) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![record, wrapped_key, sealed_docs])?
            > 0)
    }

    fn record_exists(&self, record: &RowRef) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM records WHERE record_ref = ?1")?
            .exists([record])?)
    }

    fn record_wrapped_key(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.one(
            "SELECT wrapped_key FROM records WHERE record_ref = ?1",
            record,
        )
    }

    fn record_docs(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.one(
            "SELECT sealed_docs FROM records WHERE record_ref = ?1",
            record,
        )
    }

    fn record_set_docs(&self, record: &RowRef, sealed_docs: &[u8]) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE records SET sealed_docs = ?1 WHERE record_ref = ?2")?
            .execute(params![sealed_docs, record])?;
        Ok(())
    }

    fn record_forget(&self, record: &RowRef) -> Result<bool, StoreError> {
        let tx = self.0;
        // Chunks first: the document rows say which chunks are the record's.
        tx.execute(
            "DELETE FROM chunks WHERE doc_ref IN (SELECT doc_ref FROM documents WHERE record_ref = ?1)",
            [record],
        )?;
        tx.execute(
            "DELETE FROM quarantine WHERE doc_ref IN (SELECT doc_ref FROM documents WHERE record_ref = ?1)",
            [record],
        )?;
        tx.execute("DELETE FROM documents WHERE record_ref = ?1", [record])?;
        tx.execute("DELETE FROM holdings WHERE record_ref = ?1", [record])?;
        Ok(tx.execute("DELETE FROM records WHERE record_ref = ?1", [record])? > 0)
    }

    fn document_record(&self, doc: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.one("SELECT record_ref FROM documents WHERE doc_ref = ?1", doc)
    }

    fn document_insert(&self, doc: &RowRef, record: &RowRef) -> Result<(), StoreError> {
        self.0
            .prepare_cached("INSERT INTO documents (doc_ref, record_ref) VALUES (?1, ?2)")?
            .execute(params![doc, record])?;
        Ok(())
    }

    fn document_forget(&self, doc: &RowRef) -> Result<(), StoreError> {
        let tx = self.0;
        tx.execute("DELETE FROM chunks WHERE doc_ref = ?1", [doc])?;
        tx.execute("DELETE FROM quarantine WHERE doc_ref = ?1", [doc])?;
        tx.execute("DELETE FROM documents WHERE doc_ref = ?1", [doc])?;
        Ok(())
    }

    fn chunk_put(
        &self,
        key: &RowRef,
        doc: &RowRef,
        range: &RowRef,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO chunks (key_ref, doc_ref, range_ref, sealed) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key_ref) DO UPDATE SET sealed = excluded.sealed",
            )?
            .execute(params![key, doc, range, sealed])?;
        Ok(())
    }

    fn chunk_get(&self, key: &RowRef) -> Result<Option<KeyedRow>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT doc_ref, sealed FROM chunks WHERE key_ref = ?1")?
            .query_row([key], pair)
            .optional()?)
    }

    fn chunk_delete(&self, key: &RowRef) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM chunks WHERE key_ref = ?1")?
            .execute([key])?;
        Ok(())
    }

    fn chunk_reseal(&self, key: &RowRef, sealed: &[u8]) -> Result<(), StoreError> {
        self.0
            .prepare_cached("UPDATE chunks SET sealed = ?1 WHERE key_ref = ?2")?
            .execute(params![sealed, key])?;
        Ok(())
    }

    fn chunks_delete_of(&self, doc: &RowRef) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM chunks WHERE doc_ref = ?1")?
            .execute([doc])?;
        Ok(())
    }

    fn chunks_exist(&self, doc: &RowRef) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM chunks WHERE doc_ref = ?1 LIMIT 1")?
            .exists([doc])?)
    }

    fn chunks_in(&self, range: ChunkRange<'_>) -> Result<Vec<ChunkRow>, StoreError> {
        let c = self.0;
        Ok(match range {
            ChunkRange::All => c
                .prepare_cached("SELECT key_ref, doc_ref, sealed FROM chunks")?
                .query_map([], triple)?
                .collect::<Result<Vec<_>, _>>()?,
            ChunkRange::Document(doc) => c
                .prepare_cached("SELECT key_ref, doc_ref, sealed FROM chunks WHERE doc_ref = ?1")?
                .query_map([doc], triple)?
                .collect::<Result<Vec<_>, _>>()?,
            ChunkRange::Range(doc, range) => c
                .prepare_cached(
                    "SELECT key_ref, doc_ref, sealed FROM chunks WHERE doc_ref = ?1 AND range_ref = ?2",
                )?
                .query_map(params![doc, range], triple)?
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    fn audit_insert(&self, seq: i64, sealed: &[u8]) -> Result<(), StoreError> {
        self.0
            .prepare_cached("INSERT INTO audit_queue (seq, sealed) VALUES (?1, ?2)")?
            .execute(params![seq, sealed])?;
        Ok(())
    }

    fn audit_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .0
            .query_row("SELECT COUNT(*) FROM audit_queue", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn audit_after(
        &self,
        after: i64,
        limit: Option<i64>,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT seq, sealed FROM audit_queue WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map([after, limit.unwrap_or(-1)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn audit_last_through(&self, upto: i64) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT seq, sealed FROM audit_queue WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([upto], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn audit_delete_through(&self, upto: i64) -> Result<usize, StoreError> {
        Ok(self
            .0
            .prepare_cached("DELETE FROM audit_queue WHERE seq <= ?1")?
            .execute([upto])?)
    }

    fn holding_put(&self, record: &RowRef, sealed: &[u8]) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO holdings (record_ref, sealed) VALUES (?1, ?2)
                 ON CONFLICT(record_ref) DO UPDATE SET sealed = excluded.sealed",
            )?
            .execute(params![record, sealed])?;
        Ok(())
    }

    fn holding_get(&self, record: &RowRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.one("SELECT sealed FROM holdings WHERE record_ref = ?1", record)
    }

    fn holdings_all(&self) -> Result<Vec<KeyedRow>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT record_ref, sealed FROM holdings")?
            .query_map([], pair)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn quarantine_put(&self, key: &RowRef, doc: &RowRef, sealed: &[u8]) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT INTO quarantine (key_ref, doc_ref, sealed) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key_ref) DO UPDATE SET sealed = excluded.sealed",
            )?
            .execute(params![key, doc, sealed])?;
        Ok(())
    }

    fn quarantine_of(&self, doc: &RowRef) -> Result<Vec<KeyedRow>, StoreError> {
        self.pairs(
            "SELECT key_ref, sealed FROM quarantine WHERE doc_ref = ?1",
            doc,
        )
    }
}
