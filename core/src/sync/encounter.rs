//! Opening and closing an encounter with the server (the exchange's
//! format and rules: `protocol::encounter`).

use crate::access::DenyReason;
use crate::channel::{ChannelError, Purpose, StaticKeypair};
use crate::engine::EngineError;
use crate::protocol::{EncounterReply, EncounterRequest};

#[derive(Debug, thiserror::Error)]
pub enum EncounterError {
    #[error(
        "the server cannot be reached, so only records already on this device can be opened: {0}"
    )]
    Offline(#[from] ChannelError),
    #[error("no record matches that NHS number and date of birth")]
    NoMatch,
    #[error("access denied: {0}")]
    Denied(DenyReason),
    #[error("no open encounter has that id")]
    NoSuchEncounter,
    #[error("the server could not do it: {0}")]
    Server(String),
    #[error("the server's reply is malformed")]
    Malformed,
    #[error("the record has not arrived yet; it arrives with the next sync")]
    NotYetArrived,
    #[error("the device: {0}")]
    Engine(#[from] EngineError),
}

/// One encounter request over a fresh channel.
pub async fn request_encounter(
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
    request: &EncounterRequest,
) -> Result<EncounterReply, EncounterError> {
    let body = serde_json::to_vec(request).map_err(|_| EncounterError::Malformed)?;
    let reply =
        super::request::one_shot(url, keys, server_key, Purpose::Encounter, Some(&body)).await?;
    serde_json::from_slice(&reply).map_err(|_| EncounterError::Malformed)
}
