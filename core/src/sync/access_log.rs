//! "Who has looked at my record": the patient's phone asks the server for
//! every recorded access to the record (a one-shot channel request,
//! `Purpose::AccessLog`) and merges it with the events its own queue has
//! not yet uploaded. The server answers only the patient themself (or a
//! privacy officer), from the grant it issued at login, and audits the
//! read.

use std::sync::Arc;

use crate::NhsNumber;
use crate::channel::{ChannelError, Purpose, StaticKeypair};
use crate::engine::{Engine, EngineError};
use crate::protocol::{ACCESS_LOG_FORMAT, AccessLogEntry, AccessLogReply, AccessLogRequest};

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
