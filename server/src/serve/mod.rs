//! `scr-server serve`: a samod repo over the encrypted SQLite store, devices
//! connecting over the Noise channel, a health and metrics endpoint, and a
//! graceful shutdown.
//!
//! One concern a file: `connection` (accept, handshake, enrollment),
//! `routes` (each purpose a device connects for), `sessions` (sync
//! sessions that outlive a connection), `metrics` and `health` (the HTTP
//! endpoint), `tasks` (background work), `identity` (the server's keys),
//! `error`.

mod connection;
mod error;
pub mod health;
pub mod identity;
pub mod limits;
mod metrics;
mod routes;
pub mod sessions;
pub mod state;
pub mod store_health;
mod tasks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use scr_core::Store;
use scr_core::channel::{self, hex_key};
use scr_core::store::SamodStorage;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::directory::Directory;
use identity::ServerIdentity;

pub use error::ServeError;
pub use metrics::{Gauges, MAX_SESSIONS_PER_DEVICE, Metrics};

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub health: SocketAddr,
    /// A device whose oldest unsent audit event is older than this counts
    /// as overdue in the metrics.
    pub audit_overdue_after: std::time::Duration,
    /// The end of the transition for apps of record layout 1, which record
    /// permission to view in governance (`push_rules::PushLimits`).
    pub legacy_permissions_until_ms: i64,
    /// How long a grant issued at login lasts (at most a shift,
    /// `scr_core::grant::MAX_GRANT_MS`, which is the default).
    pub grant_lifetime: std::time::Duration,
    /// How much unauthenticated peers, each address and each device may
    /// make the server work.
    pub limits: limits::ConnectionLimits,
    /// Where the state is kept: the data directory's files, or PostgreSQL
    /// shared with other nodes.
    pub store: crate::serve::state::StoreAt,
}

impl ServeConfig {
    pub const DEFAULT_AUDIT_OVERDUE: std::time::Duration =
        std::time::Duration::from_secs(24 * 3600);
    pub const DEFAULT_GRANT_LIFETIME: std::time::Duration =
        std::time::Duration::from_millis(scr_core::grant::MAX_GRANT_MS as u64);

    /// Both ports chosen by the OS on loopback (tests, benches, the demo).
    pub fn on_loopback(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            health: SocketAddr::from(([127, 0, 0, 1], 0)),
            audit_overdue_after: Self::DEFAULT_AUDIT_OVERDUE,
            legacy_permissions_until_ms: scr_core::push_rules::LEGACY_PERMISSIONS_UNTIL_MS,
            grant_lifetime: Self::DEFAULT_GRANT_LIFETIME,
            limits: limits::ConnectionLimits::default(),
            store: crate::serve::state::StoreAt::Files,
        }
    }
}

/// A running server. Drop does not stop it: call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub sync_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// The static key devices pin at enrollment.
    pub server_key: [u8; 32],
    pub directory: Arc<Directory>,
    pub metrics: Arc<Metrics>,
    /// Audit events uploaded by devices, and privacy officers' alerts.
    pub archive: Arc<crate::archive::Archive>,
    repo: samod::Repo,
    stop: watch::Sender<bool>,
    /// Stops the accept loop alone (the first step of a shutdown).
    stop_accepting: watch::Sender<bool>,
    sessions: Arc<sessions::Sessions>,
    /// Every connection's task, so a shutdown can wait for those in flight.
    connections: tokio_util::task::TaskTracker,
    /// The accept loop: it has returned before the wait for connections.
    accepting: JoinHandle<()>,
    sent: crate::sent_log::SentLog,
    /// samod's storage: what the store refused is stored at the end.
    storage: SamodStorage,
    tasks: Vec<JoinHandle<()>>,
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Sync sessions told to go elsewhere.
    pub sessions_ended: usize,
    /// Whether every connection in flight finished within the time given
    /// (if not, the rest were cut: their devices send again).
    pub in_time: bool,
}

impl RunningServer {
    /// How long [`RunningServer::shutdown`] waits for connections in flight
    /// (Kubernetes allows 30 s between SIGTERM and SIGKILL by default).
    pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

    pub fn repo(&self) -> &samod::Repo {
        &self.repo
    }

    /// Shuts down gracefully within [`RunningServer::DRAIN`]: see
    /// [`RunningServer::shutdown_within`].
    pub async fn shutdown(self) -> Drained {
        self.shutdown_within(Self::DRAIN).await
    }

    /// Shuts down gracefully: `/health` says not ready; no connection is
    /// accepted; every sync session ends, telling its device (it opens a
    /// fresh one, wherever its address leads now); connections in flight
    /// (an audit upload being archived and acknowledged, a login, a
    /// merge) finish, for `drain` at most; then samod stores what it
    /// holds (and what the store refused earlier is tried once more) and
    /// the background tasks stop.
    pub async fn shutdown_within(self, drain: std::time::Duration) -> Drained {
        self.metrics
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.stop_accepting.send(true);
        // Returned: no connection is taken after this, so none escapes the
        // wait below.
        let _ = self.accepting.await;
        // One budget for the whole drain (Kubernetes kills at 30 s).
        let deadline = tokio::time::Instant::now() + drain;
        let sessions_ended = self.sessions.close_all();
        self.connections.close();
        let in_time = tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_ok();
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.repo.stop().await;
        // What the store refused, a last time (lost with the process).
        if self.storage.unsaved() > 0 {
            let storage = self.storage.clone();
            let _ = tokio::task::spawn_blocking(move || storage.save_unsaved()).await;
            if self.storage.unsaved() > 0 {
                tracing::error!(
                    chunks = self.storage.unsaved(),
                    "stopping with chunks the store refused: their devices send them again"
                );
            }
        }
        // What was sent to devices up to the last moment is in the log (a
        // moment more if the drain used up its time).
        let flush_by =
            deadline.max(tokio::time::Instant::now() + std::time::Duration::from_secs(2));
        let _ = tokio::time::timeout_at(flush_by, self.sent.flush()).await;
        Drained {
            sessions_ended,
            in_time,
        }
    }
}

/// Opens (creating) the data directory and starts serving.
pub async fn start(config: ServeConfig) -> Result<RunningServer, ServeError> {
    let node = crate::serve::state::open(&config.data_dir, &config.store)?;
    let store = node.store;
    let identity = ServerIdentity::load_or_create(&store)?;
    let archive = Arc::new(node.archive);
    let directory = Arc::new(node.directory);
    // Other nodes' writes, heard from the start (before samod loads any
    // document, so no write is missed between).
    let others = node
        .pg
        .as_ref()
        .map(|(pg, config)| crate::pg::listen::listen(pg, config));
    let storage = SamodStorage::new(store.clone());
    let (catalogue, to_notify) = crate::catalogue::Catalogue::new();
    let told = catalogue.clone();
    storage.on_write(Arc::new(move |doc: &str| told.written(doc)));
    crate::layout::upgrade_records(&store)?;
    let (policy, epoch) = crate::policy::AccessPolicy::new(
        store.clone(),
        directory.clone(),
        config.legacy_permissions_until_ms,
    );
    let policy_handle = policy.clone();
    let push_policy = policy.clone();
    let repo = samod::Repo::build_tokio()
        .with_storage(storage.clone())
        .with_share_policy(policy.clone())
        .with_peer_id(samod::PeerId::from(hex_key(&identity.noise.public())))
        .load()
        .await;
    let acceptor = repo
        .make_acceptor(samod::Url::parse("ws://scr-server/sync").map_err(|_| ServeError::Stopped)?)
        .map_err(|_| ServeError::Stopped)?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Io("bind sync port", e.kind()))?;
    let sync_addr = listener
        .local_addr()
        .map_err(|e| ServeError::Io("sync port", e.kind()))?;
    let health_listener = TcpListener::bind(config.health)
        .await
        .map_err(|e| ServeError::Io("bind health port", e.kind()))?;
    let health_addr = health_listener
        .local_addr()
        .map_err(|e| ServeError::Io("health port", e.kind()))?;

    let (stop, stopped) = watch::channel(false);
    let (stop_accepting, accepting_stopped) = watch::channel(false);
    let sessions: Arc<sessions::Sessions> = Arc::default();
    let connections = tokio_util::task::TaskTracker::new();
    let metrics = Arc::new(Metrics::default());
    let server_key = identity.noise.public();

    let holdings = crate::holdings::HoldingsWriter::new(
        repo.clone(),
        store.clone(),
        policy_handle,
        directory.clone(),
    );
    let watcher = tokio::spawn(tasks::watch_for_changes(
        stopped.clone(),
        store.clone(),
        directory.clone(),
        storage.clone(),
        epoch.clone(),
        (holdings.clone(), repo.clone(), catalogue.clone()),
        others.is_some(),
    ));
    let follower = others
        .as_ref()
        .and_then(|o| o.take_documents())
        .map(|notices| {
            tokio::spawn(tasks::follow_other_nodes(
                stopped.clone(),
                notices,
                (store.clone(), storage.clone(), repo.clone()),
                catalogue.clone(),
                epoch.clone(),
            ))
        });
    let notice_task = tokio::spawn(tasks::notify_watchers(
        stopped.clone(),
        to_notify,
        holdings.clone(),
    ));
    let trail_task = tokio::spawn(tasks::archive_own_trail(
        stopped.clone(),
        store.clone(),
        archive.clone(),
        server_key,
    ));
    let audit_store = store.clone();
    let sent = crate::sent_log::SentLog::start(audit_store.clone(), archive.clone());
    let sent_log = sent.clone();
    let shared = Arc::new(Shared {
        identity,
        directory: directory.clone(),
        metrics: metrics.clone(),
        store,
        acceptor,
        repo: repo.clone(),
        epoch,
        holdings,
        catalogue: crate::catalogue::CatalogueDesk {
            catalogue,
            policy: push_policy.clone(),
            store: audit_store.clone(),
            sent: sent.clone(),
        },
        policy: push_policy,
        sessions: sessions.clone(),
        archive: archive.clone(),
        waiting: crate::guard::added::Waiting::default(),
        audit_budget: Arc::default(),
        grant_lifetime_ms: i64::try_from(config.grant_lifetime.as_millis()).unwrap_or(i64::MAX),
        logins_in_progress: std::sync::Mutex::default(),
        gate: Arc::new(limits::Gatekeeper::new(config.limits.clone())),
        sent,
        login_slots: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ),
        store_health: store_health::StoreHealth::default(),
    });
    let store_health = shared.store_health.clone();
    let health_watch = {
        let ending = sessions.clone();
        tokio::spawn(store_health::watch(
            stopped.clone(),
            (shared.store.clone(), storage.clone()),
            shared.store_health.clone(),
            move || {
                ending.say_goodbye_to_all();
            },
        ))
    };
    let sync_task = tokio::spawn(connection::accept_loop(
        listener,
        accepting_stopped,
        shared,
        connections.clone(),
    ));
    let health_task = tokio::spawn(health::serve(
        health_listener,
        stopped,
        health::Sources {
            directory: directory.clone(),
            metrics: metrics.clone(),
            storage: storage.clone(),
            store: audit_store,
            archive: archive.clone(),
            overdue_after: config.audit_overdue_after,
            store_health,
        },
    ));
    tracing::info!(%sync_addr, %health_addr, server_key = %hex_key(&server_key), "serving");
    Ok(RunningServer {
        sync_addr,
        health_addr,
        server_key,
        directory,
        metrics,
        archive,
        repo,
        stop,
        stop_accepting,
        sessions,
        connections,
        accepting: sync_task,
        sent: sent_log,
        storage,
        tasks: [health_task, watcher, trail_task, notice_task, health_watch]
            .into_iter()
            .chain(follower)
            .collect(),
    })
}

/// What every connection task needs.
struct Shared {
    identity: ServerIdentity,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    store: Store,
    acceptor: samod::AcceptorHandle,
    /// The documents as samod holds them, for the push check.
    repo: samod::Repo,
    epoch: crate::policy::Epoch,
    holdings: crate::holdings::HoldingsWriter,
    /// The catalogue asks on sync sessions (ADR 0016).
    catalogue: crate::catalogue::CatalogueDesk,
    policy: crate::policy::AccessPolicy,
    sessions: Arc<crate::serve::sessions::Sessions>,
    archive: Arc<crate::archive::Archive>,
    /// Which devices left changes waiting for a dependency where.
    waiting: crate::guard::added::Waiting,
    /// How many audit events each device may still upload.
    audit_budget: Arc<crate::archive::AuditBudget>,
    /// How long a grant lasts (the login desk clamps it to a shift).
    grant_lifetime_ms: i64,
    /// Devices with a login queued or being checked: one each, so one
    /// device cannot fill the queue for Argon2 ahead of everyone else.
    logins_in_progress: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Who may connect and handshake how much.
    gate: Arc<limits::Gatekeeper>,
    /// The log of which documents went to which device.
    sent: crate::sent_log::SentLog,
    /// Whether the store answers: while it does not, no sync session
    /// opens and no sync message reaches samod.
    store_health: store_health::StoreHealth,
    /// One Argon2id check per core at a time. Each takes 19 MiB; a burst
    /// of logins (a shift starting) otherwise ran hundreds at once on the
    /// blocking pool: measured 853 MB resident for 40 tablets logging in
    /// together, and every login slowed alike.
    login_slots: tokio::sync::Semaphore,
}

/// A device's authenticated channel on this server.
type Channel = channel::NoiseChannel<tokio_tungstenite::WebSocketStream<TcpStream>>;
