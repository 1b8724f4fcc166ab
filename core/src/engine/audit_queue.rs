//! The audit queue as the uploader sees it: the events waiting for the
//! server, the backlog, the hash chain, and releasing what was acknowledged.

use super::{Engine, EngineError};
use crate::audit::AuditEvent;

/// The audit events waiting for the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct AuditBacklog {
    pub queued: u64,
    /// When the oldest was written.
    pub oldest_ms: Option<i64>,
    /// It has waited longer than the app's threshold.
    pub overdue: bool,
}

impl Engine {
    /// The audit events waiting for the server, oldest first (the uploader's
    /// view; not for display).
    pub fn audit_queue(&self) -> Result<Vec<AuditEvent>, EngineError> {
        Ok(self.store.queued_audit_events()?)
    }

    /// The oldest `limit` events waiting for the server.
    pub fn audit_batch(&self, limit: usize) -> Result<Vec<AuditEvent>, EngineError> {
        Ok(self.store.oldest_audit_events(Some(limit))?)
    }

    /// How many events wait for the server.
    pub fn audit_queue_len(&self) -> Result<u64, EngineError> {
        Ok(self.store.audit_queue_len()?)
    }

    /// What waits for the server, and whether its oldest event has waited
    /// longer than `overdue_after_ms` (the app says so to its user).
    pub fn audit_backlog(&self, overdue_after_ms: i64) -> Result<AuditBacklog, EngineError> {
        let queued = self.store.audit_queue_len()?;
        let oldest_ms = self
            .store
            .oldest_audit_events(Some(1))?
            .first()
            .map(|e| e.wall_time_ms);
        let overdue = oldest_ms.is_some_and(|t| self.clock.now_ms() - t > overdue_after_ms);
        Ok(AuditBacklog {
            queued,
            oldest_ms,
            overdue,
        })
    }

    /// Whether the queued events continue the device's hash chain.
    pub fn verify_audit_chain(&self) -> Result<Result<(), crate::audit::ChainError>, EngineError> {
        Ok(self.store.verify_audit_chain()?)
    }

    /// The server has stored every event up to `seq`: release them.
    pub fn acknowledge_audit(&self, seq: u64) -> Result<usize, EngineError> {
        Ok(self.store.release_audit_through(seq)?)
    }
}
