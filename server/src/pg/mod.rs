//! The server's PostgreSQL connection (ADR 0017): a pool of tokio-postgres
//! connections (deadpool-postgres) driven by a small runtime of its own,
//! numbered migrations, and a statement timeout on every connection.
//!
//! The server's storage interface is synchronous, called on the blocking
//! pool as SQLite is; [`Pg::run`] hands a query's future to this runtime
//! and waits for its answer, so the same interface serves both stores, from
//! the server's tasks and from the admin commands alike.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

mod held;
pub mod listen;
pub mod store;
pub mod written;

/// Schema migrations, applied in order, each once, under an advisory lock
/// (two nodes starting together do not both apply one).
const MIGRATIONS: &[&str] = &[
    include_str!("0001_directory.sql"),
    include_str!("0002_archive.sql"),
    include_str!("0003_store.sql"),
    include_str!("0004_written.sql"),
];

/// The advisory lock key the migrations take (any fixed number).
const MIGRATION_LOCK: i64 = 0x5c5_0017;

#[derive(Clone, Debug, thiserror::Error)]
pub enum PgError {
    #[error("the PostgreSQL address is not a valid postgres:// URL")]
    BadUrl,
    #[error("PostgreSQL could not be reached")]
    Unreachable,
    #[error("a PostgreSQL statement failed ({0})")]
    Statement(&'static str),
    #[error("the PostgreSQL schema is newer than this build knows")]
    SchemaTooNew,
    #[error("the PostgreSQL runtime could not start")]
    Runtime,
}

/// How the pool is sized and how long a statement may run.
#[derive(Clone)]
pub struct PgConfig {
    pub url: String,
    pub pool_size: usize,
    pub statement_timeout: Duration,
}

/// The URL may carry a password: never printed.
impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// How long a transaction may sit idle (a caller that stalled mid-way)
/// before PostgreSQL ends it and frees what it holds.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(30);

impl PgConfig {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// A pool of connections to one PostgreSQL database, migrated.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    runtime: Arc<OwnRuntime>,
    /// How long [`Pg::run`] waits for an answer at most (a statement's
    /// timeout and a margin for getting a connection).
    limit: Duration,
    /// A random name for this handle (this node), carried in the notices
    /// its writes send so that it can tell them from other nodes'.
    node: Arc<str>,
}

/// The pool's runtime, shut down in the background when the last handle
/// goes (dropping a runtime inside async code would panic).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(rt) = &self.0 {
            rt.spawn(future);
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").finish_non_exhaustive()
    }
}

impl Pg {
    /// Connects and brings the schema up to date.
    pub fn connect(config: &PgConfig) -> Result<Self, PgError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|_| PgError::BadUrl)?;
        // Added to whatever options the URL gives.
        let given = pg.get_options().unwrap_or_default().to_owned();
        pg.options(format!(
            "{given} -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            config.statement_timeout.as_millis(),
            IDLE_IN_TRANSACTION.as_millis()
        ));
        dead_peer_limits(&mut pg);
        pg.application_name("scr-server");
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("scr-pg")
            .enable_all()
            .build()
            .map_err(|_| PgError::Runtime)?;
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|_| PgError::BadUrl)?;
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|_| PgError::Runtime)?;
        let node: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let pg = Self {
            pool,
            runtime: Arc::new(OwnRuntime(Some(runtime))),
            limit: config.statement_timeout + Duration::from_secs(10),
            node: node.into(),
        };
        // Not `run`: waiting for another node's migration may take longer
        // than a statement.
        pg.spawn(|pool| async move { migrate(&pool).await })
            .recv()
            .map_err(|_| PgError::Runtime)??;
        Ok(pg)
    }

    /// This handle's name in the notices its writes send.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Starts `work` with the pool on this connection's runtime; its answer
    /// arrives on the receiver (for work that talks with its caller while
    /// it runs: a transaction held open across the caller's audit).
    pub fn spawn<T, F, Fut>(&self, work: F) -> std::sync::mpsc::Receiver<T>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = work(self.pool.clone());
        self.runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx
    }

    /// Runs `work` with the pool on this connection's runtime and waits for
    /// its answer (from any thread: a blocking-pool thread, an admin
    /// command, a test).
    pub fn run<T, F, Fut>(&self, work: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let limit = self.limit;
        let work = work(self.pool.clone());
        self.spawn(move |_| async move {
            tokio::time::timeout(limit, work)
                .await
                .unwrap_or(Err(PgError::Unreachable))
        })
        .recv()
        .map_err(|_| PgError::Runtime)?
    }
}

/// How a connection notices PostgreSQL gone silent (a dropped network
/// rather than a closed socket): TCP keepalives after 10 s idle, and data
/// unacknowledged for 30 s ends it. Without them a blocked call or the
/// listener would wait for the kernel's defaults (minutes to hours).
pub(crate) fn dead_peer_limits(config: &mut tokio_postgres::Config) {
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
}

/// A pooled connection, or `Unreachable`.
pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, PgError> {
    pool.get().await.map_err(|_| PgError::Unreachable)
}

/// Maps a driver error to a typed one naming the operation, never a value.
pub fn failed(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    move |e| {
        if e.is_closed() {
            PgError::Unreachable
        } else {
            PgError::Statement(what)
        }
    }
}

async fn migrate(pool: &Pool) -> Result<(), PgError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(failed("migration begin"))?;
    // Another node may be migrating: wait for it longer than a statement.
    tx.batch_execute("SET LOCAL statement_timeout = '120s'")
        .await
        .map_err(failed("migration timeout"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed("migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(failed("migration table"))?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(failed("migration version"))?
        .get(0);
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if applied > known {
        return Err(PgError::SchemaTooNew);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(failed("migration"))?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(failed("migration record"))?;
    }
    tx.commit().await.map_err(failed("migration commit"))
}
