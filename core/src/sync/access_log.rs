//! "Who has looked at my record": the patient's phone asks the server for
//! every recorded access to the record (a one-shot channel request,
//! `Purpose::AccessLog`) and merges it with the events its own queue has
//! not yet uploaded. The server answers only the patient themself (or a
//! privacy officer), from the grant it issued at login, and audits the
//! read.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::NhsNumber;
use crate::audit::{AuditEvent, Outcome};
use crate::channel::{ChannelError, Purpose, StaticKeypair};
use crate::engine::{Engine, EngineError};
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

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("the access log request failed: {0}")]
    Channel(#[from] ChannelError),
    #[error("the server refused the access log: {0}")]
    Refused(String),
    #[error("the server's access log is malformed")]
    Malformed,
    #[error("this device's own trail: {0}")]
    Engine(#[from] EngineError),
}

/// The server's log for `nhs`.
pub async fn fetch_access_log(
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
    nhs: &NhsNumber,
) -> Result<Vec<AccessLogEntry>, AccessLogError> {
    let request = AccessLogRequest {
        format: ACCESS_LOG_FORMAT,
        nhs_number: *nhs,
    };
    let body = serde_json::to_vec(&request).map_err(|_| AccessLogError::Malformed)?;
    let reply =
        super::request::one_shot(url, keys, server_key, Purpose::AccessLog, Some(&body)).await?;
    match serde_json::from_slice(&reply).map_err(|_| AccessLogError::Malformed)? {
        AccessLogReply::Log { entries } => Ok(entries),
        AccessLogReply::Refused { reason } => Err(AccessLogError::Refused(reason)),
    }
}

/// The whole log: the server's, merged with this device's events not yet
/// uploaded (read through the engine, which checks and audits the read),
/// oldest first, each event once.
pub async fn access_log(
    engine: &Arc<Engine>,
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
    nhs: &NhsNumber,
) -> Result<Vec<AccessLogEntry>, AccessLogError> {
    let e = engine.clone();
    let patient = *nhs;
    let local = tokio::task::spawn_blocking(move || e.audit_trail(&patient))
        .await
        .map_err(|_| AccessLogError::Malformed)??;
    let mut entries = fetch_access_log(url, keys, server_key, nhs).await?;
    for event in &local {
        if !entries.iter().any(|x| x.id == event.id) {
            entries.push(AccessLogEntry::from_event(event, None));
        }
    }
    entries.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
    Ok(entries)
}
