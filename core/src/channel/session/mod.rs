//! Sync sessions that outlive a connection (ADR 0005).
//!
//! samod keeps each document's Automerge sync state for as long as one
//! transport lives, and starts afresh on a new one. A [`Session`] is that
//! transport, and it survives the connection below it: when the network
//! drops, the device dials again, runs a fresh Noise handshake (new ephemeral
//! keys) and resumes. samod sees one unbroken connection, so every
//! document's sync state carries over and a tablet that lost signal for a
//! few minutes exchanges only what changed.
//!
//! Each side numbers the messages it sends and keeps them until the peer
//! acknowledges them; on resume each side replays what the other has not
//! received, in order, and drops duplicates, so samod never sees a gap or a
//! repeat. Frames inside the Noise channel: `[kind][seq: u64][ack: u64]
//! [payload]`, big-endian; kind 0 carries a samod message, kind 1 only an
//! acknowledgement (also sent as a heartbeat), kind 2 ends the session;
//! kinds 3 and 4 carry an ask and its answer beside samod's stream
//! ([`Session::ask`]: the catalogue exchange), numbered by their own `seq`
//! and never replayed.

mod asks;
mod attach;
mod connection;
mod frame;
#[cfg(any(test, feature = "testing"))]
mod plain;
mod reply;
mod side;
mod state;
#[cfg(test)]
mod tests;
mod window;

use std::time::Duration;

#[cfg(any(test, feature = "testing"))]
pub(super) use frame::parse;
#[cfg(any(test, feature = "testing"))]
pub use plain::PlainSession;
pub use reply::SessionReply;
pub use side::Answerer;
pub use state::{Detached, Session};

/// How long a session waits for its device to come back.
pub const RESUME_WINDOW: Duration = Duration::from_secs(120);

/// A session's identifier: random, and useful only together with the
/// device key that opened the session.
pub type SessionId = [u8; 16];
