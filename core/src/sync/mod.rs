//! Background sync between this device and the server: a samod repo over
//! the engine's encrypted store, dialling the server over the Noise channel
//! with backoff and jitter, keeping every held document in step, applying
//! the server's holdings list (receive what is listed, forget what is not),
//! and reporting an observable [`SyncState`] to the app.
//!
//! The engine stays the only writer of records the user edits: its writes
//! are handed to samod after they commit, and what samod receives is merged
//! back through the engine's own write path, so the two copies agree.

mod access_log;
mod audit_upload;
mod backoff;
mod catalogue;
mod dialer;
mod driver;
mod encounter;
mod fetch;
mod holdings;
mod pass_audit;
mod pass_document;
mod rebuild;
mod received;
mod request;
mod storage;
mod unstick;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::channel::{StaticKeypair, hex_key};
use crate::engine::{Engine, EngineError, HoldingsOutcome};
use crate::protocol::{
    AccessLogEntry, ENCOUNTER_FORMAT, EncounterReply, EncounterRequest, PushRefusal,
};

pub use access_log::{AccessLogError, access_log, fetch_access_log};
pub use audit_upload::{
    AuditUploadError, AuditUploadOutcome, next_audit_batch, send_audit_batch, upload_audit_queue,
};
pub use dialer::{Link, NoiseDialer};
pub use encounter::{EncounterError, request_encounter};
pub use holdings::{HoldingsError, fetch_holdings};
pub use request::{login, retire_grant};
pub use storage::DeviceStorage;

/// What the app shows about sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Stopped.
    Offline,
    /// Trying to reach the server: failures since the last connection, and
    /// why the last attempt failed.
    Connecting {
        attempt: u32,
        last_error: Option<String>,
    },
    /// A pass is running: documents in step so far of the total.
    Syncing { done: usize, total: usize },
    /// The last pass finished.
    Idle {
        pass: u64,
        last_synced_ms: i64,
        summary: PassSummary,
    },
    /// The last pass failed; it is retried with backoff.
    Error { pass: u64, cause: String },
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassSummary {
    pub documents: usize,
    /// Documents confirmed in step both ways within the pass.
    pub in_step: usize,
    /// Documents that ran samod's sync (the rest the catalogue found in
    /// step, or every one when the server does not answer the catalogue).
    pub synced: usize,
    /// Documents fetched whole through the catalogue (held nothing of
    /// before), counted in `in_step` too.
    pub fetched: usize,
    pub holdings: HoldingsOutcome,
    /// The audit queue's upload this pass.
    pub audit: AuditUploadOutcome,
    /// The upload failed (retried next pass; nothing was released).
    pub audit_failed: bool,
    /// This device's pushes the server has refused, as it last said
    /// ([`DeviceSync::server_refusals`] says which and why).
    pub refused: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the server address must be a ws:// or wss:// URL")]
    BadServerUrl,
    #[error("sync has stopped")]
    Stopped,
    #[error("an internal fault interrupted the pass")]
    Internal,
    #[error("the holdings list: {0}")]
    Holdings(#[from] HoldingsError),
    #[error("the engine: {0}")]
    Engine(#[from] EngineError),
    #[error("sync did not finish a pass in time (last state: {0:?})")]
    Timeout(Box<SyncState>),
}

#[derive(Clone)]
pub struct SyncConfig {
    /// `ws://host:port/sync`.
    pub server_url: String,
    /// The server's static key, pinned at enrollment.
    pub server_key: [u8; 32],
    /// The device's static key, made at enrollment.
    pub keys: Arc<StaticKeypair>,
    pub backoff: samod::BackoffConfig,
    /// How long a pass waits for the server to bring documents in step.
    pub pass_wait: Duration,
    /// A pass runs at least this often while connected.
    pub refresh: Duration,
    /// An audit event unsent for longer makes the backlog overdue.
    pub audit_overdue_after: Duration,
    /// The holdings list is fetched again after this long even if the
    /// notice did not move. The notice normally says at once; a device that
    /// reconnected while the server changed its list can miss the notice's
    /// later changes (samod 0.16, see docs/adr/0005), and this bounds how
    /// long it goes on holding the old list.
    pub holdings_max_age: Duration,
}

impl SyncConfig {
    pub fn new(server_url: &str, server_key: [u8; 32], keys: Arc<StaticKeypair>) -> Self {
        Self {
            server_url: server_url.to_owned(),
            server_key,
            keys,
            backoff: samod::BackoffConfig {
                initial_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(300),
                max_retries: None,
            },
            pass_wait: Duration::from_secs(10),
            refresh: Duration::from_secs(60),
            audit_overdue_after: Duration::from_secs(24 * 3600),
            holdings_max_age: Duration::from_secs(60),
        }
    }
}

/// The running sync of one device. Stop it with [`DeviceSync::stop`].
pub struct DeviceSync {
    repo: samod::Repo,
    state: watch::Receiver<SyncState>,
    wake: Arc<Notify>,
    started: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    storage: DeviceStorage,
    engine: Arc<Engine>,
    config: SyncConfig,
    /// Shared with the driver: cleared to make the next pass fetch the
    /// holdings list whatever the notice says.
    applied_notice: Arc<std::sync::Mutex<Option<(u64, std::time::Instant)>>>,
    /// The same for the catalogue: its next ask wants the list.
    list_stale: Arc<std::sync::atomic::AtomicBool>,
    /// What the server last said it refused of this device's pushes.
    server_refusals: Arc<std::sync::Mutex<Vec<PushRefusal>>>,
    /// Messages from the server the record's rules refused (not merged).
    received_refused: Arc<AtomicU64>,
}

impl DeviceSync {
    /// Starts syncing `engine`'s store with the server in the background.
    pub async fn start(engine: Arc<Engine>, config: SyncConfig) -> Result<Self, SyncError> {
        let received_repo = Arc::new(std::sync::OnceLock::new());
        let received_refused = Arc::new(AtomicU64::new(0));
        let dialer = NoiseDialer::new(&config.server_url, config.keys.clone(), config.server_key)?
            .with_gate(received::gate(
                received_repo.clone(),
                engine.store_handle(),
                received_refused.clone(),
            ));
        let last_error = dialer.last_error();
        let asker = dialer.asker();
        let link = dialer.link();
        let refused = dialer.refused();
        let storage = DeviceStorage::new(engine.store_handle());
        // The server may announce the list as soon as the channel opens.
        if let Some(id) = engine.holdings_document()? {
            storage.keep_in_memory_only(&id);
        }
        let repo = samod::Repo::build_tokio()
            .with_storage(storage.clone())
            .with_peer_id(samod::PeerId::from(hex_key(&config.keys.public())))
            .load()
            .await;
        let _ = received_repo.set(repo.clone());
        let dial = repo
            .dial(config.backoff.clone(), Arc::new(dialer))
            .map_err(|_| SyncError::Stopped)?;
        let (state_tx, state) = watch::channel(SyncState::Connecting {
            attempt: 0,
            last_error: None,
        });
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let started = Arc::new(AtomicU64::new(0));
        let config_copy = config.clone();
        let applied_notice = Arc::new(std::sync::Mutex::new(None));
        let server_refusals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let list_stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let driver = driver::Driver {
            engine: engine.clone(),
            repo: repo.clone(),
            dial,
            last_error,
            link,
            refused,
            storage: storage.clone(),
            config,
            state: state_tx,
            wake: wake.clone(),
            started: started.clone(),
            applied_notice: applied_notice.clone(),
            server_refusals: server_refusals.clone(),
            audit_reported_empty: Default::default(),
            background_report: Default::default(),
            audit_retry: std::sync::Mutex::new(backoff::AuditRetry::new()),
            asker,
            list_stale: list_stale.clone(),
            catalogue_fresh: Default::default(),
            notice_moved: Default::default(),
            stuck: Default::default(),
        };
        let task = tokio::spawn(driver.run(stopped));
        Ok(Self {
            repo,
            state,
            wake,
            started,
            stop,
            task,
            storage,
            engine,
            config: config_copy,
            applied_notice,
            list_stale,
            server_refusals,
            received_refused,
        })
    }

    pub fn state(&self) -> SyncState {
        self.state.borrow().clone()
    }

    /// A receiver the app can await for every change of state.
    pub fn watch(&self) -> watch::Receiver<SyncState> {
        self.state.clone()
    }

    /// The pushes of this device the server refused, as it last said
    /// (oldest first): each names the document, the rule it broke and the
    /// change. The app shows them as "refused by the server: reason"; the
    /// refused changes stay on this device.
    pub fn server_refusals(&self) -> Vec<PushRefusal> {
        self.server_refusals
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Messages from the server carrying changes the record's rules refuse
    /// (a rewritten or deleted version, a changed header), dropped before
    /// they merged: a buggy or tampered server. Should stay 0.
    pub fn received_refused(&self) -> u64 {
        self.received_refused.load(Ordering::Relaxed)
    }

    /// Asks for a pass now (after the one running, if any).
    pub fn sync_now(&self) {
        self.wake.notify_one();
    }

    /// Runs a pass that starts after this call and waits for it to end.
    pub async fn sync_once(&self, timeout: Duration) -> Result<PassSummary, SyncError> {
        let want = self.started.load(Ordering::SeqCst) + 1;
        self.sync_now();
        let mut rx = self.state.clone();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                match &*rx.borrow_and_update() {
                    SyncState::Idle { pass, summary, .. } if *pass >= want => {
                        return Ok(*summary);
                    }
                    SyncState::Error { pass, cause } if *pass >= want => {
                        return Err(cause.clone());
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err("sync stopped".to_owned());
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(_)) | Err(_) => Err(SyncError::Timeout(Box::new(self.state()))),
        }
    }

    /// Who has looked at `nhs`'s record: the server's log merged with
    /// this device's unsent events (the patient's own phone).
    pub async fn access_log(
        &self,
        nhs: &crate::NhsNumber,
    ) -> Result<Vec<AccessLogEntry>, AccessLogError> {
        access_log(
            &self.engine,
            &self.config.server_url,
            &self.config.keys,
            &self.config.server_key,
            nhs,
        )
        .await
    }

    /// Finds a patient outside the user's relationships online, by NHS
    /// number and date of birth, on the basis in `access` (see
    /// [`encounter`](self::encounter)), and waits until the record is on
    /// the device. Returns the encounter's id, or `None` when an existing
    /// relationship already shares the record. The record is then opened
    /// with [`Engine::view`] as any other (permission is recorded first).
    pub async fn open_encounter(
        &self,
        nhs: &crate::NhsNumber,
        date_of_birth: &str,
        access: crate::access::AccessRequest,
    ) -> Result<Option<String>, EncounterError> {
        let request = EncounterRequest::Open {
            format: ENCOUNTER_FORMAT,
            nhs_number: *nhs,
            date_of_birth: date_of_birth.to_owned(),
            basis: access.basis.into(),
            self_claim: access.self_claim,
        };
        let encounter = match self.encounter_request(&request).await? {
            EncounterReply::Opened {
                encounter_id,
                grant_hex,
            } => {
                self.adopt_grant(&grant_hex, format!("encounter {encounter_id} opened"))
                    .await?;
                // The server raised its alerts: views inside it raise them
                // no second time.
                self.engine
                    .encounter_opened(nhs, &encounter_id, access)
                    .map_err(EncounterError::Engine)?;
                Some(encounter_id)
            }
            EncounterReply::AlreadyShared => None,
            other => return Err(encounter_failure(other)),
        };
        self.sync_until_arrived(nhs).await?;
        Ok(encounter)
    }

    /// Closes an encounter: changes made during it go to the server first,
    /// then the server ends the share and the device forgets the patient.
    pub async fn close_encounter(&self, encounter_id: &str) -> Result<(), EncounterError> {
        // Best effort: if this pass fails the close below fails the same way.
        let _ = self.sync_once(self.config.pass_wait * 2).await;
        let request = EncounterRequest::Close {
            format: ENCOUNTER_FORMAT,
            encounter_id: encounter_id.to_owned(),
        };
        match self.encounter_request(&request).await? {
            EncounterReply::Closed { grant_hex } => {
                self.adopt_grant(&grant_hex, format!("encounter {encounter_id} closed"))
                    .await
            }
            other => Err(encounter_failure(other)),
        }
    }

    async fn encounter_request(
        &self,
        request: &EncounterRequest,
    ) -> Result<EncounterReply, EncounterError> {
        request_encounter(
            &self.config.server_url,
            &self.config.keys,
            &self.config.server_key,
            request,
        )
        .await
    }

    async fn adopt_grant(&self, grant_hex: &str, why: String) -> Result<(), EncounterError> {
        let bytes = crate::channel::from_hex(grant_hex).ok_or(EncounterError::Malformed)?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.adopt_grant(&bytes, &why))
            .await
            .map_err(|_| EncounterError::Malformed)??;
        Ok(())
    }

    /// Passes, each fetching the holdings list afresh, until every document
    /// of the record has arrived (at most three passes' wait).
    async fn sync_until_arrived(&self, nhs: &crate::NhsNumber) -> Result<(), EncounterError> {
        let deadline = tokio::time::Instant::now() + self.config.pass_wait * 3;
        loop {
            if let Ok(mut applied) = self.applied_notice.lock() {
                *applied = None;
            }
            self.list_stale
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = self.sync_once(self.config.pass_wait * 2).await;
            let (engine, nhs) = (self.engine.clone(), *nhs);
            let arrived = tokio::task::spawn_blocking(move || engine.has_arrived(&nhs))
                .await
                .map_err(|_| EncounterError::NotYetArrived)??;
            if arrived {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EncounterError::NotYetArrived);
            }
        }
    }

    /// The audit events waiting for upload, and whether they are overdue.
    pub fn audit_backlog(&self) -> Result<crate::engine::AuditBacklog, SyncError> {
        let after = i64::try_from(self.config.audit_overdue_after.as_millis()).unwrap_or(i64::MAX);
        Ok(self.engine.audit_backlog(after)?)
    }

    /// Writes samod refused because no registered record owns the document.
    pub fn refused_writes(&self) -> u64 {
        self.storage.refused()
    }

    /// Stops the driver and the repo (pending writes are flushed).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.repo.stop().await;
    }
}

/// The error for a reply that is not the one asked for.
fn encounter_failure(reply: EncounterReply) -> EncounterError {
    match reply {
        EncounterReply::NoMatch => EncounterError::NoMatch,
        EncounterReply::Refused { reason } => EncounterError::Denied(reason),
        EncounterReply::Failed { reason } => EncounterError::Server(reason),
        EncounterReply::Opened { .. }
        | EncounterReply::AlreadyShared
        | EncounterReply::Closed { .. } => EncounterError::Malformed,
    }
}
