//! One PostgreSQL transaction held open for a synchronous caller (ADR
//! 0017): a task on the pool's runtime begins it, runs the caller's
//! statements one by one as they come, and commits or rolls back at the
//! end. A connection that failed mid-way never returns to the pool. The
//! sealed store's rows (`pg::store`) run on it.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use scr_core::StoreError;
use scr_core::store::rows::{KeyedRow, RowRef};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use super::PgError;

pub(super) fn store_error(e: PgError) -> StoreError {
    match e {
        PgError::Statement(what) => StoreError::Statement(what),
        _ => StoreError::Unreachable,
    }
}

pub(super) type Param = Box<dyn ToSql + Send + Sync>;

/// One message to the task holding a transaction.
pub(super) enum Op {
    /// A statement; its rows (or its count of rows changed) come back.
    Run {
        what: &'static str,
        sql: &'static str,
        params: Vec<Param>,
        reply: std::sync::mpsc::SyncSender<Result<Answer, PgError>>,
    },
    /// The end: `Some(sql)`, run it (ending in `COMMIT`); `None`, roll
    /// back. Say how it went.
    End {
        finish: Option<String>,
        reply: std::sync::mpsc::SyncSender<Result<Answer, PgError>>,
    },
}

pub(super) enum Answer {
    Rows(Vec<tokio_postgres::Row>),
    Changed(u64),
}

/// Holds one transaction open on a pooled connection and runs what comes,
/// until the end or until the caller goes (rolled back). `begin: None`:
/// no transaction (a read: each statement sees what is committed, as on
/// SQLite), and the end only hands the connection back.
pub(super) async fn hold(
    pool: deadpool_postgres::Pool,
    begin: Option<&'static str>,
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
    if let (Some(c), Some(begin)) = (&client, begin)
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
            Op::End { finish, reply } => {
                let answer = match (&broken, &client) {
                    (None, Some(_)) if begin.is_none() => Ok(Answer::Changed(0)),
                    (None, Some(c)) => c
                        .batch_execute(finish.as_deref().unwrap_or("ROLLBACK"))
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
pub(super) struct Held {
    pub(super) ops: mpsc::UnboundedSender<Op>,
    pub(super) write: bool,
    pub(super) limit: Duration,
    /// Something other nodes' share decisions read was written.
    pub(super) bump: Cell<bool>,
    /// Documents whose chunks were written.
    pub(super) docs: RefCell<Vec<RowRef>>,
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

    pub(super) fn rows(
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

    pub(super) fn changed(
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

    pub(super) fn bytes(
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

    pub(super) fn pairs(
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
    pub(super) fn hold_name(&self, name: &str) -> Result<(), StoreError> {
        if self.write {
            self.rows(
                "meta lock",
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                vec![p(format!("store-meta:{name}"))],
            )?;
        }
        Ok(())
    }

    pub(super) fn end(self, finish: Option<String>) -> Result<(), StoreError> {
        self.ask(|reply| Op::End { finish, reply }).map(|_| ())
    }

    /// Tells other nodes what they must see, and commits, in one round
    /// trip (the notices go out with the commit, or not at all).
    pub(super) fn commit(self, node: &str) -> Result<(), StoreError> {
        let mut sql = String::new();
        if self.bump.get() {
            sql.push_str(
                "UPDATE change_counters SET seq = seq + 1 WHERE concern = 'store'; \
                 SELECT pg_notify('scr_changes', 'store'); ",
            );
        }
        let mut docs = self.docs.take();
        docs.sort_unstable();
        docs.dedup();
        if !docs.is_empty() {
            sql.push_str(&super::written::record_sql(node, &docs));
        }
        sql.push_str("COMMIT");
        self.end(Some(sql))
    }

    /// A named value other nodes' share decisions read changed. Not the
    /// audit chain's ends, nor what each node reads afresh when it needs
    /// it (an actor's owner, a device's issued grants, its refused
    /// pushes): a bump makes every other node make every decision again.
    pub(super) fn named_changed(&self, name: &str) {
        const NOT_SHARED: [&str; 4] = [
            "audit-",
            "secret:actor-owner:",
            "secret:grants-issued:",
            "secret:push-refusals:",
        ];
        if !NOT_SHARED.iter().any(|p| name.starts_with(p)) {
            self.changes_shared();
        }
    }

    pub(super) fn changes_shared(&self) {
        self.bump.set(true);
    }

    pub(super) fn changes_document(&self, doc: &RowRef) {
        self.docs.borrow_mut().push(*doc);
    }
}

pub(super) fn p<T: ToSql + Send + Sync + 'static>(value: T) -> Param {
    Box::new(value)
}

pub(super) fn r(row_ref: &RowRef) -> Param {
    Box::new(row_ref.to_vec())
}

pub(super) fn b(bytes: &[u8]) -> Param {
    Box::new(bytes.to_vec())
}
