//! Committing audit events: on their own, or in one transaction with the
//! change they record, moving the clock high-water mark and the grant's
//! age with them.

use super::{Engine, EngineError, State, session};
use crate::NhsNumber;
use crate::audit::{AuditDraft, AuditEvent, Outcome};

impl Engine {
    /// Commits an audit event on its own.
    pub(super) fn audit(
        &self,
        state: &mut State,
        draft: AuditDraft,
        now: i64,
    ) -> Result<AuditEvent, EngineError> {
        self.commit_audited(state, draft, now, |_| Ok(()))
    }

    /// Runs `also` and appends `draft` in one transaction, moving the clock
    /// high-water mark forward with them. If the audit cannot be written,
    /// nothing commits.
    pub(super) fn commit_audited(
        &self,
        state: &mut State,
        draft: AuditDraft,
        now: i64,
        also: impl FnOnce(&dyn crate::store::Rows) -> Result<(), crate::store::StoreError>,
    ) -> Result<AuditEvent, EngineError> {
        let hw = state.clock_high_water.max(now);
        let mono = self.clock.monotonic_ms();
        let age = state.grant_age.at(mono);
        let event = self
            .store
            .write(|tx| {
                also(tx)?;
                let e = self
                    .store
                    .append_audit_tx(tx, draft, &self.config.device_id, now)?;
                session::set_clock_high_water(&self.store, tx, hw)?;
                session::set_grant_age(&self.store, tx, age)?;
                Ok(e)
            })
            .map_err(EngineError::AuditFailed)?;
        state.clock_high_water = hw;
        state.grant_age = session::GrantAge {
            stored_ms: age,
            mono_at: mono,
        };
        Ok(event)
    }

    pub(super) fn device_draft(
        &self,
        action: &str,
        patient: Option<NhsNumber>,
        detail: Option<String>,
    ) -> AuditDraft {
        AuditDraft {
            user: "device".into(),
            role: String::new(),
            organisation: String::new(),
            patient,
            action: action.into(),
            compartments: Vec::new(),
            entries: Vec::new(),
            outcome: Outcome::Recorded,
            basis: None,
            alerts: Vec::new(),
            detail,
        }
    }
}
