//! The server's answer to a sync hello: a session opened, resumed or unknown.

use serde::{Deserialize, Serialize};

use crate::channel::ChannelError;

/// The server's answer, just after admission, to a sync hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "session", rename_all = "kebab-case")]
pub enum SessionReply {
    /// A new session (hex id) for a hello that asked for none. `asks`: the
    /// server answers the catalogue ask on it (servers before it end a
    /// session that asks).
    Opened {
        id: String,
        #[serde(default)]
        asks: bool,
    },
    /// The session goes on; the server has received this many messages.
    Resumed { received: u64 },
    /// No such session for this device (expired, or the server restarted):
    /// dial again without one.
    Unknown,
}

impl SessionReply {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ChannelError> {
        serde_json::from_slice(bytes).map_err(|_| ChannelError::Malformed("session reply"))
    }
}
