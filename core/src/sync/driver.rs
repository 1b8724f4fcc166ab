//! The driver loop: wait for a connection, run a pass, idle until a local
//! change, a new holdings list, a timer or the app asks for another.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use samod::{ConnectionId, DialerEvent, DocHandle, DocumentId};
use tokio::sync::{Notify, mpsc, watch};

use super::backoff::jittered;
use super::{DeviceStorage, PassSummary, SyncConfig, SyncError, SyncState};
use crate::NhsNumber;
use crate::channel::ChannelError;
use crate::engine::{Engine, EngineError};

pub(super) struct Driver {
    pub engine: Arc<Engine>,
    pub repo: samod::Repo,
    pub dial: samod::DialerHandle<ChannelError>,
    pub last_error: Arc<Mutex<Option<String>>>,
    /// Whether the sync session has a live connection (it outlives drops).
    pub link: watch::Receiver<super::Link>,
    /// The server refused the device at its last attempt.
    pub refused: Arc<std::sync::atomic::AtomicBool>,
    pub storage: DeviceStorage,
    pub config: SyncConfig,
    pub state: watch::Sender<SyncState>,
    pub wake: Arc<Notify>,
    pub started: Arc<AtomicU64>,
    /// The notice version whose list was last applied, and when: the list
    /// is fetched again only when the notice moves (or it grows old).
    pub applied_notice: Arc<Mutex<Option<(u64, Instant)>>>,
    /// What the server last said it refused of this device's pushes.
    pub server_refusals: Arc<Mutex<Vec<crate::protocol::PushRefusal>>>,
    /// The server has heard this device's audit queue is empty.
    pub audit_reported_empty: Arc<std::sync::atomic::AtomicBool>,
    /// An empty queue's report in the background: running, and what it
    /// did (a wipe, say) for the next pass's summary.
    pub background_report: Arc<Mutex<(bool, Option<super::AuditUploadOutcome>)>>,
    /// Backoff for the audit upload after failures.
    pub audit_retry: Mutex<super::backoff::AuditRetry>,
    /// The session to ask the catalogue on, when the server answers asks.
    pub asker: super::dialer::Asker,
    /// The next catalogue asks for the holdings list whatever it holds.
    pub list_stale: Arc<std::sync::atomic::AtomicBool>,
    /// The session the last catalogue was answered on (held weakly, so no
    /// later session can share its address), and when.
    pub catalogue_fresh: Mutex<Option<(std::sync::Weak<crate::channel::Session>, Instant)>>,
    /// The holdings notice moved since the last catalogue was asked.
    pub notice_moved: Arc<std::sync::atomic::AtomicBool>,
    /// What [`Driver::unstick`] keeps between passes.
    pub stuck: Mutex<super::unstick::Stuck<crate::channel::Session>>,
}

/// Runs blocking engine work (SQLite, decryption) off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
) -> Result<T, SyncError> {
    let engine = engine.clone();
    // A panic in engine work is a failed pass (retried with backoff), not
    // the end of sync.
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|_| SyncError::Internal)?
        .map_err(SyncError::Engine)
}

impl Driver {
    pub(super) async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut events = self.dial.events();
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<()>();
        let watched = Arc::new(Mutex::new(HashSet::<String>::new()));
        let mut link = self.link.clone();
        let mut attempt = 0u32;
        let mut failures = 0u32;
        // The pass was woken by local edits alone.
        let mut local_only = false;
        loop {
            // Connected? (A session waiting to resume is not.)
            // samod's own handshake is not waited for when the session
            // answers the catalogue: a pass with nothing to sync needs none.
            let conn = loop {
                let resuming = *link.borrow_and_update();
                if let (true, true, Some(conn)) = (
                    self.dial.is_connected(),
                    resuming.attached,
                    self.dial.connection_id(),
                ) {
                    break Some(conn);
                }
                if resuming.attached && self.asking_session().is_some() {
                    break None;
                }
                let last_error = self.last_error.lock().ok().and_then(|e| e.clone());
                self.state.send_replace(SyncState::Connecting {
                    attempt: attempt.max(resuming.attempt),
                    last_error,
                });
                local_only = false;
                tokio::select! {
                    _ = stopped.changed() => return self.offline(),
                    _ = link.changed() => {}
                    ev = events.next() => match ev {
                        Some(DialerEvent::Reconnecting { attempt: a }) => {
                            attempt = a;
                            if self.refused.load(Ordering::SeqCst) {
                                self.upload_while_refused().await;
                            }
                        }
                        Some(_) => {}
                        None => return self.offline(),
                    },
                }
            };
            attempt = 0;

            let pass = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let retry_in = match self.pass(conn, local_only, &watched, &changed_tx).await {
                Ok(summary) => {
                    failures = 0;
                    self.state.send_replace(SyncState::Idle {
                        pass,
                        last_synced_ms: crate::clock::now_ms(),
                        summary,
                    });
                    self.config.refresh
                }
                Err(SyncError::Stopped) => return self.offline(),
                Err(e) => {
                    tracing::warn!(error = %e, "sync pass failed");
                    failures = failures.saturating_add(1);
                    self.state.send_replace(SyncState::Error {
                        pass,
                        cause: e.to_string(),
                    });
                    let backoff =
                        self.config.backoff.initial_delay * 2u32.saturating_pow(failures.min(16));
                    jittered(backoff.min(self.config.backoff.max_delay))
                }
            };

            local_only = false;
            tokio::select! {
                _ = stopped.changed() => return self.offline(),
                _ = self.wake.notified() => {}
                _ = self.engine.local_change_signal().notified() => local_only = true,
                _ = changed_rx.recv() => {}
                _ = link.changed() => {}
                ev = events.next() => if ev.is_none() { return self.offline() },
                _ = tokio::time::sleep(retry_in) => {}
            }
            // Let a burst of edits or sync messages settle into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn offline(&self) {
        self.state.send_replace(SyncState::Offline);
    }

    /// One pass: the audit queue, then the records: the catalogue or the
    /// holdings list first (what to hold), then what differs brought in
    /// step both ways.
    async fn pass(
        &self,
        conn: Option<ConnectionId>,
        local_only: bool,
        watched: &Arc<Mutex<HashSet<String>>>,
        changed_tx: &mpsc::UnboundedSender<()>,
    ) -> Result<PassSummary, SyncError> {
        // The audit trail, beside the records: a failure of one never holds
        // back the other. An empty queue is reported once, not on every
        // pass.
        let queued = blocking(&self.engine, |e| e.audit_queue_len()).await?;
        let due = self
            .audit_retry
            .lock()
            .map(|r| r.due(Instant::now()))
            .unwrap_or(true);
        let upload = (queued > 0 || !self.audit_reported_empty.load(Ordering::SeqCst)) && due;
        let (audit, summary) = if upload && queued == 0 {
            // Only the report that nothing is owed: in the background, so
            // the records do not wait for its connection.
            self.report_empty_queue();
            (
                None,
                self.records(conn, local_only, watched, changed_tx).await,
            )
        } else if upload {
            // Beside the records, each on its own connection: the upload
            // is about four round trips (its own handshake), which an edit's
            // pass would otherwise wait for before its push. Forgetting a
            // record never touches the queue, so neither waits on the other.
            let (audit, records) = futures::join!(
                self.upload_step(),
                self.records(conn, local_only, watched, changed_tx)
            );
            (Some(audit), records)
        } else {
            (
                None,
                self.records(conn, local_only, watched, changed_tx).await,
            )
        };
        let mut summary = summary?;
        if let Some((outcome, failed)) = audit {
            summary.audit = outcome;
            summary.audit_failed = failed;
        } else if let Some(outcome) = self
            .background_report
            .lock()
            .ok()
            .and_then(|mut r| r.1.take())
        {
            summary.audit = outcome;
        }
        Ok(summary)
    }

    /// samod's connection, once its handshake is done (`Stopped` if it
    /// is not done within a pass's wait: the pass is retried).
    async fn samod_connection(
        &self,
        known: Option<ConnectionId>,
    ) -> Result<ConnectionId, SyncError> {
        if let Some(conn) = known {
            return Ok(conn);
        }
        let established = self.dial.established();
        match tokio::time::timeout(self.config.pass_wait, established).await {
            Ok(Ok(_)) => self.dial.connection_id().ok_or(SyncError::Internal),
            Ok(Err(_)) | Err(_) => Err(SyncError::Internal),
        }
    }

    /// The records' part of a pass.
    async fn records(
        &self,
        conn: Option<ConnectionId>,
        local_only: bool,
        watched: &Arc<Mutex<HashSet<String>>>,
        changed_tx: &mpsc::UnboundedSender<()>,
    ) -> Result<PassSummary, SyncError> {
        let dirty = self.engine.take_local_changes();
        let result = self
            .records_with(conn, (&dirty, local_only), watched, changed_tx)
            .await;
        if result.is_err() {
            // Handed back: the next pass pushes them.
            for nhs in &dirty {
                self.engine.mark_dirty_again(nhs);
            }
        }
        result
    }

    async fn records_with(
        &self,
        conn: Option<ConnectionId>,
        (dirty, local_only): (&std::collections::BTreeSet<NhsNumber>, bool),
        watched: &Arc<Mutex<HashSet<String>>>,
        changed_tx: &mpsc::UnboundedSender<()>,
    ) -> Result<PassSummary, SyncError> {
        let mut summary = PassSummary::default();
        let holdings_doc = blocking(&self.engine, |e| e.holdings_document()).await?;
        // The catalogue first, if the server answers it: only what differs
        // goes through samod.
        let mut plan = None;
        if let Some(session) = self.asking_session() {
            if let Some(id) = &holdings_doc {
                self.watch_notice(id, watched, changed_tx);
            }
            let ask = match local_only {
                // Only this device's edits woke the pass, and nothing was
                // signalled since the last catalogue: only they go.
                true => self.edits_only(&session, dirty).await?,
                false => None,
            };
            match ask {
                Some(p) => plan = Some(p),
                None => match self.ask_catalogue(&session, dirty).await {
                    Ok(p) => plan = p,
                    Err(SyncError::Stopped) => return Err(SyncError::Stopped),
                    Err(e) => tracing::warn!(error = %e, "the catalogue was not applied"),
                },
            }
        }
        match &plan {
            Some(p) => {
                summary.holdings = p.holdings;
                summary.fetched = p.fetched;
            }
            None => {
                if let Some(id) = holdings_doc {
                    let conn = self.samod_connection(conn).await?;
                    // A bad list must not stop the record sync: log it,
                    // forget nothing, and still bring held documents in step.
                    match self.apply_holdings(conn, &id, watched, changed_tx).await {
                        Ok(outcome) => summary.holdings = outcome,
                        Err(SyncError::Stopped) => return Err(SyncError::Stopped),
                        Err(e) => tracing::warn!(error = %e, "the holdings list was not applied"),
                    }
                }
            }
        }
        let docs = blocking(&self.engine, |e| e.held_documents()).await?;
        summary.documents = docs.len();
        self.state.send_replace(SyncState::Syncing {
            done: 0,
            total: docs.len(),
        });
        let mut all_in_step: HashMap<NhsNumber, bool> = HashMap::new();
        let mut to_sync = Vec::new();
        for (nhs, info) in docs {
            if let Some(p) = plan.as_ref().filter(|p| !p.sync.contains(&info.doc_id)) {
                if p.in_step.contains(&info.doc_id) {
                    // In step by the catalogue: nothing to exchange.
                    summary.in_step += 1;
                    all_in_step.entry(nhs).or_insert(true);
                } else {
                    // Not compared this pass (an edit-only pass: in step as
                    // of the last catalogue; or a record the server no longer
                    // lists, kept for its unsent changes): never confirmed
                    // on that account.
                    if p.assume_rest {
                        summary.in_step += 1;
                    }
                    all_in_step.insert(nhs, false);
                }
                continue;
            }
            if let Ok(doc_id) = info.doc_id.parse::<DocumentId>() {
                to_sync.push((nhs, info.compartment, doc_id));
            }
        }
        let mut waits = FuturesUnordered::new();
        if !to_sync.is_empty() {
            let conn = self.samod_connection(conn).await?;
            for (nhs, compartment, doc_id) in to_sync {
                summary.synced += 1;
                waits.push(self.sync_document(
                    conn,
                    nhs,
                    compartment,
                    doc_id,
                    dirty.contains(&nhs),
                    watched.clone(),
                ));
            }
        }
        let mut done = 0;
        let mut waited_out = HashSet::new();
        while let Some((nhs, in_step, ran_out)) = waits.next().await {
            done += 1;
            if in_step {
                summary.in_step += 1;
            }
            waited_out.extend(ran_out);
            *all_in_step.entry(nhs).or_insert(true) &= in_step;
            self.state.send_replace(SyncState::Syncing {
                done,
                total: summary.documents,
            });
        }
        self.unstick(waited_out);
        let confirmed: Vec<NhsNumber> = all_in_step
            .into_iter()
            .filter_map(|(nhs, ok)| ok.then_some(nhs))
            .collect();
        if !confirmed.is_empty() {
            blocking(&self.engine, move |e| {
                for nhs in &confirmed {
                    e.confirm_sent_unless_dirty(nhs)?;
                }
                // Each record's "last confirmed", written once a pass.
                e.persist_confirmed()
            })
            .await?;
        }
        summary.refused = self.server_refusals.lock().map_or(0, |r| r.len());
        Ok(summary)
    }

    /// A safety net for a sync state that cannot move on: the session is
    /// ended when one document's wait ran out in two passes in a row on
    /// it (the rule and its backoff: `sync::unstick`).
    fn unstick(&self, waited_out: HashSet<String>) {
        let Some(session) = self.asking_session() else {
            return;
        };
        let end = self
            .stuck
            .lock()
            .is_ok_and(|mut stuck| stuck.end_session(&session, waited_out, Instant::now()));
        if end {
            tracing::warn!("a document stayed out of step: a fresh sync session");
            session.end();
        }
    }

    async fn apply_holdings(
        &self,
        conn: ConnectionId,
        id: &str,
        watched: &Arc<Mutex<HashSet<String>>>,
        changed_tx: &mpsc::UnboundedSender<()>,
    ) -> Result<crate::engine::HoldingsOutcome, SyncError> {
        self.storage.keep_in_memory_only(id);
        let doc_id: DocumentId = id
            .parse()
            .map_err(|_| SyncError::Holdings(super::HoldingsError::Malformed))?;
        let wait = self.config.pass_wait;
        // The notice document only signals that the list changed; follow it.
        let handle = match tokio::time::timeout(wait, self.repo.find(doc_id)).await {
            Ok(Ok(handle)) => handle,
            Ok(Err(_)) => return Err(SyncError::Stopped),
            Err(_) => None,
        };
        let mut notice = None;
        if let Some(handle) = handle {
            let _ = tokio::time::timeout(wait, handle.we_have_their_changes(conn)).await;
            self.follow_notice(id, &handle, watched, changed_tx);
            notice = handle
                .with_document_async(|d| crate::protocol::read_notice(d).ok().flatten())
                .await
                .ok()
                .flatten();
        }
        let unchanged = self
            .applied_notice
            .lock()
            .ok()
            .and_then(|a| *a)
            .is_some_and(|(v, at)| {
                Some(v) == notice && at.elapsed() < self.config.holdings_max_age
            });
        if unchanged {
            return Ok(Default::default());
        }
        let list = tokio::time::timeout(
            wait,
            super::fetch_holdings(
                &self.config.server_url,
                &self.config.keys,
                &self.config.server_key,
            ),
        )
        .await
        .map_err(|_| {
            SyncError::Holdings(super::HoldingsError::Channel(
                crate::channel::ChannelError::Closed,
            ))
        })??;
        let served_notice = list.notice_version;
        if let Ok(mut refused) = self.server_refusals.lock() {
            *refused = list.refused;
        }
        let outcome = match list.list {
            Some(list) => blocking(&self.engine, move |e| e.apply_holdings(&list)).await?,
            // No current grant: hold what is held.
            None => Default::default(),
        };
        // The list is at least as new as the notice the server read before
        // computing it (or the device's copy, read before the fetch). If the
        // device's copy lags behind the server's (its sync of the notice
        // missed a change), the two differ and every pass fetches the list:
        // slower, never stale.
        if let (Some(v), Ok(mut applied)) = (served_notice.or(notice), self.applied_notice.lock()) {
            *applied = Some((v, Instant::now()));
        }
        Ok(outcome)
    }

    /// Starts a pass whenever the device's holdings notice changes.
    fn follow_notice(
        &self,
        id: &str,
        handle: &DocHandle,
        watched: &Arc<Mutex<HashSet<String>>>,
        changed_tx: &mpsc::UnboundedSender<()>,
    ) {
        if watched
            .lock()
            .map(|mut w| w.insert(id.to_owned()))
            .unwrap_or(false)
        {
            let mut changes = handle.changes();
            let tx = changed_tx.clone();
            tokio::spawn(async move {
                while changes.next().await.is_some() {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            });
        }
    }
}
