//! Forgetting patients: incidents closing, the retention rules applied,
//! a remote wipe, and crypto-shredding one record with its audit event.

use super::{Engine, EngineError, State, session};
use crate::NhsNumber;
use crate::grant::RoleProfileGrant;
use crate::retention::{ForgetReason, due_for_forgetting};
use crate::store::HoldReason;

impl Engine {
    /// Marks incidents this device holds but the new grant no longer lists
    /// as closed now, so the ambulance retention window starts.
    pub(super) fn close_incidents_not_on(
        &self,
        grant: &RoleProfileGrant,
        now: i64,
    ) -> Result<usize, EngineError> {
        self.close_incidents_where(now, |_, nhs| grant.relationship_with(nhs).is_none())
    }

    /// Records that an incident has closed (its patients are forgotten after
    /// the retention window).
    pub fn close_incident(&self, incident_id: &str) -> Result<usize, EngineError> {
        self.close_incidents_where(self.clock.now_ms(), |id, _| id == incident_id)
    }

    fn close_incidents_where(
        &self,
        now: i64,
        closes: impl Fn(&str, &NhsNumber) -> bool,
    ) -> Result<usize, EngineError> {
        let mut closed = 0;
        for mut h in self.store.holdings()? {
            if let HoldReason::Incident {
                incident_id,
                closed_at_ms: closed_at_ms @ None,
            } = &mut h.reason
                && closes(incident_id, &h.nhs_number)
            {
                *closed_at_ms = Some(now);
                let draft = self.device_draft(
                    "incident-closed",
                    Some(h.nhs_number),
                    Some(incident_id.clone()),
                );
                self.store
                    .write(|tx| {
                        self.store.set_holding_tx(tx, &h)?;
                        self.store
                            .append_audit_tx(tx, draft, &self.config.device_id, now)
                            .map(|_| ())
                    })
                    .map_err(EngineError::AuditFailed)?;
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Forgets every patient the retention rules say this device must no
    /// longer hold. Returns how many were forgotten.
    pub fn apply_retention(&self) -> Result<usize, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        self.apply_retention_locked(&mut state, now)
    }

    pub(super) fn apply_retention_locked(
        &self,
        state: &mut State,
        now: i64,
    ) -> Result<usize, EngineError> {
        let locked_out = self
            .store
            .read(|conn| session::load(&self.store, conn))?
            .is_some_and(|r| r.locked_out);
        let grant = state.active.as_ref().map(|a| a.grant.clone());
        let due = due_for_forgetting(
            self.config.device_class,
            &self.config.retention,
            &self.store.holdings()?,
            grant.as_ref(),
            locked_out,
            now,
        );
        let mut forgotten = 0;
        for (nhs, reason) in &due {
            // A record with edits the server does not have yet waits for
            // sync (lock-out is about a device in the wrong hands: it does not).
            if reason.waits_for_unsent() && self.is_unsent(nhs) {
                continue;
            }
            self.forget_locked(state, nhs, reason.code(), now)?;
            forgotten += 1;
        }
        Ok(forgotten)
    }

    /// Forgets every patient this device holds (a remote wipe of a revoked
    /// device: `ForgetReason::RemoteWipe`), each audited; unsent changes go too: a device
    /// revoked is a device in the wrong hands. The audit queue stays, to be
    /// uploaded. Returns how many records were forgotten.
    pub fn forget_everything(&self) -> Result<usize, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        let reason = ForgetReason::RemoteWipe.code();
        let mut forgotten = 0;
        for holding in self.store.holdings()? {
            if self.forget_locked(&mut state, &holding.nhs_number, reason, now)? {
                forgotten += 1;
            }
            self.clear_unsent(&holding.nhs_number)?;
        }
        Ok(forgotten)
    }

    /// Crypto-shreds the patient's record and deletes its rows, with the
    /// audit event in the same transaction. The audit queue is untouched.
    pub fn forget(&self, nhs: &NhsNumber, reason: &str) -> Result<bool, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        self.forget_locked(&mut state, nhs, reason, now)
    }

    pub(super) fn forget_locked(
        &self,
        state: &mut State,
        nhs: &NhsNumber,
        reason: &str,
        now: i64,
    ) -> Result<bool, EngineError> {
        state.records.remove(nhs);
        let draft = self.device_draft("forget", Some(*nhs), Some(reason.to_owned()));
        let mut removed = false;
        self.commit_audited(state, draft, now, |tx| {
            removed = self.store.forget_record_tx(tx, nhs)?;
            self.forget_confirmed_tx(tx, nhs)?;
            self.forget_list_digest_tx(tx)?;
            Ok(())
        })?;
        self.store.checkpoint()?;
        if removed {
            // Its unsent changes went with it: the persisted set must not
            // keep naming the patient.
            self.clear_unsent(nhs)?;
            self.record_changed(nhs);
            self.status_changed();
        }
        Ok(removed)
    }
}
