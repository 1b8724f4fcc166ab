//! A pass's audit part: the queue uploaded beside the records, an empty
//! queue reported once in the background, and a refused device's trail
//! still handed over.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::driver::Driver;

impl Driver {
    pub(super) async fn upload_audit(
        &self,
    ) -> Result<super::AuditUploadOutcome, super::AuditUploadError> {
        super::upload_audit_queue(
            &self.engine,
            &self.config.server_url,
            &self.config.keys,
            &self.config.server_key,
        )
        .await
    }

    /// A refused device still hands over its audit trail (the server admits
    /// it for that alone) and, if it was revoked, wipes itself when told to.
    pub(super) async fn upload_while_refused(&self) {
        match self.upload_audit().await {
            Ok(outcome) => {
                if let Some(n) = outcome.wiped {
                    tracing::warn!(
                        forgotten = n,
                        "this device was revoked and forgot every patient"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "a refused device could not upload its trail"),
        }
    }

    /// Tells the server the audit queue is empty, on a task of its own
    /// (one at a time); a failure leaves it for the next pass.
    pub(super) fn report_empty_queue(&self) {
        let starts = self
            .background_report
            .lock()
            .map(|mut r| !std::mem::replace(&mut r.0, true))
            .unwrap_or(false);
        if !starts {
            return;
        }
        let engine = self.engine.clone();
        let (url, keys, server_key) = (
            self.config.server_url.clone(),
            self.config.keys.clone(),
            self.config.server_key,
        );
        let (reported, report) = (
            self.audit_reported_empty.clone(),
            self.background_report.clone(),
        );
        tokio::spawn(async move {
            let outcome = super::upload_audit_queue(&engine, &url, &keys, &server_key).await;
            let done = match outcome {
                Ok(outcome) => {
                    reported.store(true, Ordering::SeqCst);
                    if let Some(n) = outcome.wiped {
                        tracing::warn!(
                            forgotten = n,
                            "the server asked this device to wipe itself"
                        );
                    }
                    Some(outcome)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the empty audit queue was not reported");
                    None
                }
            };
            if let Ok(mut r) = report.lock() {
                *r = (false, done);
            }
        });
    }

    /// The audit queue's upload: what it did, and whether it failed.
    pub(super) async fn upload_step(&self) -> (super::AuditUploadOutcome, bool) {
        let uploaded = self.upload_audit().await;
        if let Ok(mut retry) = self.audit_retry.lock() {
            match &uploaded {
                Ok(_) => retry.succeeded(),
                Err(super::AuditUploadError::Channel(_)) => retry.connection_lost(Instant::now()),
                Err(_) => retry.failed(Instant::now()),
            }
        }
        match uploaded {
            Ok(outcome) => {
                self.audit_reported_empty.store(true, Ordering::SeqCst);
                (outcome, false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the audit queue was not uploaded");
                (Default::default(), true)
            }
        }
    }
}
