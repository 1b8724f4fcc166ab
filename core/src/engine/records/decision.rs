//! The access decision for an operation: the request built from the grant
//! and the record's governance, the decision, and its audit draft.

use crate::NhsNumber;
use crate::access::{
    AccessRequest, Action, AlertReason, Decision, PatientChoices, Principal, Relationship, Request,
    RequestedBasis, ViewBasis, choices_from, decide, permission_from,
};
use crate::audit::{AuditDraft, Outcome};
use crate::engine::Engine;
use crate::grant::{RelationshipKind, RoleProfileGrant};
use crate::record::{Compartment, CompartmentView};
use crate::replica::PatientReplica;

/// The relationship the grant gives with this patient, or the one claimed now.
pub(super) fn relationship_of(
    grant: &RoleProfileGrant,
    nhs: &NhsNumber,
    self_claim: Option<AlertReason>,
) -> Relationship {
    match (grant.relationship_with(nhs), self_claim) {
        (Some(r), _) if r.kind == RelationshipKind::Registration => Relationship::Registered,
        (Some(_), _) => Relationship::FromGrant,
        (None, Some(reason)) => Relationship::SelfClaimed(reason),
        (None, None) => Relationship::None,
    }
}

impl Engine {
    /// The request for `action` on `nhs` by the acting grant.
    pub(super) fn request(
        grant: &RoleProfileGrant,
        replica: &PatientReplica,
        nhs: &NhsNumber,
        action: Action,
        access: Option<AccessRequest>,
    ) -> Request {
        let governance = replica.view_compartment(Compartment::Governance).ok();
        let permissions = replica.view_compartment(Compartment::Permissions).ok();
        let relationship = relationship_of(grant, nhs, access.and_then(|a| a.self_claim));
        let (_, _, organisation) = grant.actor();
        let basis = match access.map(|a| a.basis) {
            Some(RequestedBasis::Emergency) => ViewBasis::Emergency,
            Some(RequestedBasis::LegalOverride(r)) => ViewBasis::LegalOverride(r),
            Some(RequestedBasis::Permission) | None => {
                let recorded: Vec<&CompartmentView> =
                    [&permissions, &governance].into_iter().flatten().collect();
                permission_from(&recorded, &organisation, &grant.grant_id)
            }
        };
        let principal = grant.principal();
        // Without the governance compartment the device cannot know whether
        // the record is hidden or opted out: staff see nothing (fail closed).
        let choices = match (&principal, &governance) {
            (Principal::Staff(_), None) => PatientChoices {
                hidden: true,
                ..PatientChoices::default()
            },
            _ => choices_from(governance.as_ref()),
        };
        Request {
            principal,
            action,
            relationship,
            basis,
            choices,
        }
    }

    /// The request for `action` on a record this device does not hold: the
    /// patient's choices unknown but for a withdrawal the server told of,
    /// permission taken as asked (the record, not the permission, is what
    /// is missing).
    pub(super) fn unheld_request(
        grant: &RoleProfileGrant,
        nhs: &NhsNumber,
        action: Action,
        access: Option<AccessRequest>,
        withdrawn: bool,
    ) -> Request {
        let basis = match access.map(|a| a.basis) {
            Some(RequestedBasis::Emergency) => ViewBasis::Emergency,
            Some(RequestedBasis::LegalOverride(r)) => ViewBasis::LegalOverride(r),
            Some(RequestedBasis::Permission) | None => ViewBasis::PermissionRecorded,
        };
        Request {
            principal: grant.principal(),
            action,
            relationship: relationship_of(grant, nhs, access.and_then(|a| a.self_claim)),
            basis,
            choices: PatientChoices {
                hidden: withdrawn,
                ..PatientChoices::default()
            },
        }
    }

    /// The decision, with the patient principal bound to their own record.
    pub(super) fn decide_for(grant: &RoleProfileGrant, nhs: &NhsNumber, req: &Request) -> Decision {
        if req.principal == Principal::Patient && !grant.is_patient(nhs) {
            return Decision::Deny(crate::access::DenyReason::NotAllowed);
        }
        decide(req)
    }

    pub(super) fn draft(
        grant: &RoleProfileGrant,
        nhs: &NhsNumber,
        req: &Request,
        decision: &Decision,
    ) -> AuditDraft {
        let (user, role, organisation) = grant.actor();
        AuditDraft {
            user,
            role,
            organisation,
            patient: Some(*nhs),
            action: req.action.name().into(),
            compartments: decision.compartments().to_vec(),
            entries: Vec::new(),
            outcome: match decision {
                Decision::Permit { .. } => Outcome::Permit,
                Decision::Deny(reason) => Outcome::Deny { reason: *reason },
            },
            basis: req.basis_label(),
            alerts: decision.alerts().to_vec(),
            detail: match &req.action {
                Action::Unhide {
                    written_request_ref,
                    investigation_ref,
                } => Some(format!(
                    "request {written_request_ref}; investigation {investigation_ref}"
                )),
                _ => None,
            },
        }
    }
}
