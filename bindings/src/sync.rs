//! Sync from the app: start and stop it, watch its state through a foreign
//! observer, ask for a pass, and the calls that need the server (the
//! patient's access log, encounters opened online).

use std::sync::Arc;
use std::time::Duration;

use scr_core::access::AccessRequest;
use scr_core::engine::AuditBacklog;
use scr_core::protocol::AccessLogEntry;
use scr_core::sync::{PassSummary, SyncState};

use crate::runtime::run;
use crate::{ScrDevice, ScrError};

/// What one pass did.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncSummary {
    pub documents: u64,
    /// Documents confirmed in step both ways.
    pub in_step: u64,
    /// Patients newly on this device.
    pub received: u64,
    /// Patients forgotten (no longer listed for this device).
    pub forgotten: u64,
    pub compartments_forgotten: u64,
    pub audit_events_uploaded: u64,
    /// The audit upload failed (retried; nothing was lost).
    pub audit_failed: bool,
    /// The server said this device or its user was revoked: it forgot
    /// every patient.
    pub wiped: bool,
    /// This device's pushes the server refused, as it last said
    /// (`server_refusals` says which and why).
    pub refused_by_server: u64,
    /// Versions this pass kept aside after the server refused them (their
    /// documents rebuilt so later writes merge; `quarantined` shows them).
    pub quarantined: u64,
}

/// One push of this device the server refused: the app shows it as
/// "refused by the server: {reason}". The refused changes stay on this
/// device; nothing else is held back.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ServerRefusal {
    pub compartment: scr_core::record::Compartment,
    /// The rule the push broke, in words.
    pub reason: String,
    pub refused_at_ms: i64,
}

/// What the app shows about sync.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncStatus {
    Offline,
    Connecting {
        attempt: u32,
        last_error: Option<String>,
    },
    Syncing {
        done: u64,
        total: u64,
    },
    Idle {
        pass: u64,
        last_synced_ms: i64,
        summary: SyncSummary,
    },
    Error {
        pass: u64,
        cause: String,
    },
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl From<PassSummary> for SyncSummary {
    fn from(s: PassSummary) -> Self {
        Self {
            documents: count(s.documents),
            in_step: count(s.in_step),
            received: count(s.holdings.received),
            forgotten: count(s.holdings.forgotten),
            compartments_forgotten: count(s.holdings.compartments_forgotten),
            audit_events_uploaded: count(s.audit.uploaded),
            audit_failed: s.audit_failed,
            wiped: s.audit.wiped.is_some(),
            refused_by_server: count(s.refused),
            quarantined: 0,
        }
    }
}

impl From<SyncState> for SyncStatus {
    fn from(s: SyncState) -> Self {
        match s {
            SyncState::Offline => SyncStatus::Offline,
            SyncState::Connecting {
                attempt,
                last_error,
            } => SyncStatus::Connecting {
                attempt,
                last_error,
            },
            SyncState::Syncing { done, total } => SyncStatus::Syncing {
                done: count(done),
                total: count(total),
            },
            SyncState::Idle {
                pass,
                last_synced_ms,
                summary,
            } => SyncStatus::Idle {
                pass,
                last_synced_ms,
                summary: summary.into(),
            },
            SyncState::Error { pass, cause } => SyncStatus::Error { pass, cause },
        }
    }
}

/// Hears every change of sync state, on the facade's runtime thread.
#[uniffi::export(foreign)]
pub trait SyncObserver: Send + Sync {
    fn on_status(&self, status: SyncStatus);
}

#[uniffi::export(async_runtime = "tokio")]
impl ScrDevice {
    /// Starts background sync; `observer` hears each state until sync stops.
    pub async fn start_sync(
        &self,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<(), ScrError> {
        let device = self.inner.clone();
        run(async move {
            device.start_sync().await?;
            if let Some(observer) = observer {
                let mut states = device.with_sync(async |s| s.watch()).await?;
                crate::runtime::spawn(async move {
                    loop {
                        let status = SyncStatus::from(states.borrow_and_update().clone());
                        observer.on_status(status);
                        if states.changed().await.is_err() {
                            return;
                        }
                    }
                });
            }
            Ok(())
        })
        .await
    }

    /// Stops background sync; pending writes are flushed.
    pub async fn stop_sync(&self) -> Result<(), ScrError> {
        let device = self.inner.clone();
        run(async move {
            device.stop_sync().await;
            Ok(())
        })
        .await
    }

    /// Runs a pass now and waits for it (at most `timeout_ms`).
    pub async fn sync_now(&self, timeout_ms: u64) -> Result<SyncSummary, ScrError> {
        let device = self.inner.clone();
        run(async move {
            let wait = Duration::from_millis(timeout_ms);
            let summary = device
                .with_sync(async |s| s.sync_once(wait).await)
                .await??;
            let mut summary: SyncSummary = summary.into();
            if summary.refused_by_server > 0 {
                let rebuilt = device.rebuild_refused().await?;
                summary.quarantined = rebuilt.iter().map(|r| r.quarantined as u64).sum();
            }
            Ok(summary)
        })
        .await
    }

    /// The current sync state (`Offline` when sync is not running).
    pub async fn sync_status(&self) -> SyncStatus {
        let device = self.inner.clone();
        run(async move {
            Ok(device
                .with_sync(async |s| s.state())
                .await
                .map(SyncStatus::from)
                .unwrap_or(SyncStatus::Offline))
        })
        .await
        .unwrap_or(SyncStatus::Offline)
    }

    /// The pushes of this device the server refused, as it last said
    /// (oldest first; empty when sync is not running).
    pub async fn server_refusals(&self) -> Vec<ServerRefusal> {
        let device = self.inner.clone();
        run(async move {
            Ok(device
                .with_sync(async |s| s.server_refusals())
                .await
                .unwrap_or_default())
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| ServerRefusal {
            compartment: r.compartment,
            reason: r.reason,
            refused_at_ms: r.refused_at_ms,
        })
        .collect()
    }

    /// Audit events waiting for upload, and whether they are overdue.
    pub fn audit_backlog(&self) -> Result<AuditBacklog, ScrError> {
        Ok(self.engine()?.audit_backlog(24 * 3600 * 1000)?)
    }

    /// Who has looked at the patient's record: the server's log merged with
    /// this device's unsent events (the patient's own phone).
    pub async fn access_log(&self, nhs_number: String) -> Result<Vec<AccessLogEntry>, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        let device = self.inner.clone();
        run(async move {
            Ok(device
                .with_sync(async |s| s.access_log(&nhs).await)
                .await??)
        })
        .await
    }

    /// Finds a patient outside the user's relationships online (NHS number
    /// and date of birth) and waits until the record is here. Returns the
    /// encounter's id, or none when a relationship already shares it.
    pub async fn open_encounter(
        &self,
        nhs_number: String,
        date_of_birth: String,
        access: AccessRequest,
    ) -> Result<Option<String>, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        let device = self.inner.clone();
        run(async move {
            Ok(device
                .with_sync(async |s| s.open_encounter(&nhs, &date_of_birth, access).await)
                .await??)
        })
        .await
    }

    /// Closes an encounter: its changes are sent, then the device forgets
    /// the patient.
    pub async fn close_encounter(&self, encounter_id: String) -> Result<(), ScrError> {
        let device = self.inner.clone();
        run(async move {
            Ok(device
                .with_sync(async |s| s.close_encounter(&encounter_id).await)
                .await??)
        })
        .await
    }
}
