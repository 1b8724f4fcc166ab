//! One side's replay window: what it sent and not yet saw acknowledged, and
//! what it received.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::channel::ChannelError;

/// Unacknowledged bytes a session keeps for replay; past this (a device
/// away while much changed) it ends, and the next connection starts afresh.
pub const MAX_UNACKED_BYTES: usize = 32 * 1024 * 1024;

/// One side of a session: what it sent and not yet saw acknowledged, and
/// what it received.
#[derive(Default)]
pub(super) struct Window {
    pub(super) sent: u64,
    pub(super) unacked: VecDeque<(u64, Arc<Vec<u8>>)>,
    pub(super) unacked_bytes: usize,
    pub(super) received: u64,
    pub(super) acked_to_peer: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    Next,
    Duplicate,
    Gap,
}

impl Window {
    pub(super) fn push(&mut self, message: Vec<u8>) -> Result<(u64, Arc<Vec<u8>>), ChannelError> {
        if self.unacked_bytes + message.len() > MAX_UNACKED_BYTES && !self.unacked.is_empty() {
            return Err(ChannelError::Oversized {
                limit: MAX_UNACKED_BYTES,
            });
        }
        self.sent += 1;
        self.unacked_bytes += message.len();
        let message = Arc::new(message);
        self.unacked.push_back((self.sent, message.clone()));
        Ok((self.sent, message))
    }

    pub(super) fn acked(&mut self, ack: u64) -> Result<(), ChannelError> {
        if ack > self.sent {
            return Err(ChannelError::Malformed("acknowledged a message never sent"));
        }
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= ack) {
            if let Some((_, m)) = self.unacked.pop_front() {
                self.unacked_bytes -= m.len();
            }
        }
        Ok(())
    }

    pub(super) fn arrived(&mut self, seq: u64) -> Arrival {
        if seq == self.received + 1 {
            self.received = seq;
            Arrival::Next
        } else if seq <= self.received {
            Arrival::Duplicate
        } else {
            Arrival::Gap
        }
    }
}
