//! What leaves the device to the user: a view or an export of the record,
//! and the audit trail, each released only once its audit is durable.

use crate::NhsNumber;
use crate::access::{
    AccessRequest, Action, Decision, PatientChoices, Relationship, Request, ViewBasis,
};
use crate::audit::AuditEvent;
use crate::engine::{Engine, EngineError};
use crate::record::Compartment;
use crate::replica::RecordView;

/// What a permitted view released, and what it held back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleasedView {
    pub view: RecordView,
    /// Compartments this device holds that the decision did not release.
    pub withheld: Vec<Compartment>,
    /// The audit event committed before the view was released.
    pub audit: AuditEvent,
}

impl Engine {
    /// Opens the patient's record for the acting user. The audit event
    /// commits before the view is returned; a denial is audited too.
    pub fn view(
        &self,
        nhs: &NhsNumber,
        access: AccessRequest,
    ) -> Result<ReleasedView, EngineError> {
        self.release(nhs, Action::View, access)
    }

    /// As [`Engine::view`], for an export (audited as one).
    pub fn export(
        &self,
        nhs: &NhsNumber,
        access: AccessRequest,
    ) -> Result<ReleasedView, EngineError> {
        self.release(nhs, Action::Export, access)
    }

    fn release(
        &self,
        nhs: &NhsNumber,
        action: Action,
        access: AccessRequest,
    ) -> Result<ReleasedView, EngineError> {
        let mut state = self.state()?;
        let grant = self.active(&mut state)?;
        let now = self.now_checked(&state)?;
        let op = super::Unheld {
            grant: &grant,
            nhs,
            action: action.clone(),
            access: Some(access),
            now,
        };
        let replica = self.held(&mut state, op)?;
        let req = Self::request(&grant, replica, nhs, action, Some(access));
        let decision = Self::decide_for(&grant, nhs, &req);
        let mut draft = Self::draft(&grant, nhs, &req, &decision);
        match &decision {
            Decision::Permit { compartments, .. } => {
                let held = replica.compartments();
                let view = RecordView {
                    compartments: held
                        .iter()
                        .filter(|c| compartments.contains(c))
                        .filter_map(|c| replica.view_compartment(*c).ok())
                        .collect(),
                };
                let withheld = held
                    .into_iter()
                    .filter(|c| !compartments.contains(c))
                    .collect();
                // Each alert once an encounter.
                let encounter = self.in_encounter(&state, &grant, nhs, decision.alerts());
                if encounter.alerts.len() < draft.alerts.len() {
                    draft.detail = Some("alert raised earlier in this encounter".into());
                }
                draft.alerts.clone_from(&encounter.alerts);
                // Fail closed: the view leaves only once its audit is durable.
                let audit = self.audit(&mut state, draft, now)?;
                Self::accessed(&mut state, nhs, encounter);
                Ok(ReleasedView {
                    view,
                    withheld,
                    audit,
                })
            }
            Decision::Deny(reason) => {
                self.audit(&mut state, draft, now)?;
                Err(EngineError::Denied(*reason))
            }
        }
    }

    /// The audit events this device still holds for the patient (the
    /// patient's own, or a privacy officer's review). Reading is audited.
    pub fn audit_trail(&self, nhs: &NhsNumber) -> Result<Vec<AuditEvent>, EngineError> {
        let mut state = self.state()?;
        let grant = self.active(&mut state)?;
        let now = self.now_checked(&state)?;
        let req = Request {
            principal: grant.principal(),
            action: Action::ReadAuditTrail,
            relationship: Relationship::None,
            basis: ViewBasis::NotAsked,
            choices: PatientChoices::default(),
        };
        let decision = Self::decide_for(&grant, nhs, &req);
        let draft = Self::draft(&grant, nhs, &req, &decision);
        if let Decision::Deny(reason) = decision {
            self.audit(&mut state, draft, now)?;
            return Err(EngineError::Denied(reason));
        }
        let events: Vec<AuditEvent> = self
            .store
            .queued_audit_events()?
            .into_iter()
            .filter(|e| e.patient.as_ref() == Some(nhs))
            .collect();
        self.audit(&mut state, draft, now)?;
        Ok(events)
    }
}
