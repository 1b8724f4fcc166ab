//! Record operations: each builds an access request, asks the decision,
//! writes the audit event, and only then releases or changes data. A
//! decision that cannot be audited releases nothing.

mod choices;
mod decision;
mod patients;
mod release;
mod writes;

use crate::NhsNumber;
use crate::access::{AccessRequest, Action, Decision, DenyReason};
use crate::engine::{Engine, EngineError, State};
use crate::grant::RoleProfileGrant;
use crate::replica::PatientReplica;
use crate::store::StoreError;

pub use release::ReleasedView;

impl Engine {
    pub(super) fn replica<'s>(
        &self,
        state: &'s mut State,
        nhs: &NhsNumber,
    ) -> Result<&'s mut PatientReplica, EngineError> {
        if !state.records.contains_key(nhs) {
            let replica = self.store.open_record(nhs).map_err(|e| match e {
                StoreError::RecordNotFound => EngineError::NotHeld,
                other => EngineError::Store(other),
            })?;
            state.records.insert(*nhs, replica);
        }
        state.records.get_mut(nhs).ok_or(EngineError::NotHeld)
    }

    /// The record for an operation by `grant`, or, when this device does
    /// not hold it, the attempt decided as far as the device can (the
    /// role's activities, the relationship, a withdrawal by the patient
    /// the server told of), audited as refused, and refused saying why:
    /// the reason the rules give, "record unavailable" for a patient who
    /// withdrew it, else (no relationship, or not arrived yet) "not held on
    /// this device".
    pub(super) fn held<'s>(
        &self,
        state: &'s mut State,
        op: Unheld<'_>,
    ) -> Result<&'s mut PatientReplica, EngineError> {
        // (Checked, then taken: the borrow of a found record cannot cross
        // the refusal's audit.)
        if let Err(EngineError::NotHeld) = self.replica(state, op.nhs).map(|_| ()) {
            return Err(self.refuse_unheld(state, op));
        }
        self.replica(state, op.nhs)
    }

    fn refuse_unheld(&self, state: &mut State, op: Unheld<'_>) -> EngineError {
        let withdrawn = match self.store.is_withdrawn(op.nhs) {
            Ok(w) => w,
            Err(e) => return e.into(),
        };
        let req = Self::unheld_request(op.grant, op.nhs, op.action, op.access, withdrawn);
        // Without a relationship the record is not this device's to hold:
        // "not held" is what the app acts on (it may open an encounter
        // online); the trail says why.
        let (reason, known) = match Self::decide_for(op.grant, op.nhs, &req) {
            Decision::Deny(DenyReason::NoRelationship) => (DenyReason::NoRelationship, false),
            Decision::Deny(reason) => (reason, true),
            Decision::Permit { .. } => (DenyReason::RecordUnavailable, withdrawn),
        };
        let mut draft = Self::draft(op.grant, op.nhs, &req, &Decision::Deny(reason));
        if !known {
            draft.detail = Some("not held on this device".into());
        }
        // (A refusal raises no alert.)
        if let Err(e) = self.audit(state, draft, op.now) {
            return e;
        }
        if known {
            EngineError::Denied(reason)
        } else {
            EngineError::NotHeld
        }
    }
}

/// An operation on a record, as [`Engine::held`] refuses it when the record
/// is not held.
pub(super) struct Unheld<'a> {
    pub grant: &'a RoleProfileGrant,
    pub nhs: &'a NhsNumber,
    pub action: Action,
    pub access: Option<AccessRequest>,
    pub now: i64,
}
