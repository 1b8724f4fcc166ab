//! The decision. Pure and total: every request gets a permit or a deny.

use super::{
    Action, Alert, AlertReason, AlertType, Decision, DenyReason, Obligations, PatientChoices,
    Principal, Relationship, Request, StaffRole, ViewBasis, activity,
};
use crate::record::{Compartment, SharingChoice};

/// Decides one request. Shared by device and server so the rules hold in an
/// ambulance bay with no signal exactly as they do online.
pub fn decide(req: &Request) -> Decision {
    match &req.principal {
        Principal::Patient => decide_for_patient(&req.action),
        Principal::Staff(role) => match decide_for_staff(role, req) {
            Ok((compartments, alerts)) => Decision::Permit {
                compartments,
                obligations: Obligations { alerts },
            },
            Err(reason) => Decision::Deny(reason),
        },
    }
}

fn permit(compartments: Vec<Compartment>) -> Decision {
    Decision::Permit {
        compartments,
        obligations: Obligations::default(),
    }
}

/// The patient sees their whole record (sensitive items included) and their
/// audit trail, writes their own preferences and choices, and can change
/// their mind at any time, opting back in included.
fn decide_for_patient(action: &Action) -> Decision {
    match action {
        Action::View | Action::Export => permit(Compartment::ALL.to_vec()),
        Action::ReadAuditTrail => permit(Vec::new()),
        Action::AddEntry(Compartment::PatientEntered)
        | Action::Supersede {
            compartment: Compartment::PatientEntered,
            ..
        }
        | Action::MarkEnteredInError {
            compartment: Compartment::PatientEntered,
            ..
        } => permit(vec![Compartment::PatientEntered]),
        Action::ChangePatientChoice | Action::Hide => permit(vec![Compartment::Governance]),
        // Permission is given to a clinician, who records it.
        Action::RecordPermissionToView => Decision::Deny(DenyReason::NotAllowed),
        Action::Unhide { .. } => Decision::Deny(DenyReason::NotPrivacyOfficer),
        Action::AddEntry(_) | Action::Supersede { .. } | Action::MarkEnteredInError { .. } => {
            Decision::Deny(DenyReason::NotAllowed)
        }
    }
}

type Permitted = (Vec<Compartment>, Vec<Alert>);

fn decide_for_staff(role: &StaffRole, req: &Request) -> Result<Permitted, DenyReason> {
    match &req.action {
        Action::Unhide {
            written_request_ref,
            investigation_ref,
        } => {
            if !role.privacy_officer {
                return Err(DenyReason::NotPrivacyOfficer);
            }
            if written_request_ref.trim().is_empty() || investigation_ref.trim().is_empty() {
                return Err(DenyReason::MissingReferences);
            }
            Ok((vec![Compartment::Governance], Vec::new()))
        }
        Action::ReadAuditTrail if role.privacy_officer => Ok((Vec::new(), Vec::new())),
        Action::ReadAuditTrail => Err(DenyReason::NotAllowed),
        // The GP records choices on the patient's behalf (or a parent's, for
        // a child), including hiding after an opt-out.
        Action::ChangePatientChoice | Action::Hide => {
            let alerts = relationship_alerts(req.relationship)?;
            require_write(role)?;
            if !is_patients_gp(role, req) {
                return Err(DenyReason::NotTheGp);
            }
            Ok((vec![Compartment::Governance], alerts))
        }
        Action::View
        | Action::Export
        | Action::RecordPermissionToView
        | Action::AddEntry(_)
        | Action::Supersede { .. }
        | Action::MarkEnteredInError { .. } => clinical(role, req),
    }
}

/// Viewing and writing clinical content: the record must be available, then
/// all three tests hold at once.
fn clinical(role: &StaffRole, req: &Request) -> Result<Permitted, DenyReason> {
    if req.choices.hidden || req.choices.sharing == SharingChoice::OptOut {
        return Err(DenyReason::RecordUnavailable);
    }
    let mut alerts = relationship_alerts(req.relationship)?;
    match &req.action {
        Action::View | Action::Export => {
            require_view(role)?;
            alerts.extend(view_basis_alert(role, req.basis)?);
            Ok((visible_to_staff(&req.choices, role), alerts))
        }
        Action::RecordPermissionToView => {
            require_view(role)?;
            Ok((vec![Compartment::Permissions], alerts))
        }
        Action::AddEntry(c) => {
            require_write(role)?;
            require_may_write(role, req, *c)?;
            Ok((vec![*c], alerts))
        }
        // Changing what another organisation wrote, or retracting it, is for
        // that organisation or the patient's GP.
        Action::Supersede {
            compartment,
            author_organisation,
        }
        | Action::MarkEnteredInError {
            compartment,
            author_organisation,
        } => {
            require_write(role)?;
            require_may_write(role, req, *compartment)?;
            if *author_organisation != role.organisation && !is_patients_gp(role, req) {
                return Err(DenyReason::NotTheAuthor);
            }
            Ok((vec![*compartment], alerts))
        }
        _ => Err(DenyReason::NotAllowed),
    }
}

/// A GP job role at the patient's registered practice (not any GP, and
/// not a GP who self-claimed a relationship).
fn is_patients_gp(role: &StaffRole, req: &Request) -> bool {
    role.is_gp() && req.relationship == Relationship::Registered
}

fn relationship_alerts(relationship: Relationship) -> Result<Vec<Alert>, DenyReason> {
    match relationship {
        Relationship::Registered | Relationship::FromGrant => Ok(Vec::new()),
        Relationship::SelfClaimed(reason) => Alert::new(AlertType::SelfClaimedRelationship, reason)
            .map(|a| vec![a])
            .ok_or(DenyReason::ReasonNotAllowed),
        Relationship::None => Err(DenyReason::NoRelationship),
    }
}

fn require_view(role: &StaffRole) -> Result<(), DenyReason> {
    let ok = role.has(activity::ACCESS_SCR)
        && (role.has(activity::VIEW_SUMMARY) || role.has(activity::VIEW_DETAILED));
    ok.then_some(()).ok_or(DenyReason::MissingActivity)
}

fn require_write(role: &StaffRole) -> Result<(), DenyReason> {
    let ok = role.has(activity::PERFORM_DETAILED) || role.has(activity::MANAGE_DETAILED);
    ok.then_some(()).ok_or(DenyReason::MissingActivity)
}

/// The patient's GP writes core, additional and sensitive (sensitive also
/// needs B1611); any treating clinician adds care events; patient-entered
/// items, choices and permissions are written through their own actions
/// only.
fn require_may_write(
    role: &StaffRole,
    req: &Request,
    compartment: Compartment,
) -> Result<(), DenyReason> {
    let gp = is_patients_gp(role, req);
    match compartment {
        Compartment::CareEvents => Ok(()),
        Compartment::Core | Compartment::Additional if gp => Ok(()),
        Compartment::Sensitive if gp => role
            .has(activity::SENSITIVE)
            .then_some(())
            .ok_or(DenyReason::MissingActivity),
        Compartment::Core | Compartment::Additional | Compartment::Sensitive => {
            Err(DenyReason::NotTheGp)
        }
        Compartment::PatientEntered | Compartment::Governance | Compartment::Permissions => {
            Err(DenyReason::NotAllowed)
        }
    }
}

/// Permission to view, or emergency access, or legal override.
fn view_basis_alert(role: &StaffRole, basis: ViewBasis) -> Result<Option<Alert>, DenyReason> {
    match basis {
        ViewBasis::PermissionRecorded => Ok(None),
        ViewBasis::Emergency => {
            if !role.has(activity::EMERGENCY_ACCESS) {
                return Err(DenyReason::MissingActivity);
            }
            Ok(Alert::new(AlertType::AccessAlert, AlertReason::Emergency))
        }
        ViewBasis::LegalOverride(reason) => {
            if !role.has(activity::LEGAL_OVERRIDE) {
                return Err(DenyReason::MissingActivity);
            }
            Alert::new(AlertType::AccessAlert, reason)
                .filter(|_| reason != AlertReason::Emergency)
                .map(Some)
                .ok_or(DenyReason::ReasonNotAllowed)
        }
        ViewBasis::NotAsked => Err(DenyReason::PermissionNeeded),
        ViewBasis::Refused => Err(DenyReason::PermissionRefused),
    }
}

/// Core information, the patient's own entries, their choices and the
/// permissions to view recorded always; additional information and care events when the patient shares
/// them; sensitive items only when the patient asked for them to be included
/// and the role has B1611.
fn visible_to_staff(choices: &PatientChoices, role: &StaffRole) -> Vec<Compartment> {
    let mut out = vec![Compartment::Core];
    if choices.sharing == SharingChoice::CoreAndAdditional {
        out.extend([Compartment::Additional, Compartment::CareEvents]);
    }
    out.extend([
        Compartment::PatientEntered,
        Compartment::Governance,
        Compartment::Permissions,
    ]);
    if choices.include_sensitive && role.has(activity::SENSITIVE) {
        out.push(Compartment::Sensitive);
    }
    out
}
