//! Who may see and change what: the three SCR access tests (role,
//! legitimate relationship, permission to view) and the patient's choices,
//! decided by one pure function shared by device and server.
//!
//! Rules and codes: `docs/ACCESS.md` and the SCR domain notes.

mod alert;
mod choices;
mod decide;
mod encounter;
mod request;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::record::{Compartment, SharingChoice};

pub use alert::{Alert, AlertReason, AlertType};
pub use choices::{choices_from, current_choices, permission_from, sharing_entry};
pub use decide::decide;
pub use encounter::{ENCOUNTER_MS, Encounter};
pub use request::{AccessRequest, RequestedBasis};

/// National RBAC activity codes the decision uses.
pub mod activity {
    /// Access SCR application (patient trace).
    pub const ACCESS_SCR: &str = "B0264";
    /// View summary health records.
    pub const VIEW_SUMMARY: &str = "B0370";
    /// View detailed health records.
    pub const VIEW_DETAILED: &str = "B0360";
    /// Perform detailed health record.
    pub const PERFORM_DETAILED: &str = "B0380";
    /// Manage detailed health records.
    pub const MANAGE_DETAILED: &str = "B8029";
    /// Emergency access to view the SCR.
    pub const EMERGENCY_ACCESS: &str = "B0168";
    /// Legal override of consent.
    pub const LEGAL_OVERRIDE: &str = "B0082";
    /// Access sensitive-flagged records.
    pub const SENSITIVE: &str = "B1611";
}

/// SDS job role codes treated as the patient's GP (they author core,
/// additional and sensitive entries): General Medical Practitioner and
/// Salaried General Practitioner.
pub const GP_JOB_ROLES: &[&str] = &["R0260", "R0270"];

/// A member of staff acting in one selected role, as the verified role
/// profile grant states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffRole {
    pub user_id: String,
    pub job_role: String,
    pub organisation: String,
    pub activities: Vec<String>,
    /// The organisation's privacy officer (reviews alerts, unhides records).
    pub privacy_officer: bool,
}

impl StaffRole {
    pub fn has(&self, activity: &str) -> bool {
        self.activities.iter().any(|a| a == activity)
    }

    pub fn is_gp(&self) -> bool {
        GP_JOB_ROLES.contains(&self.job_role.as_str())
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Staff(StaffRole),
    /// The patient on their own phone, bound to their NHS number.
    Patient,
}

/// The patient's current choices, read from the governance compartment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientChoices {
    pub sharing: SharingChoice,
    pub include_sensitive: bool,
    /// Hidden after the patient opted out of an existing record: blank to
    /// staff until a privacy officer unhides it or the patient opts back in.
    pub hidden: bool,
}

impl Default for PatientChoices {
    /// With no recorded choice a patient has the national default: core
    /// information shared, asked each time, sensitive items left out.
    fn default() -> Self {
        Self {
            sharing: SharingChoice::CoreOnly,
            include_sensitive: false,
            hidden: false,
        }
    }
}

/// Whether the staff member is involved in this patient's care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relationship {
    /// On the grant as the patient's registered practice: what makes a GP
    /// the patient's GP.
    Registered,
    /// On the grant: caseload, referral, assigned incident.
    FromGrant,
    /// Claimed now by the user, with a reason; raises alert type 1.
    SelfClaimed(AlertReason),
    None,
}

/// On what basis the patient's record may be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewBasis {
    /// The patient gave permission for this encounter, or recorded it for
    /// future use at this organisation.
    PermissionRecorded,
    /// The patient cannot consent (unconscious, cannot communicate).
    Emergency,
    /// Public interest, statute or court order.
    LegalOverride(AlertReason),
    /// Nothing recorded yet: the app must ask.
    NotAsked,
    /// The patient said no.
    Refused,
}

/// What is being attempted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    View,
    Export,
    AddEntry(Compartment),
    /// `author_organisation`: who wrote the version being replaced (if the
    /// replaced versions have several authors, one that is not the actor's).
    Supersede {
        compartment: Compartment,
        author_organisation: String,
    },
    /// As for `Supersede`.
    MarkEnteredInError {
        compartment: Compartment,
        author_organisation: String,
    },
    RecordPermissionToView,
    ChangePatientChoice,
    Hide,
    /// Only a privacy officer, citing the written request and investigation.
    Unhide {
        written_request_ref: String,
        investigation_ref: String,
    },
    ReadAuditTrail,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Export => "export",
            Action::AddEntry(_) => "add-entry",
            Action::Supersede { .. } => "supersede",
            Action::MarkEnteredInError { .. } => "entered-in-error",
            Action::RecordPermissionToView => "record-permission",
            Action::ChangePatientChoice => "change-choice",
            Action::Hide => "hide",
            Action::Unhide { .. } => "unhide",
            Action::ReadAuditTrail => "read-audit-trail",
        }
    }
}

/// Everything the decision needs, and nothing it must look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub principal: Principal,
    pub action: Action,
    pub relationship: Relationship,
    pub basis: ViewBasis,
    pub choices: PatientChoices,
}

impl Request {
    /// The basis as the audit trail and the patient's access log name it:
    /// `permission`, `emergency`, `legal-override`, each prefixed with
    /// `self-claimed-relationship+` when the relationship was claimed now.
    pub fn basis_label(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Relationship::SelfClaimed(_) = self.relationship {
            parts.push("self-claimed-relationship");
        }
        match self.basis {
            ViewBasis::PermissionRecorded => parts.push("permission"),
            ViewBasis::Emergency => parts.push("emergency"),
            ViewBasis::LegalOverride(_) => parts.push("legal-override"),
            ViewBasis::NotAsked | ViewBasis::Refused => {}
        }
        (!parts.is_empty()).then(|| parts.join("+"))
    }
}

/// What a permit obliges the caller to do before releasing anything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Obligations {
    /// Alerts for the privacy officer, only allowed type/reason pairs.
    pub alerts: Vec<Alert>,
}

/// Why a request was refused, in words an app can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum DenyReason {
    #[error("your role does not include this activity")]
    MissingActivity,
    #[error("you have no legitimate relationship with this patient")]
    NoRelationship,
    #[error("ask the patient for permission to view their record")]
    PermissionNeeded,
    #[error("the patient has refused permission to view")]
    PermissionRefused,
    #[error("this patient's Summary Care Record is unavailable")]
    RecordUnavailable,
    #[error("only the patient's GP may write this part of the record")]
    NotTheGp,
    #[error("only the author's organisation or the GP may mark this entry in error")]
    NotTheAuthor,
    #[error("only a privacy officer may do this")]
    NotPrivacyOfficer,
    #[error("unhiding needs the written request and investigation references")]
    MissingReferences,
    #[error("this reason cannot be used for this kind of access")]
    ReasonNotAllowed,
    #[error("this action is not available to you")]
    NotAllowed,
}

/// The answer: permit with the compartments released and the obligations,
/// or deny with a reason. Either way the caller writes an audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Permit {
        compartments: Vec<Compartment>,
        obligations: Obligations,
    },
    Deny(DenyReason),
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit { .. })
    }

    pub fn compartments(&self) -> &[Compartment] {
        match self {
            Decision::Permit { compartments, .. } => compartments,
            Decision::Deny(_) => &[],
        }
    }

    pub fn alerts(&self) -> &[Alert] {
        match self {
            Decision::Permit { obligations, .. } => &obligations.alerts,
            Decision::Deny(_) => &[],
        }
    }
}
