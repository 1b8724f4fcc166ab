//! Record observers: the app hears that a record changed (merged from
//! sync, written here, forgotten) and reads it again through `view`, which
//! is audited. The observer stops when its handle is dropped.

use std::sync::Arc;

use scr_core::NhsNumber;

use crate::{ScrDevice, ScrError};

#[uniffi::export(foreign)]
pub trait RecordObserver: Send + Sync {
    fn on_record_changed(&self, nhs_number: NhsNumber);
}

/// Keeps an observer running; dropping it stops the observer.
#[derive(uniffi::Object)]
pub struct ObservationHandle {
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for ObservationHandle {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl ObservationHandle {
    pub(crate) fn running(task: tokio::task::JoinHandle<()>) -> Arc<Self> {
        Arc::new(Self {
            task: std::sync::Mutex::new(Some(task)),
        })
    }
}

#[uniffi::export]
impl ObservationHandle {
    /// Stops the observer now (dropping the handle does the same).
    pub fn cancel(&self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

#[uniffi::export]
impl ScrDevice {
    /// Calls `observer` whenever the patient's record changes on this
    /// device, until the returned handle is dropped or cancelled.
    pub fn observe_record(
        &self,
        nhs_number: String,
        observer: Arc<dyn RecordObserver>,
    ) -> Result<Arc<ObservationHandle>, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        let mut changes = self.engine()?.watch_records();
        let task = crate::runtime::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(changed) if changed == nhs => observer.on_record_changed(nhs),
                    Ok(_) => {}
                    // Missed some: the record may have changed.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        observer.on_record_changed(nhs)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
        .ok_or_else(|| ScrError::internal("no async runtime"))?;
        Ok(ObservationHandle::running(task))
    }
}
