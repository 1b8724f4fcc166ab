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

use std::time::Duration;

use scr_core::StoreError;
use scr_core::store::rows::{ChunkRange, ChunkRow, KeyedRow, RowBackend, RowRef, RowWork, Rows};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use super::{Pg, PgError};

/// The store's rows on a PostgreSQL pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pg: Pg,
}

impl PgStore {
    pub fn new(pg: Pg) -> Self {
        Self { pg }
    }

    fn transaction(&self, write: bool, work: &mut RowWork<'_>) -> Result<(), StoreError> {
        let (ops, inbox) = mpsc::unbounded_channel();
        let begin = if write {
            "BEGIN"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        };
        let _task = self
            .pg
            .spawn(move |pool| async move { hold(pool, begin, inbox).await });
        let held = Held {
            ops,
            write,
            limit: self.pg.limit,
        };
        let outcome = work(&held);
        let commit = outcome.is_ok();
        let ended = held.end(commit);
        outcome?;
        ended
    }
}

impl RowBackend for PgStore {
    fn write(&self, work: &mut RowWork<'_>) -> Result<(), StoreError> {
        self.transaction(true, work)
    }

    fn read(&self, work: &mut RowWork<'_>) -> Result<(), StoreError> {
        self.transaction(false, work)
    }

    /// The `store` change counter (`change_counters`): moved by writes that
    /// other nodes must see.
    fn data_version(&self) -> Result<i64, StoreError> {
        self.pg
            .run(|pool| async move {
                let c = super::client(&pool).await?;
                let row = c
                    .query_opt(
                        "SELECT value FROM change_counters WHERE concern = 'store'",
                        &[],
                    )
                    .await
                    .map_err(super::failed("store counter"))?;
                Ok(row.map_or(0, |r| r.get::<_, i64>(0)))
            })
            .map_err(store_error)
    }
}

fn store_error(e: PgError) -> StoreError {
    match e {
        PgError::Statement(what) => StoreError::Statement(what),
        _ => StoreError::Unreachable,
    }
}

type Param = Box<dyn ToSql + Send + Sync>;

/// One message to the task holding a transaction.
enum Op {
    /// A statement; its rows (or its count of rows changed) come back.
    Run {
        what: &'static str,
        sql: &'static str,
        params: Vec<Param>,
        reply: std::sync::mpsc::SyncSender<Result<Answer, PgError>>,
    },
    /// The end: commit (or roll back), and say how it went.
    End {
        commit: bool,
        reply: std::sync::mpsc::SyncSender<Result<Answer, PgError>>,
    },
}

enum Answer {
    Rows(Vec<tokio_postgres::Row>),
    Changed(u64),
}

/// Holds one transaction open on a pooled connection and runs what comes,
/// until the end or until the caller goes (rolled back).
async fn hold(
    pool: deadpool_postgres::Pool,
    begin: &'static str,
    mut inbox: mpsc::UnboundedReceiver<Op>,
) {
    let mut client = match super::client(&pool).await {
        Ok(c) => Some(c),
        Err(e) => {
            // Every statement is told.
            while let Some(op) = inbox.recv().await {
                let (Op::Run { reply, .. } | Op::End { reply, .. }) = op;
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut broken: Option<PgError> = None;
    if let Some(c) = &client
        && let Err(e) = c.batch_execute(begin).await
    {
        broken = Some(super::failed("begin")(e));
    }
    while let Some(op) = inbox.recv().await {
        match op {
            Op::Run {
                what,
                sql,
                params,
                reply,
            } => {
                let answer = match (&broken, &client) {
                    (Some(e), _) => Err(e.clone()),
                    (None, Some(c)) => run(c, what, sql, &params).await,
                    (None, None) => Err(PgError::Unreachable),
                };
                if let Err(e) = &answer {
                    // PostgreSQL refuses the rest of a failed transaction.
                    broken = Some(e.clone());
                }
                let _ = reply.send(answer);
            }
            Op::End { commit, reply } => {
                let answer = match (&broken, &client) {
                    (None, Some(c)) => c
                        .batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })
                        .await
                        .map(|()| Answer::Changed(0))
                        .map_err(super::failed("commit")),
                    (Some(e), _) => Err(e.clone()),
                    (None, None) => Err(PgError::Unreachable),
                };
                if answer.is_err() || broken.is_some() {
                    discard(&mut client);
                }
                let _ = reply.send(answer);
                return;
            }
        }
    }
    // The caller went without ending: never hand the open transaction on.
    discard(&mut client);
}

/// Takes a connection out of the pool for good (its transaction is in an
/// unknown state); it closes when dropped.
fn discard(client: &mut Option<deadpool_postgres::Object>) {
    if let Some(c) = client.take() {
        drop(deadpool_postgres::Object::take(c));
    }
}

async fn run(
    c: &deadpool_postgres::Object,
    what: &'static str,
    sql: &'static str,
    params: &[Param],
) -> Result<Answer, PgError> {
    let stmt = c.prepare_cached(sql).await.map_err(super::failed(what))?;
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    if stmt.columns().is_empty() {
        c.execute(&stmt, &refs)
            .await
            .map(Answer::Changed)
            .map_err(super::failed(what))
    } else {
        c.query(&stmt, &refs)
            .await
            .map(Answer::Rows)
            .map_err(super::failed(what))
    }
}

/// The caller's end of a held transaction: [`Rows`], one statement at a
/// time.
struct Held {
    ops: mpsc::UnboundedSender<Op>,
    write: bool,
    limit: Duration,
}

impl Held {
    fn ask(
        &self,
        make: impl FnOnce(std::sync::mpsc::SyncSender<Result<Answer, PgError>>) -> Op,
    ) -> Result<Answer, StoreError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.ops
            .send(make(reply))
            .map_err(|_| StoreError::Unreachable)?;
        match answer.recv_timeout(self.limit) {
            Ok(a) => a.map_err(store_error),
            Err(_) => Err(StoreError::Unreachable),
        }
    }

    fn run(
        &self,
        what: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Answer, StoreError> {
        self.ask(|reply| Op::Run {
            what,
            sql,
            params,
            reply,
        })
    }

    fn rows(
        &self,
        what: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        match self.run(what, sql, params)? {
            Answer::Rows(rows) => Ok(rows),
            Answer::Changed(_) => Ok(Vec::new()),
        }
    }

    fn changed(
        &self,
        what: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<u64, StoreError> {
        match self.run(what, sql, params)? {
            Answer::Changed(n) => Ok(n),
            Answer::Rows(rows) => Ok(rows.len() as u64),
        }
    }

    fn bytes(
        &self,
        what: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .rows(what, sql, params)?
            .first()
            .map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn pairs(
        &self,
        what: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<KeyedRow>, StoreError> {
        Ok(self
            .rows(what, sql, params)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// In a write: holds `name` against other writers until the end.
    fn hold_name(&self, name: &str) -> Result<(), StoreError> {
        if self.write {
            self.rows(
                "meta lock",
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                vec![p(format!("store-meta:{name}"))],
            )?;
        }
        Ok(())
    }

    fn end(self, commit: bool) -> Result<(), StoreError> {
        self.ask(|reply| Op::End { commit, reply }).map(|_| ())
    }
}

fn p<T: ToSql + Send + Sync + 'static>(value: T) -> Param {
    Box::new(value)
}

fn r(row_ref: &RowRef) -> Param {
    Box::new(row_ref.to_vec())
}

fn b(bytes: &[u8]) -> Param {
    Box::new(bytes.to_vec())
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
        self.changed(
            "meta",
            "INSERT INTO store_meta (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            vec![p(name.to_owned()), b(value)],
        )
        .map(drop)
    }

    fn meta_insert_new(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        Ok(self.changed(
            "meta",
            "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![p(name.to_owned()), b(value)],
        )? > 0)
    }

    fn meta_delete(&self, name: &str) -> Result<(), StoreError> {
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
        self.changed(
            "record",
            "UPDATE store_records SET sealed_docs = $1 WHERE record_ref = $2",
            vec![b(sealed_docs), r(record)],
        )
        .map(drop)
    }

    fn record_forget(&self, record: &RowRef) -> Result<bool, StoreError> {
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
        self.changed(
            "document",
            "INSERT INTO store_documents (doc_ref, record_ref) VALUES ($1, $2)",
            vec![r(doc), r(record)],
        )
        .map(drop)
    }

    fn document_forget(&self, doc: &RowRef) -> Result<(), StoreError> {
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
