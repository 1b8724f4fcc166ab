//! [`PlainSession`]: one connection's worth of the session protocol, no resume.

use super::frame::{ACK, ANSWER, ASK, DATA, END, frame, parse};
use super::reply::SessionReply;
use super::window::{Arrival, Window};
use crate::channel::{ChannelError, NoiseChannel, WebSocket};

/// One connection's worth of the session protocol, with no resume: for
/// tools and tests that speak to the server directly (a hostile client
/// among them). Test support: behind the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub struct PlainSession<S> {
    channel: NoiseChannel<S>,
    window: Window,
    /// The peer ended the session with an END frame.
    ended_by_peer: bool,
}

#[cfg(any(test, feature = "testing"))]
impl<S: WebSocket> PlainSession<S> {
    /// Reads the server's reply to a sync hello that asked for no session.
    pub async fn open(mut channel: NoiseChannel<S>) -> Result<Self, ChannelError> {
        let reply = channel.recv().await?.ok_or(ChannelError::Closed)?;
        match SessionReply::decode(&reply)? {
            SessionReply::Opened { .. } => Ok(Self {
                channel,
                window: Window::default(),
                ended_by_peer: false,
            }),
            _ => Err(ChannelError::Malformed("session reply")),
        }
    }

    pub async fn send(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        self.window.sent += 1;
        let f = frame(DATA, self.window.sent, self.window.received, message);
        self.channel.send(&f).await
    }

    /// An acknowledgement with nothing else: the heartbeat that keeps an
    /// idle session from counting as lost (after 30 s of silence).
    pub async fn heartbeat(&mut self) -> Result<(), ChannelError> {
        let f = frame(ACK, 0, self.window.received, &[]);
        self.channel.send(&f).await
    }

    /// The next samod message (acknowledgements and heartbeats skipped);
    /// `None` once the session or the connection ends
    /// ([`PlainSession::ended_by_peer`] says which).
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            let Some(bytes) = self.channel.recv().await? else {
                return Ok(None);
            };
            let (kind, seq, _, payload) = parse(&bytes)?;
            if kind == END {
                self.ended_by_peer = true;
                return Ok(None);
            }
            if kind == DATA && self.window.arrived(seq) == Arrival::Next {
                return Ok(Some(payload.to_vec()));
            }
        }
    }

    /// Whether the peer ended the session with an END frame (a server
    /// shutting down says goodbye), rather than the connection dropping.
    pub fn ended_by_peer(&self) -> bool {
        self.ended_by_peer
    }

    /// Sends one ask (numbered `id`, as an attacker may choose) without
    /// waiting for its answer.
    pub async fn send_ask(&mut self, id: u64, question: &[u8]) -> Result<(), ChannelError> {
        let f = frame(ASK, id, self.window.received, question);
        self.channel.send(&f).await
    }

    /// Asks and returns the answer numbered `id` (samod's messages that
    /// arrive meanwhile are dropped).
    pub async fn ask(&mut self, id: u64, question: &[u8]) -> Result<Vec<u8>, ChannelError> {
        self.send_ask(id, question).await?;
        loop {
            let Some(bytes) = self.channel.recv().await? else {
                return Err(ChannelError::Closed);
            };
            let (kind, seq, _, payload) = parse(&bytes)?;
            match kind {
                ANSWER if seq == id => return Ok(payload.to_vec()),
                DATA => {
                    self.window.arrived(seq);
                }
                _ => {}
            }
        }
    }
}
