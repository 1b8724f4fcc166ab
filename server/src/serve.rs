//! `scr-server serve`: a samod repo over the encrypted SQLite store, devices
//! connecting over the Noise channel, a health and metrics endpoint, and a
//! graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use scr_core::Store;
use scr_core::channel::{
    self, Hello, LoginRequest, LoginResponse, Purpose, from_hex, hex_key, to_hex,
};
use scr_core::store::{SamodStorage, StoreError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::directory::{Directory, DirectoryError};
use crate::health;
use crate::identity::{ServerIdentity, key_provider};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}: {1}")]
    Io(&'static str, std::io::ErrorKind),
    #[error("server.key must hold exactly 32 bytes")]
    BadKeyFile,
    #[error("server.db exists but server.key is missing: restore the key file")]
    MissingKeyFile,
    #[error("the system random number generator failed")]
    Random,
    #[error("server store: {0}")]
    Store(#[from] StoreError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("audit archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("the sync repo stopped")]
    Stopped,
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub health: SocketAddr,
    /// A device whose oldest unsent audit event is older than this counts
    /// as overdue in the metrics.
    pub audit_overdue_after: std::time::Duration,
}

impl ServeConfig {
    pub const DEFAULT_AUDIT_OVERDUE: std::time::Duration =
        std::time::Duration::from_secs(24 * 3600);

    /// Both ports chosen by the OS on loopback (tests, benches, the demo).
    pub fn on_loopback(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            health: SocketAddr::from(([127, 0, 0, 1], 0)),
            audit_overdue_after: Self::DEFAULT_AUDIT_OVERDUE,
        }
    }
}

/// A device may hold this many sync sessions at once; more are refused.
/// A new session ends the device's older ones (see `Sessions::end_all_of`),
/// so this is a backstop against races, not the usual limit.
pub const MAX_SESSIONS_PER_DEVICE: usize = 4;

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub handshakes_ok: AtomicU64,
    pub handshakes_refused: AtomicU64,
    pub enrollments: AtomicU64,
    pub logins: AtomicU64,
    pub sync_sessions: AtomicU64,
    pub sessions_refused: AtomicU64,
    /// Sync sessions a device resumed over a new connection (ADR 0005).
    pub sessions_resumed: AtomicU64,
    /// Audit events devices uploaded and the archive stored (duplicates
    /// not counted), and those stored flagged.
    pub audit_archived: AtomicU64,
    pub audit_flagged: AtomicU64,
    /// Pushes to documents the device may not write (not merged).
    pub pushes_refused: Arc<AtomicU64>,
    /// Messages dropped because a session named more documents, or sent
    /// more requests, than any caseload needs (see `flood`).
    pub flood_dropped: Arc<AtomicU64>,
    pub traffic: Arc<channel::Traffic>,
    open: std::sync::Mutex<std::collections::HashMap<[u8; 32], usize>>,
}

/// What `/metrics` reads from elsewhere.
pub struct Gauges {
    pub devices: i64,
    pub storage_failures: u64,
    pub audit_backlog: u64,
    /// Devices whose last upload left an event older than the threshold.
    pub audit_devices_overdue: u64,
}

impl Metrics {
    pub fn open_sessions(&self) -> usize {
        self.open.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    /// Counts a new sync session for `device`, or refuses it at the cap.
    fn open_session(self: &Arc<Self>, device: [u8; 32]) -> Option<SessionGuard> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(device).or_insert(0);
        if *n >= MAX_SESSIONS_PER_DEVICE {
            return None;
        }
        *n += 1;
        self.sync_sessions.fetch_add(1, Ordering::Relaxed);
        Some(SessionGuard {
            metrics: self.clone(),
            device,
        })
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE scr_connections_total counter\nscr_connections_total {}\n\
             # TYPE scr_handshakes_ok_total counter\nscr_handshakes_ok_total {}\n\
             # TYPE scr_handshakes_refused_total counter\nscr_handshakes_refused_total {}\n\
             # TYPE scr_enrollments_total counter\nscr_enrollments_total {}\n\
             # TYPE scr_logins_total counter\nscr_logins_total {}\n\
             # TYPE scr_sync_sessions_total counter\nscr_sync_sessions_total {}\n\
             # TYPE scr_sync_sessions_open gauge\nscr_sync_sessions_open {}\n\
             # TYPE scr_sync_sessions_refused_total counter\nscr_sync_sessions_refused_total {}\n\
             # TYPE scr_sync_sessions_resumed_total counter\nscr_sync_sessions_resumed_total {}\n\
             # TYPE scr_sync_pushes_refused_total counter\nscr_sync_pushes_refused_total {}\n\
             # TYPE scr_sync_flood_dropped_total counter\nscr_sync_flood_dropped_total {}\n\
             # TYPE scr_sync_bytes_received_total counter\nscr_sync_bytes_received_total {}\n\
             # TYPE scr_sync_bytes_sent_total counter\nscr_sync_bytes_sent_total {}\n\
             # TYPE scr_enrolled_devices gauge\nscr_enrolled_devices {}\n\
             # TYPE scr_storage_failures_total counter\nscr_storage_failures_total {}\n\
             # TYPE scr_audit_backlog gauge\nscr_audit_backlog {}\n\
             # TYPE scr_audit_events_archived_total counter\nscr_audit_events_archived_total {}\n\
             # TYPE scr_audit_events_flagged_total counter\nscr_audit_events_flagged_total {}\n\
             # TYPE scr_audit_devices_overdue gauge\nscr_audit_devices_overdue {}\n",
            g(&self.connections),
            g(&self.handshakes_ok),
            g(&self.handshakes_refused),
            g(&self.enrollments),
            g(&self.logins),
            g(&self.sync_sessions),
            self.open_sessions(),
            g(&self.sessions_refused),
            g(&self.sessions_resumed),
            g(&self.pushes_refused),
            g(&self.flood_dropped),
            g(&self.traffic.received),
            g(&self.traffic.sent),
            gauges.devices,
            gauges.storage_failures,
            gauges.audit_backlog,
            g(&self.audit_archived),
            g(&self.audit_flagged),
            gauges.audit_devices_overdue,
        )
    }
}

/// Held by a sync session's transport: the session counts as open (and
/// against its device's cap) until samod drops it.
struct SessionGuard {
    metrics: Arc<Metrics>,
    device: [u8; 32],
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.metrics.open.lock()
            && let Some(n) = open.get_mut(&self.device)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.device);
            }
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
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    pub fn repo(&self) -> &samod::Repo {
        &self.repo
    }

    /// Stops accepting, lets samod flush, and returns when done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.repo.stop().await;
    }
}

/// Opens (creating) the data directory and starts serving.
pub async fn start(config: ServeConfig) -> Result<RunningServer, ServeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServeError::Io("data directory", e.kind()))?;
    let keys = key_provider(&config.data_dir)?;
    let store = Store::open(config.data_dir.join("server.db"), &keys)?;
    let identity = ServerIdentity::load_or_create(&store)?;
    let archive = Arc::new(crate::archive::Archive::open(
        &config.data_dir.join("audit.db"),
        &crate::identity::archive_root(&store)?,
    )?);
    let directory = Arc::new(Directory::open(&config.data_dir.join("directory.db"))?);
    let storage = SamodStorage::new(store.clone());
    let (policy, epoch) = crate::policy::AccessPolicy::new(store.clone(), directory.clone());
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
    let metrics = Arc::new(Metrics::default());
    let server_key = identity.noise.public();

    let holdings = crate::holdings::HoldingsWriter::new(
        repo.clone(),
        store.clone(),
        policy_handle,
        directory.clone(),
    );
    let watcher = tokio::spawn(watch_for_changes(
        stopped.clone(),
        store.clone(),
        directory.clone(),
        storage.clone(),
        epoch.clone(),
        holdings.clone(),
        repo.clone(),
    ));
    let trail_task = tokio::spawn(archive_own_trail(
        stopped.clone(),
        store.clone(),
        archive.clone(),
        server_key,
    ));
    let audit_store = store.clone();
    let shared = Arc::new(Shared {
        identity,
        directory: directory.clone(),
        metrics: metrics.clone(),
        store,
        acceptor,
        epoch,
        holdings,
        policy: push_policy,
        sessions: Arc::default(),
        archive: archive.clone(),
        login_slots: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ),
    });
    let sync_task = tokio::spawn(accept_loop(listener, stopped.clone(), shared));
    let health_task = tokio::spawn(health::serve(
        health_listener,
        stopped,
        health::Sources {
            directory: directory.clone(),
            metrics: metrics.clone(),
            storage,
            store: audit_store,
            archive: archive.clone(),
            overdue_after: config.audit_overdue_after,
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
        tasks: vec![sync_task, health_task, watcher, trail_task],
    })
}

/// What every connection task needs.
struct Shared {
    identity: ServerIdentity,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    store: Store,
    acceptor: samod::AcceptorHandle,
    epoch: crate::policy::Epoch,
    holdings: crate::holdings::HoldingsWriter,
    policy: crate::policy::AccessPolicy,
    sessions: Arc<crate::sessions::Sessions>,
    archive: Arc<crate::archive::Archive>,
    /// One Argon2id check per core at a time. Each takes 19 MiB; a burst
    /// of logins (a shift starting) otherwise ran hundreds at once on the
    /// blocking pool: measured 853 MB resident for 40 tablets logging in
    /// together, and every login slowed alike.
    login_slots: tokio::sync::Semaphore,
}

/// Once a second, asks every share decision to be made again if anything it
/// depends on changed: admin commands (another process's commits show in
/// SQLite's `data_version`) or governance documents written by sync (a
/// patient's choices). Other documents written by sync change no decision:
/// re-deciding every (document, device) pair on each of them was what first
/// broke under load (40 tablets syncing kept the server busy re-deciding).
async fn watch_for_changes(
    mut stopped: watch::Receiver<bool>,
    store: Store,
    directory: Arc<Directory>,
    storage: SamodStorage,
    epoch: crate::policy::Epoch,
    holdings: crate::holdings::HoldingsWriter,
    repo: samod::Repo,
) {
    // SQLite reads behind the store's lock: off the runtime.
    let seen = |s: &Store, d: &Arc<Directory>, st: &SamodStorage| {
        let (s, d, written) = (s.clone(), d.clone(), st.take_written());
        async move {
            tokio::task::spawn_blocking(move || {
                let governance = written.iter().any(|doc| {
                    matches!(
                        s.owner_of_document(doc),
                        Ok(Some((_, scr_core::record::Compartment::Governance)))
                    )
                });
                ((s.data_version().ok(), d.data_version().ok()), governance)
            })
            .await
            .unwrap_or(((None, None), true))
        }
    };
    let (mut last, _) = seen(&store, &directory, &storage).await;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tick.tick() => {
                let (now, governance_written) = seen(&store, &directory, &storage).await;
                ticks += 1;
                // Also once a minute regardless, so grants that expire on a
                // quiet server stop sharing within a minute.
                if now != last || governance_written || ticks.is_multiple_of(60) {
                    // Decide again at once (a revocation must not wait for
                    // the refresh below)...
                    epoch.bump();
                    // ...then, if another process (an admin command) wrote
                    // documents, merge them into samod's copies in memory
                    // and decide again with them.
                    if now.0 != last.0 {
                        let n = crate::outside_writes::refresh_from_store(&repo, &store, &storage).await;
                        if n > 0 {
                            tracing::info!(documents = n, "documents refreshed from the store");
                            epoch.bump();
                        }
                    }
                    last = now;
                    // Rewrites only lists that changed, so this settles: the
                    // tick after a rewrite finds nothing new to write.
                    holdings.refresh_all().await;
                }
            }
        }
    }
}

/// Once a second, copies the server's own new audit events (logins, admin
/// commands from other processes, encounters) into the archive, where the
/// patient's access log and privacy officers' alerts read them.
async fn archive_own_trail(
    mut stopped: watch::Receiver<bool>,
    store: Store,
    archive: Arc<crate::archive::Archive>,
    server_key: [u8; 32],
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tick.tick() => {
                let (store, archive) = (store.clone(), archive.clone());
                let taken = tokio::task::spawn_blocking(move || {
                    archive.take_server_trail(&store, &server_key, scr_core::clock::now_ms())
                })
                .await;
                if !matches!(taken, Ok(Ok(_))) {
                    tracing::warn!("the server's own audit trail could not be archived");
                }
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else {
                    // Out of descriptors or similar: back off, do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
                keep_alive(&tcp);
                let shared = shared.clone();
                tokio::spawn(async move {
                    match handshake(tcp, &shared).await {
                        Ok((channel, Hello { purpose: Purpose::Sync, resume, .. })) => {
                            shared.metrics.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                            match resume {
                                None => open_sync_session(channel, &shared, peer).await,
                                Some(resume) => resume_sync_session(channel, &shared, &resume).await,
                            }
                        }
                        Ok((channel, Hello { purpose: Purpose::Holdings, .. })) => {
                            shared.metrics.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                            if let Err(reason) = serve_holdings(channel, &shared).await {
                                tracing::info!(%peer, %reason, "holdings request failed");
                            }
                        }
                        Ok((channel, Hello { purpose: Purpose::Audit, .. })) => {
                            shared.metrics.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                            let (directory, policy) = (shared.directory.clone(), shared.policy.clone());
                            let device = channel.remote_static();
                            // A lost tablet, or a tablet holding a revoked user's grant.
                            let revoked = tokio::task::spawn_blocking(move || {
                                directory.device(&device).ok().flatten().is_some_and(|d| d.revoked)
                                    || policy.holds_revoked_users_grant(&device)
                            })
                            .await
                            .unwrap_or(false);
                            match crate::archive::serve_upload(channel, shared.archive.clone(), revoked).await {
                                Ok(ack) => {
                                    shared.metrics.audit_archived.fetch_add(u64::from(ack.stored), Ordering::Relaxed);
                                    shared.metrics.audit_flagged.fetch_add(u64::from(ack.flagged), Ordering::Relaxed);
                                    if ack.flagged > 0 {
                                        tracing::warn!(%peer, flagged = ack.flagged, "uploaded audit events stored flagged for review");
                                    }
                                }
                                Err(reason) => tracing::info!(%peer, %reason, "audit upload failed"),
                            }
                        }
                        Ok((channel, Hello { purpose: Purpose::AccessLog, .. })) => {
                            shared.metrics.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                            let sources = crate::access_log::AccessLogSources {
                                policy: shared.policy.clone(),
                                archive: shared.archive.clone(),
                                store: shared.store.clone(),
                                directory: shared.directory.clone(),
                                server_key: shared.identity.noise.public(),
                            };
                            if let Err(reason) = crate::access_log::serve_access_log(channel, sources).await {
                                tracing::info!(%peer, %reason, "access log request failed");
                            }
                        }
                        Ok((mut channel, Hello { purpose: Purpose::Encounter, .. })) => {
                            shared.metrics.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                            let device = channel.remote_static();
                            let desk = crate::encounters::EncounterDesk {
                                store: shared.store.clone(),
                                policy: shared.policy.clone(),
                                archive: shared.archive.clone(),
                                signer_seed: shared.identity.signer_seed(),
                                server_key: shared.identity.noise.public(),
                            };
                            match crate::encounters::serve_encounter(&mut channel, desk).await {
                                // The new grant decides what the device holds.
                                Ok(true) => {
                                    shared.epoch.bump_device(&device);
                                    shared.holdings.refresh(device).await;
                                }
                                Ok(false) => {}
                                Err(reason) => tracing::info!(%peer, %reason, "encounter request failed"),
                            }
                        }
                        Ok((channel, Hello { purpose: Purpose::Login, .. })) => {
                            shared.metrics.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                            if let Err(reason) = serve_login(channel, &shared).await {
                                tracing::info!(%peer, %reason, "login exchange failed");
                            }
                        }
                        Err(reason) => {
                            shared.metrics.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                            // The address and the reason only: no keys, no payload.
                            tracing::info!(%peer, %reason, "connection refused");
                        }
                    }
                });
            }
        }
    }
}

/// TCP keepalive and a user timeout, so a device that vanished without
/// closing (a tablet out of signal) frees its session within about 90
/// seconds instead of holding one of its few session slots for minutes or
/// hours.
fn keep_alive(tcp: &TcpStream) {
    let params = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(3);
    let socket = socket2::SockRef::from(tcp);
    // Keepalive covers an idle connection; a user timeout covers one that
    // vanished with data unacknowledged (otherwise ~15 minutes of retries).
    if socket.set_tcp_keepalive(&params).is_err()
        || socket
            .set_tcp_user_timeout(Some(std::time::Duration::from_secs(90)))
            .is_err()
    {
        tracing::warn!("could not set TCP keepalive on a connection");
    }
}

type Channel = channel::NoiseChannel<tokio_tungstenite::WebSocketStream<TcpStream>>;

/// WebSocket upgrade (frames bounded to one Noise message), then the Noise
/// handshake admitting enrolled devices or enrolling a new one with the
/// token in its hello.
async fn handshake(tcp: TcpStream, shared: &Shared) -> Result<(Channel, Hello), String> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(70 * 1024))
        .max_frame_size(Some(70 * 1024));
    let ws = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_tungstenite::accept_async_with_config(tcp, Some(config)),
    )
    .await
    .map_err(|_| "websocket upgrade timed out".to_owned())?
    .map_err(|e| format!("websocket upgrade: {e}"))?;
    let now = scr_core::clock::now_ms();
    let hello = Arc::new(std::sync::Mutex::new(None));
    let (directory, store, metrics) = (
        shared.directory.clone(),
        shared.store.clone(),
        shared.metrics.clone(),
    );
    let seen_hello = hello.clone();
    // SQLite and hashing: off the async runtime.
    let admit = move |key: [u8; 32], payload: Vec<u8>| async move {
        tokio::task::spawn_blocking(move || {
            let (admitted, hello) = admit(&directory, &store, &metrics, &key, &payload, now);
            if let Ok(mut h) = seen_hello.lock() {
                *h = hello;
            }
            admitted
        })
        .await
        .unwrap_or(false)
    };
    let channel = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        channel::accept_with(ws, &shared.identity.noise, admit),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let hello = hello
        .lock()
        .ok()
        .and_then(|mut h| h.take())
        .ok_or_else(|| "no hello".to_owned())?;
    Ok((channel, hello))
}

/// Whether the handshake's key may connect: an enrolled, unrevoked device,
/// or a new one presenting a valid enrollment token in its hello. An
/// enrollment commits only after its audit event is written (the directory
/// and the audit trail are two databases: at worst an audit event names an
/// enrollment whose commit then failed).
fn admit(
    directory: &Directory,
    store: &Store,
    metrics: &Metrics,
    key: &[u8; 32],
    payload: &[u8],
    now: i64,
) -> (bool, Option<Hello>) {
    let Some(mut hello) = Hello::decode(payload) else {
        return (false, None);
    };
    let token = hello.enrollment_token.take();
    if directory.is_active(key) {
        return (true, Some(hello));
    }
    // A revoked device may still hand over its audit trail, and nothing else.
    if hello.purpose == Purpose::Audit {
        let known = directory.device(key).ok().flatten().is_some();
        return (known, Some(hello));
    }
    let purpose = Some(hello);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return (false, purpose);
    };
    if directory
        .device(key)
        .ok()
        .flatten()
        .is_some_and(|d| d.revoked)
    {
        return (false, purpose);
    }
    // The audit event is written inside the enrollment's transaction: no
    // audit, no enrollment (and nothing to undo).
    let audit = |device: &crate::directory::Device| {
        let detail = format!(
            "{} {} {}",
            device.organisation,
            device.device_class,
            &hex_key(key)[..16]
        );
        crate::audit::record(
            store,
            "server",
            "device-enrolled",
            None,
            scr_core::audit::Outcome::Recorded,
            Some(detail),
        )
        .is_ok()
    };
    let device = match directory.enroll(key, &token, now, audit) {
        Ok(device) => device,
        Err(crate::directory::DirectoryError::NotAudited) => {
            tracing::error!("an enrollment could not be audited; the device is refused");
            return (false, purpose);
        }
        Err(_) => return (false, purpose),
    };
    metrics.enrollments.fetch_add(1, Ordering::Relaxed);
    tracing::info!(organisation = %device.organisation, class = %device.device_class, "device enrolled");
    (true, purpose)
}

/// A new sync session for the device: counted against its cap, told its
/// id, handed to samod, and carried over this connection and any it
/// resumes on.
async fn open_sync_session(mut channel: Channel, shared: &Arc<Shared>, peer: SocketAddr) {
    let device = channel.remote_static();
    shared.sessions.end_all_of(&device);
    shared.sessions.released(&device).await;
    let Some(guard) = shared.metrics.open_session(device) else {
        shared
            .metrics
            .sessions_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, "too many sync sessions for one device; refused");
        return;
    };
    let inspect = crate::pushes::watch(
        shared.policy.clone(),
        shared.store.clone(),
        device,
        shared.metrics.pushes_refused.clone(),
        shared.metrics.flood_dropped.clone(),
    );
    let (session, transport) = channel::Session::open(
        device,
        shared.metrics.traffic.clone(),
        Box::new(guard),
        inspect,
    );
    let Some(id) = shared.sessions.insert(device, session.clone()) else {
        session.end();
        return;
    };
    let reply = channel::SessionReply::Opened { id: to_hex(&id) };
    if channel.send(&reply.encode()).await.is_err() {
        session.end();
        return;
    }
    if shared.acceptor.accept(transport).is_err() {
        tracing::warn!("sync repo stopped; connection dropped");
        session.end();
        return;
    }
    crate::sessions::carry(session, channel, 0).await;
}

/// A device back on a new connection: its session goes on if it is still
/// open and was opened by this device key; otherwise the device is told to
/// open a new one.
async fn resume_sync_session(mut channel: Channel, shared: &Arc<Shared>, resume: &channel::Resume) {
    let device = channel.remote_static();
    let found = from_hex(&resume.session).and_then(|id| shared.sessions.find(&id, &device));
    let Some(session) = found else {
        let _ = channel.send(&channel::SessionReply::Unknown.encode()).await;
        return;
    };
    let reply = channel::SessionReply::Resumed {
        received: session.received(),
    };
    if channel.send(&reply.encode()).await.is_err() {
        return;
    }
    shared
        .metrics
        .sessions_resumed
        .fetch_add(1, Ordering::Relaxed);
    crate::sessions::carry(session, channel, resume.received).await;
}

/// One holdings request: the device's current list (what its grant lets it
/// hold now), computed from the same decisions as the share policy.
async fn serve_holdings(mut channel: Channel, shared: &Shared) -> Result<(), String> {
    let policy = shared.policy.clone();
    let device = channel.remote_static();
    // The version first: the list computed after it is at least that new.
    let notice_version = shared.holdings.notice_version(device).await;
    let list = tokio::task::spawn_blocking(move || policy.holdings_for(&device))
        .await
        .map_err(|e| e.to_string())?;
    let reply = scr_core::sync::HoldingsReply {
        list,
        notice_version,
    };
    let body = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    channel.send(&body).await.map_err(|e| e.to_string())
}

/// One login exchange on an authenticated channel: the grant is bound to
/// the key the device proved in the handshake.
async fn serve_login(mut channel: Channel, shared: &Shared) -> Result<(), String> {
    let request = crate::request::one_request(&mut channel, "login request").await?;
    if request.len() > 4096 {
        return Err("login request too large".into());
    }
    let parsed = serde_json::from_slice::<LoginRequest>(&request)
        .ok()
        .filter(|r| r.user_id.len() <= 64 && r.card_serial.len() <= 64 && r.passcode.len() <= 256);
    let response = match parsed {
        Some(request) => {
            let _slot = shared
                .login_slots
                .acquire()
                .await
                .map_err(|_| "the server is stopping".to_owned())?;
            // Argon2 and SQLite: off the async runtime.
            let (directory, store) = (shared.directory.clone(), shared.store.clone());
            let signer_seed = shared.identity.signer_seed();
            let device = channel.remote_static();
            tokio::task::spawn_blocking(move || {
                let signer = scr_core::grant::GrantSigner::from_seed(*signer_seed);
                match directory.device(&device) {
                    Ok(Some(d)) if !d.revoked => crate::users::login(
                        &directory,
                        &store,
                        &signer,
                        &d,
                        &request,
                        scr_core::clock::now_ms(),
                    ),
                    _ => LoginResponse::Refused {
                        reason: "this device is not enrolled".into(),
                    },
                }
            })
            .await
            .map_err(|e| e.to_string())?
        }
        None => LoginResponse::Refused {
            reason: "the login request is malformed".into(),
        },
    };
    let mut response = response;
    if let LoginResponse::Granted { holdings_doc, .. } = &mut response {
        shared.metrics.logins.fetch_add(1, Ordering::Relaxed);
        // The device's documents follow its new grant at once, and its
        // holdings list names them.
        shared.epoch.bump_device(&channel.remote_static());
        match shared.holdings.ensure(channel.remote_static()).await {
            Ok(id) => *holdings_doc = Some(id),
            Err(e) => tracing::warn!(error = %e, "no holdings list for a device"),
        }
    }
    let body = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
    channel.send(&body).await.map_err(|e| e.to_string())
}
