//! The audit upload exchange: a batch of consecutive events of one
//! device's chain, and the server's acknowledgement. The server stores
//! events idempotently by id, so a batch sent twice is stored once.

use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;

/// The upload request format. Bump when the JSON shape changes.
pub const AUDIT_UPLOAD_FORMAT: u8 = 1;
/// Events per request: about 150 KB, far under the channel's limit.
pub const MAX_AUDIT_BATCH: usize = 256;

/// What the device will still hold unsent once this batch is released,
/// reported with every upload (the server's metrics show devices whose
/// backlog grows old).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub queued: u64,
    /// When the oldest queued event was written.
    pub oldest_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditUpload {
    #[serde(rename = "v")]
    pub format: u8,
    /// Consecutive events of this device's chain, oldest first.
    pub events: Vec<AuditEvent>,
    pub backlog: Backlog,
}

/// The server's acknowledgement: every event up to `through_seq` is stored
/// (now or before), so the device may release them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAck {
    pub through_seq: u64,
    pub stored: u32,
    pub duplicates: u32,
    /// Stored, but flagged for review: the chain did not verify (a gap, a
    /// fork), or the event named another device.
    pub flagged: u32,
    /// The device is revoked: once its trail is uploaded it must forget
    /// every patient (a remote wipe) and upload the record of doing so.
    #[serde(default)]
    pub wipe: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum AuditReply {
    Acknowledged(AuditAck),
    Refused { reason: String },
}
