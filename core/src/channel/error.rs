//! Why a channel failed. Names the step, never key material or payload.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("the handshake failed at: {0}")]
    Handshake(&'static str),
    #[error("the server's key is not the one pinned at enrollment")]
    ServerKeyMismatch,
    #[error("the device key is not enrolled")]
    UnknownPeer,
    #[error("the server did not admit this device (not enrolled, or revoked)")]
    NotAdmitted,
    #[error("a frame failed to decrypt (tampered, replayed or out of order)")]
    Decrypt,
    #[error("a message is larger than the limit of {limit} bytes")]
    Oversized { limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("the connection closed")]
    Closed,
    #[error("connection error: {0}")]
    Io(String),
}
