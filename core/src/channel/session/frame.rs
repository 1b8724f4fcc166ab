//! The session's frames inside the Noise channel: `[kind][seq][ack][payload]`.

use crate::channel::ChannelError;

pub(super) const DATA: u8 = 0;
pub(super) const ACK: u8 = 1;
/// The sender's samod closed the session (the app stopped sync): the peer
/// ends its side at once instead of waiting for a resume that will not come.
pub(super) const END: u8 = 2;
/// A question outside samod's stream (the catalogue): `seq` numbers it for
/// its answer; neither is replayed on resume (the asker asks again).
pub(super) const ASK: u8 = 3;
/// The answer to the ask numbered `seq`.
pub(super) const ANSWER: u8 = 4;
const HEADER: usize = 17;

pub(super) fn frame(kind: u8, seq: u64, ack: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER + payload.len());
    f.push(kind);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(in crate::channel) fn parse(bytes: &[u8]) -> Result<(u8, u64, u64, &[u8]), ChannelError> {
    if bytes.len() < HEADER {
        return Err(ChannelError::Malformed("short session frame"));
    }
    let number = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    match bytes[0] {
        DATA | ACK | END | ASK | ANSWER => Ok((bytes[0], number(1), number(9), &bytes[HEADER..])),
        _ => Err(ChannelError::Malformed("unknown session frame")),
    }
}
