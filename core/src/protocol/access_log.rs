//! "Who has looked at my record": the request a patient's phone (or a
//! privacy officer) sends and the log the server answers with.

use serde::{Deserialize, Serialize};

use crate::NhsNumber;
use crate::audit::{AuditEvent, Outcome};
use crate::record::Compartment;

pub const ACCESS_LOG_FORMAT: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogRequest {
    #[serde(rename = "v")]
    pub format: u8,
    pub nhs_number: NhsNumber,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum AccessLogReply {
    Log { entries: Vec<AccessLogEntry> },
    Refused { reason: String },
}

impl AccessLogReply {
    /// The reply as an app of record layout 1 reads it: without the
    /// compartments that layout lacks (it would refuse the whole reply).
    pub fn in_layout_1(mut self) -> Self {
        if let Self::Log { entries } = &mut self {
            for e in entries {
                e.compartments
                    .retain(|c| crate::record::Compartment::LAYOUT_1.contains(c));
            }
        }
        self
    }
}

/// One line of the log, as a patient reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct AccessLogEntry {
    /// The audit event's id (the same on the device and the server).
    pub id: String,
    pub at_ms: i64,
    /// Who: the user id, and their name where the server knows it.
    pub user: String,
    pub user_name: Option<String>,
    /// In which role and organisation (codes).
    pub role: String,
    pub organisation: String,
    /// What: view, add-entry, record-permission, choice, forget, ...
    pub action: String,
    /// On what basis: permission, emergency, legal-override,
    /// self-claimed relationship.
    pub basis: Option<String>,
    /// permitted, refused or recorded.
    pub outcome: String,
    pub compartments: Vec<Compartment>,
}

impl AccessLogEntry {
    pub fn from_event(e: &AuditEvent, user_name: Option<String>) -> Self {
        Self {
            id: e.id.clone(),
            at_ms: e.wall_time_ms,
            user: e.user.clone(),
            user_name,
            role: e.role.clone(),
            organisation: e.organisation.clone(),
            action: e.action.clone(),
            basis: e.basis.clone(),
            outcome: match e.outcome {
                Outcome::Permit => "permitted",
                Outcome::Deny { .. } => "refused",
                Outcome::Recorded => "recorded",
            }
            .to_owned(),
            compartments: e.compartments.clone(),
        }
    }
}
