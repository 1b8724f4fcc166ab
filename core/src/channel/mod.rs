//! The device-server channel: Noise over WebSocket, no plaintext mode.
//!
//! `Noise_XX_25519_ChaChaPoly_BLAKE2s` (crate `snow`), with the prologue
//! naming our protocol version. Each side proves its static x25519 key: the
//! device checks the server's against the key pinned at enrollment before it
//! reveals its own; the server accepts only enrolled device keys. Ephemeral
//! keys give forward secrecy; Noise's implicit nonces make a replayed,
//! reordered or altered frame fail to decrypt, which closes the channel.
//!
//! Framing: one WebSocket binary message carries one Noise message. Noise
//! caps a message at 65,535 bytes, so a larger payload (a sync message) is
//! split into chunks, each `[flags][bytes]` with flag bit 0 set on all but
//! the last, and reassembled up to [`MAX_MESSAGE`].

mod dial;
mod error;
mod hello;
mod keys;
mod session;
mod transport;

use futures::{Sink, SinkExt, Stream, StreamExt};
use snow::{HandshakeState, TransportState};
use tokio_tungstenite::tungstenite::Message;

pub use dial::{ClientStream, open as open_websocket};
pub use error::ChannelError;
pub use hello::{Hello, Purpose, Resume, from_hex, to_hex};
pub use keys::{StaticKeypair, hex_key};
#[cfg(any(test, feature = "testing"))]
pub use session::PlainSession;
pub use session::{Answerer, Detached, RESUME_WINDOW, Session, SessionId, SessionReply};

/// A sync session frame's parts, if it is one (for the fuzz targets).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn session_frame_parts(bytes: &[u8]) -> Option<(u8, u64, u64, usize)> {
    session::parse(bytes)
        .ok()
        .map(|(kind, seq, ack, payload)| (kind, seq, ack, payload.len()))
}
pub use transport::{
    Gate, Inspector, Observer, Traffic, into_counted_transport, into_samod_transport,
};

pub const NOISE_PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake: a peer speaking another version fails it.
/// v2: the server confirms admission in its first transport message.
/// v3: sync runs in resumable sessions (ADR 0005).
pub const PROLOGUE: &[u8] = b"scr-sync channel v3";
/// The largest reassembled message either side accepts.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Noise's limit on one message, and the plaintext that fits in it.
const NOISE_MAX: usize = 65_535;
const TAG: usize = 16;
const CHUNK: usize = NOISE_MAX - TAG - 1;
const MORE: u8 = 1;

/// The WebSocket halves the channel runs over.
pub trait WebSocket:
    Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
    + Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
    + Unpin
    + Send
    + 'static
{
}

impl<T> WebSocket for T where
    T: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin
        + Send
        + 'static
{
}

/// An authenticated, encrypted channel.
pub struct NoiseChannel<S> {
    ws: S,
    noise: TransportState,
    remote: [u8; 32],
}

fn builder(local: &StaticKeypair) -> Result<snow::Builder<'_>, ChannelError> {
    let params = NOISE_PATTERN
        .parse()
        .map_err(|_| ChannelError::Handshake("noise parameters"))?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(local.private()))
        .map_err(|_| ChannelError::Handshake("noise builder"))
}

/// The device side: runs the handshake and checks the server's static key
/// against the pinned one before sending its own identity. `payload` rides
/// in the last handshake message, encrypted and bound to the device's key
/// (an enrollment token on first contact; empty otherwise).
pub async fn connect<S: WebSocket>(
    mut ws: S,
    local: &StaticKeypair,
    pinned_server: &[u8; 32],
    payload: &[u8],
) -> Result<NoiseChannel<S>, ChannelError> {
    let mut hs = builder(local)?
        .build_initiator()
        .map_err(|_| ChannelError::Handshake("initiator"))?;
    let mut buf = vec![0u8; NOISE_MAX];
    // -> e
    let n = hs
        .write_message(&[], &mut buf)
        .map_err(|_| ChannelError::Handshake("write e"))?;
    send_frame(&mut ws, &buf[..n]).await?;
    // <- e, ee, s, es
    let frame = recv_frame(&mut ws).await?.ok_or(ChannelError::Closed)?;
    hs.read_message(&frame, &mut buf)
        .map_err(|_| ChannelError::Handshake("read e, ee, s, es"))?;
    if remote_static(&hs)? != *pinned_server {
        return Err(ChannelError::ServerKeyMismatch);
    }
    // -> s, se (with the payload)
    if payload.len() > 1024 {
        return Err(ChannelError::Oversized { limit: 1024 });
    }
    let n = hs
        .write_message(payload, &mut buf)
        .map_err(|_| ChannelError::Handshake("write s, se"))?;
    send_frame(&mut ws, &buf[..n]).await?;
    // In XX the device finishes first; only the server's first transport
    // message says whether it admitted the key, so a refusal is told apart
    // from a network drop.
    let mut channel = finish(ws, hs)?;
    match channel.recv().await? {
        Some(m) if m == ADMITTED => Ok(channel),
        Some(m) if m == REFUSED => Err(ChannelError::NotAdmitted),
        Some(_) => Err(ChannelError::Malformed("admission")),
        None => Err(ChannelError::Closed),
    }
}

/// The server's first transport message: the device is admitted, or not.
const ADMITTED: &[u8] = b"admitted";
const REFUSED: &[u8] = b"refused";

/// The server side: runs the handshake and admits the device only if
/// `admit(device key, handshake payload)` says so (an enrolled key, or a
/// valid enrollment token for a new one).
pub async fn accept<S: WebSocket>(
    ws: S,
    local: &StaticKeypair,
    admit: impl FnOnce(&[u8; 32], &[u8]) -> bool,
) -> Result<NoiseChannel<S>, ChannelError> {
    accept_with(ws, local, |key, payload| {
        std::future::ready(admit(&key, &payload))
    })
    .await
}

/// [`accept`] with an asynchronous admission check (a server looking the
/// key up in its database off the async runtime).
pub async fn accept_with<S: WebSocket, F: Future<Output = bool>>(
    mut ws: S,
    local: &StaticKeypair,
    admit: impl FnOnce([u8; 32], Vec<u8>) -> F,
) -> Result<NoiseChannel<S>, ChannelError> {
    let mut hs = builder(local)?
        .build_responder()
        .map_err(|_| ChannelError::Handshake("responder"))?;
    let mut buf = vec![0u8; NOISE_MAX];
    let frame = recv_frame(&mut ws).await?.ok_or(ChannelError::Closed)?;
    hs.read_message(&frame, &mut buf)
        .map_err(|_| ChannelError::Handshake("read e"))?;
    let n = hs
        .write_message(&[], &mut buf)
        .map_err(|_| ChannelError::Handshake("write e, ee, s, es"))?;
    send_frame(&mut ws, &buf[..n]).await?;
    let frame = recv_frame(&mut ws).await?.ok_or(ChannelError::Closed)?;
    let n = hs
        .read_message(&frame, &mut buf)
        .map_err(|_| ChannelError::Handshake("read s, se"))?;
    if !admit(remote_static(&hs)?, buf[..n].to_vec()).await {
        // Said inside the channel (bound to this handshake), so the device
        // knows it was refused rather than cut off.
        if let Ok(mut refused) = finish(ws, hs) {
            let _ = refused.send(REFUSED).await;
        }
        return Err(ChannelError::UnknownPeer);
    }
    let mut channel = finish(ws, hs)?;
    channel.send(ADMITTED).await?;
    Ok(channel)
}

fn remote_static(hs: &HandshakeState) -> Result<[u8; 32], ChannelError> {
    hs.get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(ChannelError::Handshake("no remote static key"))
}

fn finish<S>(ws: S, hs: HandshakeState) -> Result<NoiseChannel<S>, ChannelError> {
    let remote = remote_static(&hs)?;
    let noise = hs
        .into_transport_mode()
        .map_err(|_| ChannelError::Handshake("transport mode"))?;
    Ok(NoiseChannel { ws, noise, remote })
}

impl<S: WebSocket> NoiseChannel<S> {
    /// The peer's authenticated static public key.
    pub fn remote_static(&self) -> [u8; 32] {
        self.remote
    }

    /// Sends one message of any size up to [`MAX_MESSAGE`].
    pub async fn send(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        for frame in encrypt_message(&mut self.noise, message)? {
            send_frame(&mut self.ws, &frame).await?;
        }
        Ok(())
    }

    /// The next whole message, or `None` when the peer closed cleanly.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        let mut assembler = Assembler::default();
        loop {
            let Some(frame) = recv_frame(&mut self.ws).await? else {
                return if assembler.is_empty() {
                    Ok(None)
                } else {
                    Err(ChannelError::Malformed("closed mid-message"))
                };
            };
            if let Some(message) = assembler.push(&mut self.noise, &frame)? {
                return Ok(Some(message));
            }
        }
    }

    pub(crate) fn into_parts(self) -> (S, TransportState, [u8; 32]) {
        (self.ws, self.noise, self.remote)
    }
}

/// Encrypts `message` into one or more Noise frames.
pub(crate) fn encrypt_message(
    noise: &mut TransportState,
    message: &[u8],
) -> Result<Vec<Vec<u8>>, ChannelError> {
    if message.len() > MAX_MESSAGE {
        return Err(ChannelError::Oversized { limit: MAX_MESSAGE });
    }
    let mut frames = Vec::with_capacity(message.len() / CHUNK + 1);
    let mut chunks = message.chunks(CHUNK).peekable();
    let mut plain = Vec::with_capacity(CHUNK + 1);
    loop {
        let chunk = chunks.next().unwrap_or(&[]);
        plain.clear();
        plain.push(if chunks.peek().is_some() { MORE } else { 0 });
        plain.extend_from_slice(chunk);
        let mut out = vec![0u8; plain.len() + TAG];
        let n = noise
            .write_message(&plain, &mut out)
            .map_err(|_| ChannelError::Malformed("encrypt"))?;
        out.truncate(n);
        frames.push(out);
        if chunks.peek().is_none() {
            return Ok(frames);
        }
    }
}

/// Reassembles chunks into messages, bounding memory by [`MAX_MESSAGE`].
#[derive(Default)]
pub(crate) struct Assembler {
    partial: Vec<u8>,
    started: bool,
}

impl Assembler {
    pub(crate) fn is_empty(&self) -> bool {
        !self.started
    }

    /// Decrypts one frame; returns a message when its last chunk arrives.
    pub(crate) fn push(
        &mut self,
        noise: &mut TransportState,
        frame: &[u8],
    ) -> Result<Option<Vec<u8>>, ChannelError> {
        if frame.len() > NOISE_MAX {
            return Err(ChannelError::Oversized { limit: NOISE_MAX });
        }
        let mut plain = vec![0u8; frame.len()];
        let n = noise
            .read_message(frame, &mut plain)
            .map_err(|_| ChannelError::Decrypt)?;
        let (&flags, chunk) = plain[..n]
            .split_first()
            .ok_or(ChannelError::Malformed("empty frame"))?;
        if flags & !MORE != 0 {
            return Err(ChannelError::Malformed("unknown frame flags"));
        }
        if self.partial.len() + chunk.len() > MAX_MESSAGE {
            return Err(ChannelError::Oversized { limit: MAX_MESSAGE });
        }
        self.started = true;
        self.partial.extend_from_slice(chunk);
        if flags & MORE == 0 {
            self.started = false;
            return Ok(Some(std::mem::take(&mut self.partial)));
        }
        Ok(None)
    }
}

async fn send_frame<S: WebSocket>(ws: &mut S, frame: &[u8]) -> Result<(), ChannelError> {
    ws.send(Message::binary(frame.to_vec()))
        .await
        .map_err(|e| ChannelError::Io(e.to_string()))
}

/// The next binary frame; pings and pongs are skipped, text is refused.
pub(crate) async fn recv_frame<S>(ws: &mut S) -> Result<Option<Vec<u8>>, ChannelError>
where
    S: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Binary(b))) => {
                if b.len() > NOISE_MAX {
                    return Err(ChannelError::Oversized { limit: NOISE_MAX });
                }
                return Ok(Some(b.to_vec()));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_))) => return Err(ChannelError::Malformed("text frame")),
            Some(Err(e)) => return Err(ChannelError::Io(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completed XX handshake between two in-memory states.
    fn pair() -> (TransportState, TransportState) {
        let (a, b) = (
            StaticKeypair::generate().unwrap(),
            StaticKeypair::generate().unwrap(),
        );
        let mut i = builder(&a).unwrap().build_initiator().unwrap();
        let mut r = builder(&b).unwrap().build_responder().unwrap();
        let (mut m, mut p) = (vec![0u8; NOISE_MAX], vec![0u8; NOISE_MAX]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        (
            i.into_transport_mode().unwrap(),
            r.into_transport_mode().unwrap(),
        )
    }

    #[test]
    fn chunk_boundaries_round_trip() {
        let (mut tx, mut rx) = pair();
        for size in [0, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let frames = encrypt_message(&mut tx, &msg).unwrap();
            assert_eq!(frames.len(), size.div_ceil(CHUNK).max(1));
            let mut asm = Assembler::default();
            let mut out = None;
            for f in &frames {
                out = asm.push(&mut rx, f).unwrap();
            }
            assert_eq!(out, Some(msg));
        }
    }

    #[test]
    fn a_peer_cannot_grow_a_message_past_the_limit() {
        let (mut tx, mut rx) = pair();
        let chunk = vec![7u8; CHUNK];
        let mut asm = Assembler::default();
        let mut result = Ok(None);
        for _ in 0..=(MAX_MESSAGE / CHUNK) {
            let mut plain = vec![MORE];
            plain.extend_from_slice(&chunk);
            let mut frame = vec![0u8; plain.len() + TAG];
            let n = tx.write_message(&plain, &mut frame).unwrap();
            result = asm.push(&mut rx, &frame[..n]);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChannelError::Oversized { limit: MAX_MESSAGE }));
        assert_eq!(
            encrypt_message(&mut tx, &vec![0u8; MAX_MESSAGE + 1]).err(),
            Some(ChannelError::Oversized { limit: MAX_MESSAGE })
        );
    }

    #[test]
    fn unknown_flags_and_empty_frames_are_malformed() {
        let (mut tx, mut rx) = pair();
        let mut frame = vec![0u8; 64];
        let n = tx.write_message(&[0x80, 1, 2], &mut frame).unwrap();
        assert_eq!(
            Assembler::default().push(&mut rx, &frame[..n]),
            Err(ChannelError::Malformed("unknown frame flags"))
        );
        let n = tx.write_message(&[], &mut frame).unwrap();
        assert_eq!(
            Assembler::default().push(&mut rx, &frame[..n]),
            Err(ChannelError::Malformed("empty frame"))
        );
    }
}
