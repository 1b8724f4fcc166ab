//! Each held record's sync status for the app ("has my visit note reached
//! the server?"): changes the server has not confirmed, and when it last
//! confirmed the record, read now or heard as they change.

use std::sync::Arc;

use scr_core::NhsNumber;

use crate::observe::ObservationHandle;
use crate::{ScrDevice, ScrError};

/// One held record's sync status.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct RecordSyncState {
    pub nhs_number: NhsNumber,
    /// Changes made on this device that the server has not confirmed.
    pub unsent: bool,
    /// When the server last confirmed the record in step; none if never.
    pub last_confirmed_ms: Option<i64>,
}

impl From<scr_core::engine::RecordSyncStatus> for RecordSyncState {
    fn from(s: scr_core::engine::RecordSyncStatus) -> Self {
        Self {
            nhs_number: s.nhs_number,
            unsent: s.unsent,
            last_confirmed_ms: s.last_confirmed_ms,
        }
    }
}

/// Hears every held record's sync status: once when observing starts, then
/// whenever one of them changes.
#[uniffi::export(foreign)]
pub trait RecordSyncObserver: Send + Sync {
    fn on_record_sync(&self, states: Vec<RecordSyncState>);
}

#[uniffi::export]
impl ScrDevice {
    /// Every held record's sync status, in NHS number order.
    pub fn record_sync_states(&self) -> Result<Vec<RecordSyncState>, ScrError> {
        Ok(self
            .engine()?
            .record_sync_statuses()?
            .into_iter()
            .map(RecordSyncState::from)
            .collect())
    }

    /// Calls `observer` with every held record's sync status now and each
    /// time one changes, until the returned handle is dropped or cancelled.
    pub fn observe_record_sync(
        &self,
        observer: Arc<dyn RecordSyncObserver>,
    ) -> Result<Arc<ObservationHandle>, ScrError> {
        let engine = self.engine()?;
        let mut changes = engine.watch_sync_statuses();
        let task = crate::runtime::spawn(async move {
            let mut last = None;
            loop {
                changes.borrow_and_update();
                let read = engine.clone();
                let states = tokio::task::spawn_blocking(move || read.record_sync_statuses())
                    .await
                    .ok()
                    .and_then(Result::ok);
                if let Some(states) = states
                    && last.as_ref() != Some(&states)
                {
                    observer.on_record_sync(states.iter().cloned().map(Into::into).collect());
                    last = Some(states);
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .ok_or_else(|| ScrError::internal("no async runtime"))?;
        Ok(ObservationHandle::running(task))
    }
}
