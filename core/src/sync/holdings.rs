//! Fetching this device's holdings list from the server (its format and
//! the notice document: `protocol::holdings`).

use std::sync::Arc;

use crate::channel::{ChannelError, Purpose, StaticKeypair};
use crate::protocol::{HoldingsReply, NoticeError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldingsError {
    #[error("the holdings notice has format {0}, newer than this app understands")]
    NewerFormat(u64),
    #[error("the holdings reply or notice is malformed")]
    Malformed,
    #[error("the holdings request failed: {0}")]
    Channel(#[from] ChannelError),
}

impl From<NoticeError> for HoldingsError {
    fn from(e: NoticeError) -> Self {
        match e {
            NoticeError::NewerFormat(f) => HoldingsError::NewerFormat(f),
            NoticeError::Malformed => HoldingsError::Malformed,
        }
    }
}

/// Asks the server for this device's current list over a fresh channel.
pub async fn fetch_holdings(
    url: &str,
    keys: &Arc<StaticKeypair>,
    server_key: &[u8; 32],
) -> Result<HoldingsReply, HoldingsError> {
    let reply = super::request::one_shot(url, keys, server_key, Purpose::Holdings, None).await?;
    serde_json::from_slice(&reply).map_err(|_| HoldingsError::Malformed)
}
