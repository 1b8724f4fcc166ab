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
//! acknowledgement (also sent as a heartbeat), kind 2 ends the session.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc as fmpsc;
use futures::{SinkExt, StreamExt};
use samod::PeerId;
use samod::transport::Transport;
use serde::{Deserialize, Serialize};
use snow::TransportState;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{
    Assembler, ChannelError, Inspector, NoiseChannel, Traffic, WebSocket, encrypt_message, hex_key,
    recv_frame,
};

/// How long a session waits for its device to come back.
pub const RESUME_WINDOW: Duration = Duration::from_secs(120);
/// Unacknowledged bytes a session keeps for replay; past this (a device
/// away while much changed) it ends, and the next connection starts afresh.
pub const MAX_UNACKED_BYTES: usize = 32 * 1024 * 1024;
/// Silence after which a connection counts as lost (heartbeats are sent
/// more often), so a half-open TCP connection is noticed in seconds.
const SILENCE: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(10);
const ACK_TICK: Duration = Duration::from_millis(200);
/// Bytes delivered to samod and not yet read by it. Delivery never waits
/// (see [`Session::take_in`]); a peer that keeps sending this much more
/// than samod reads, while not reading what we send, is cut off.
const MAX_QUEUED_FOR_SAMOD: usize = 16 * 1024 * 1024;

const DATA: u8 = 0;
const ACK: u8 = 1;
/// The sender's samod closed the session (the app stopped sync): the peer
/// ends its side at once instead of waiting for a resume that will not come.
const END: u8 = 2;
const HEADER: usize = 17;

/// A session's identifier: random, and useful only together with the
/// device key that opened the session.
pub type SessionId = [u8; 16];

/// The server's answer, just after admission, to a sync hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "session", rename_all = "kebab-case")]
pub enum SessionReply {
    /// A new session (hex id) for a hello that asked for none.
    Opened { id: String },
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

/// Why [`Session::attach`] returned.
#[derive(Debug)]
pub enum Detached {
    /// The connection was lost or replaced; the session waits to resume.
    /// Carries the attachment's generation, for [`Session::expire_unless_resumed`].
    Lost {
        generation: u64,
        cause: ChannelError,
    },
    /// The session is over (samod closed it, the peer broke the protocol,
    /// or too much waited for replay).
    Ended,
}

/// One side of a session: what it sent and not yet saw acknowledged, and
/// what it received.
#[derive(Default)]
struct Window {
    sent: u64,
    unacked: VecDeque<(u64, Arc<Vec<u8>>)>,
    unacked_bytes: usize,
    received: u64,
    acked_to_peer: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    Next,
    Duplicate,
    Gap,
}

impl Window {
    fn push(&mut self, message: Vec<u8>) -> Result<(u64, Arc<Vec<u8>>), ChannelError> {
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

    fn acked(&mut self, ack: u64) -> Result<(), ChannelError> {
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

    fn arrived(&mut self, seq: u64) -> Arrival {
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

fn frame(kind: u8, seq: u64, ack: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER + payload.len());
    f.push(kind);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(super) fn parse(bytes: &[u8]) -> Result<(u8, u64, u64, &[u8]), ChannelError> {
    if bytes.len() < HEADER {
        return Err(ChannelError::Malformed("short session frame"));
    }
    let number = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    match bytes[0] {
        DATA | ACK | END => Ok((bytes[0], number(1), number(9), &bytes[HEADER..])),
        _ => Err(ChannelError::Malformed("unknown session frame")),
    }
}

/// What samod reads from a session: ends when the session does.
type Incoming = futures::stream::TakeUntil<
    futures::stream::BoxStream<'static, Result<Vec<u8>, ChannelError>>,
    Pin<Box<dyn Future<Output = ()> + Send>>,
>;

/// A sync session: samod's transport on one side, whichever connection is
/// current on the other.
pub struct Session {
    window: Mutex<Window>,
    to_samod: fmpsc::UnboundedSender<Result<Vec<u8>, ChannelError>>,
    /// Bytes in `to_samod` that samod has not read yet.
    queued_for_samod: Arc<AtomicUsize>,
    /// Held by the attached connection for as long as it runs.
    from_samod: tokio::sync::Mutex<fmpsc::Receiver<Vec<u8>>>,
    ended: watch::Sender<bool>,
    /// Bumped by every attach; a running attachment that sees it move
    /// knows it was replaced.
    generation: watch::Sender<u64>,
    traffic: Arc<Traffic>,
    inspect: Inspector,
    /// The caller's token for an open session (the server's per-device
    /// count), dropped the moment the session ends.
    guard: Mutex<Option<Box<dyn Send + Sync>>>,
    attached: std::sync::atomic::AtomicBool,
}

impl Session {
    /// A new session with the peer whose key `remote` the handshake proved.
    /// Returns the transport to hand to samod; `guard` is dropped when the
    /// session ends (the server's open-session count).
    pub fn open(
        remote: [u8; 32],
        traffic: Arc<Traffic>,
        guard: Box<dyn Send + Sync>,
        inspect: Inspector,
    ) -> (Arc<Self>, Transport) {
        let (session, incoming, outgoing) = Self::open_parts(traffic, guard, inspect);
        let transport = Transport::new(incoming, outgoing)
            .with_expected_peer_id(PeerId::from(hex_key(&remote)));
        (session, transport)
    }

    /// The session and samod's two ends of it: what arrives, and where
    /// samod puts what it sends.
    fn open_parts(
        traffic: Arc<Traffic>,
        guard: Box<dyn Send + Sync>,
        inspect: Inspector,
    ) -> (Arc<Self>, Incoming, fmpsc::Sender<Vec<u8>>) {
        // Unbounded towards samod: its connection driver stops reading
        // while its own send to us waits, and only the attach loop empties
        // that; a loop waiting on samod would wait forever (both sides
        // stalled until the silence detection cut the connection).
        let (to_samod, incoming) = fmpsc::unbounded();
        let queued_for_samod = Arc::new(AtomicUsize::new(0));
        let read = queued_for_samod.clone();
        let incoming = incoming
            .inspect(move |m: &Result<Vec<u8>, ChannelError>| {
                if let Ok(m) = m {
                    read.fetch_sub(m.len(), Ordering::SeqCst);
                }
            })
            .boxed();
        let (outgoing, from_samod) = fmpsc::channel(64);
        let (ended, mut ended_rx) = watch::channel(false);
        let session = Arc::new(Self {
            window: Mutex::default(),
            to_samod,
            queued_for_samod,
            from_samod: tokio::sync::Mutex::new(from_samod),
            ended,
            generation: watch::channel(0).0,
            traffic,
            inspect,
            guard: Mutex::new(Some(guard)),
            attached: Default::default(),
        });
        let over = Box::pin(async move {
            let _ = ended_rx.wait_for(|e| *e).await;
        });
        let over: Pin<Box<dyn Future<Output = ()> + Send>> = over;
        (session, incoming.take_until(over), outgoing)
    }

    /// Messages received so far (what the peer need not replay).
    pub fn received(&self) -> u64 {
        self.window.lock().map(|w| w.received).unwrap_or(0)
    }

    /// Ended, or samod has let go of its end (the repo stopped).
    pub fn is_ended(&self) -> bool {
        *self.ended.borrow() || self.to_samod.is_closed()
    }

    /// samod has let go of its end (it dropped the transport).
    pub fn is_released(&self) -> bool {
        self.to_samod.is_closed()
    }

    /// Whether a connection carries the session now.
    pub fn is_attached(&self) -> bool {
        self.attached.load(Ordering::SeqCst)
    }

    /// Ends the session: samod sees its connection close.
    pub fn end(&self) {
        self.ended.send_replace(true);
        if let Ok(mut g) = self.guard.lock() {
            g.take();
        }
    }

    /// Resolves when the session has ended.
    pub async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// Ends the session if no connection attached after the one whose
    /// loss returned `generation` within `within`.
    pub async fn expire_unless_resumed(self: Arc<Self>, generation: u64, within: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(within) => {
                if *self.generation.borrow() == generation {
                    self.end();
                }
            }
            _ = self.ended() => {}
        }
    }

    /// Runs the session over `channel` until the connection is lost,
    /// replaced or the session ends. `peer_received` is how many of our
    /// messages the peer already has; the rest are sent again first.
    pub async fn attach<S: WebSocket>(
        self: &Arc<Self>,
        channel: NoiseChannel<S>,
        peer_received: u64,
    ) -> Detached {
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        let mut from_samod = self.from_samod.lock().await;
        if self.is_ended() {
            return Detached::Ended;
        }
        self.attached.store(true, Ordering::SeqCst);
        let result = self
            .run(channel, peer_received, generation, &mut from_samod)
            .await;
        self.attached.store(false, Ordering::SeqCst);
        result
    }

    async fn run<S: WebSocket>(
        self: &Arc<Self>,
        channel: NoiseChannel<S>,
        peer_received: u64,
        generation: u64,
        from_samod: &mut fmpsc::Receiver<Vec<u8>>,
    ) -> Detached {
        let mut replaced = self.generation.subscribe();
        let lost = |cause| Detached::Lost { generation, cause };
        let resend: Vec<_> = {
            let Ok(mut w) = self.window.lock() else {
                return self.ended_now();
            };
            if w.acked(peer_received).is_err() {
                drop(w);
                return self.ended_now();
            }
            w.unacked.iter().cloned().collect()
        };

        let (ws, noise, _) = channel.into_parts();
        let (sink, stream) = ws.split();
        let noise = Arc::new(Mutex::new(noise));
        let (frames_tx, mut frames) = mpsc::channel(16);
        let reader = AbortOnDrop(tokio::spawn(read_messages(
            stream,
            noise.clone(),
            frames_tx,
        )));
        // Writing runs in its own task, so this loop keeps reading while a
        // large message goes out: two sides each blocked on a full pipe,
        // neither reading, would deadlock. samod is read from only while
        // little waits to be written, which keeps its backpressure.
        let (mut writer, queue) = Writer::start(sink, noise);
        let mut writer_done = false;
        let mut ended = self.ended.subscribe();
        let mut tick = tokio::time::interval(ACK_TICK);
        let (mut last_sent, mut last_heard) = (Instant::now(), Instant::now());

        for (seq, message) in resend {
            let ack = self.ack_now();
            if queue.put(frame(DATA, seq, ack, &message)).is_err() {
                return lost(ChannelError::Closed);
            }
        }
        let result = loop {
            tokio::select! {
                _ = async { let _ = replaced.wait_for(|g| *g != generation).await; } => break lost(ChannelError::Closed),
                _ = async { let _ = ended.wait_for(|e| *e).await; } => break Detached::Ended,
                written = &mut writer.0, if !writer_done => {
                    writer_done = true;
                    break lost(written.ok().and_then(Result::err).unwrap_or(ChannelError::Closed));
                }
                incoming = frames.recv() => {
                    let Some(Ok(bytes)) = incoming else {
                        break lost(incoming.and_then(Result::err).unwrap_or(ChannelError::Closed));
                    };
                    last_heard = Instant::now();
                    match self.take_in(&bytes) {
                        Ok(()) => {}
                        Err(_) => break self.ended_now(),
                    }
                }
                // The writer caught up: samod may be read again at once.
                _ = queue.drained.notified(), if queue.pending() >= WRITE_AHEAD => {}
                outgoing = from_samod.next(), if queue.pending() < WRITE_AHEAD => {
                    let Some(message) = outgoing else {
                        // samod dropped the connection: say so, then end.
                        let _ = queue.put(frame(END, 0, 0, &[]));
                        break self.ended_now();
                    };
                    self.traffic.sent.fetch_add(message.len() as u64, Ordering::Relaxed);
                    let pushed = self.window.lock().map_err(|_| ChannelError::Closed).and_then(|mut w| w.push(message));
                    let Ok((seq, message)) = pushed else {
                        break self.ended_now();
                    };
                    let ack = self.ack_now();
                    if queue.put(frame(DATA, seq, ack, &message)).is_err() {
                        break lost(ChannelError::Closed);
                    }
                    last_sent = Instant::now();
                }
                _ = tick.tick() => {
                    if last_heard.elapsed() > SILENCE {
                        break lost(ChannelError::Closed);
                    }
                    let owed = self.window.lock().map(|w| w.received > w.acked_to_peer).unwrap_or(false);
                    if owed || last_sent.elapsed() > HEARTBEAT {
                        let ack = self.ack_now();
                        if queue.put(frame(ACK, 0, ack, &[])).is_err() {
                            break lost(ChannelError::Closed);
                        }
                        last_sent = Instant::now();
                    }
                }
            }
        };
        drop(reader);
        // Let what is queued (an END, a last acknowledgement) go out, briefly.
        drop(queue);
        if !writer_done {
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer.0).await;
        }
        result
    }

    fn ended_now(&self) -> Detached {
        self.end();
        Detached::Ended
    }

    /// The acknowledgement to put on a frame being sent now.
    fn ack_now(&self) -> u64 {
        self.window
            .lock()
            .map(|mut w| {
                w.acked_to_peer = w.received;
                w.received
            })
            .unwrap_or(0)
    }

    /// One frame from the peer: its acknowledgement, then its message (in
    /// order, once) to samod, without waiting. An error ends the session.
    fn take_in(&self, bytes: &[u8]) -> Result<(), ChannelError> {
        let (kind, seq, ack, payload) = parse(bytes)?;
        let arrival = {
            let mut w = self.window.lock().map_err(|_| ChannelError::Closed)?;
            if kind == END {
                return Err(ChannelError::Closed);
            }
            w.acked(ack)?;
            if kind == ACK {
                return Ok(());
            }
            w.arrived(seq)
        };
        match arrival {
            Arrival::Duplicate => Ok(()),
            Arrival::Gap => Err(ChannelError::Malformed("a session message is missing")),
            Arrival::Next => {
                self.traffic
                    .received
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                if !(self.inspect)(payload) {
                    return Ok(());
                }
                let queued = self
                    .queued_for_samod
                    .fetch_add(payload.len(), Ordering::SeqCst);
                if queued > MAX_QUEUED_FOR_SAMOD {
                    return Err(ChannelError::Malformed(
                        "the peer sends far faster than the session is read",
                    ));
                }
                self.to_samod
                    .unbounded_send(Ok(payload.to_vec()))
                    .map_err(|_| ChannelError::Closed)
            }
        }
    }
}

/// One connection's worth of the session protocol, with no resume: for
/// tools and tests that speak to the server directly (a hostile client
/// among them). Test support: behind the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub struct PlainSession<S> {
    channel: NoiseChannel<S>,
    window: Window,
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

    /// The next samod message (acknowledgements and heartbeats skipped).
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        loop {
            let Some(bytes) = self.channel.recv().await? else {
                return Ok(None);
            };
            let (kind, seq, _, payload) = parse(&bytes)?;
            if kind == DATA && self.window.arrived(seq) == Arrival::Next {
                return Ok(Some(payload.to_vec()));
            }
        }
    }
}

/// Bytes queued for the writer past which samod is not read from.
const WRITE_AHEAD: usize = 1024 * 1024;

/// The writing half of an attached connection, as a task fed by a queue.
struct Writer(tokio::task::JoinHandle<Result<(), ChannelError>>);

/// Frames for the writer, and how many bytes of them wait.
struct WriteQueue {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Signalled when the writer brings `pending` under [`WRITE_AHEAD`]
    /// (a stored permit: a signal before the wait is not lost).
    drained: Arc<tokio::sync::Notify>,
}

impl WriteQueue {
    fn put(&self, frame: Vec<u8>) -> Result<(), ChannelError> {
        self.pending.fetch_add(frame.len(), Ordering::SeqCst);
        self.tx.send(frame).map_err(|_| ChannelError::Closed)
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

impl Writer {
    fn start<S: WebSocket>(
        mut sink: futures::stream::SplitSink<S, Message>,
        noise: Arc<Mutex<TransportState>>,
    ) -> (Self, WriteQueue) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let drained = Arc::new(tokio::sync::Notify::new());
        let (left, signal) = (pending.clone(), drained.clone());
        let task = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let n = frame.len();
                send(&mut sink, &noise, &frame).await?;
                let before = left.fetch_sub(n, Ordering::SeqCst);
                if before >= WRITE_AHEAD && before - n < WRITE_AHEAD {
                    signal.notify_one();
                }
            }
            let _ = sink.close().await;
            Ok(())
        });
        (
            Self(task),
            WriteQueue {
                tx,
                pending,
                drained,
            },
        )
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send<S: WebSocket>(
    sink: &mut futures::stream::SplitSink<S, Message>,
    noise: &Mutex<TransportState>,
    message: &[u8],
) -> Result<(), ChannelError> {
    let frames = {
        let mut n = noise.lock().map_err(|_| ChannelError::Closed)?;
        encrypt_message(&mut n, message)?
    };
    for f in frames {
        sink.send(Message::binary(f))
            .await
            .map_err(|e| ChannelError::Io(e.to_string()))?;
    }
    Ok(())
}

/// Decrypts and reassembles incoming messages until the connection fails.
async fn read_messages<S: WebSocket>(
    mut stream: futures::stream::SplitStream<S>,
    noise: Arc<Mutex<TransportState>>,
    out: mpsc::Sender<Result<Vec<u8>, ChannelError>>,
) {
    let mut assembler = Assembler::default();
    loop {
        let result = match recv_frame(&mut stream).await {
            Ok(Some(f)) => match noise.lock() {
                Ok(mut n) => assembler.push(&mut n, &f),
                Err(_) => Err(ChannelError::Closed),
            },
            Ok(None) => Err(ChannelError::Closed),
            Err(e) => Err(e),
        };
        match result {
            Ok(None) => continue,
            Ok(Some(message)) => {
                if out.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_replays_only_what_was_not_acknowledged() {
        let mut w = Window::default();
        for i in 0..5u8 {
            w.push(vec![i; 10]).unwrap();
        }
        w.acked(3).unwrap();
        let left: Vec<u64> = w.unacked.iter().map(|(s, _)| *s).collect();
        assert_eq!(left, vec![4, 5]);
        assert_eq!(w.unacked_bytes, 20);
        assert!(w.acked(9).is_err(), "an ack beyond what was sent");
    }

    #[test]
    fn arrivals_are_taken_once_and_in_order() {
        let mut w = Window::default();
        assert_eq!(w.arrived(1), Arrival::Next);
        assert_eq!(w.arrived(1), Arrival::Duplicate);
        assert_eq!(w.arrived(3), Arrival::Gap);
        assert_eq!(w.arrived(2), Arrival::Next);
        assert_eq!(w.received, 2);
    }

    #[test]
    fn a_window_is_bounded() {
        let mut w = Window::default();
        w.push(vec![0; MAX_UNACKED_BYTES]).unwrap();
        assert!(matches!(
            w.push(vec![0; 1]),
            Err(ChannelError::Oversized { .. })
        ));
        w.acked(1).unwrap();
        assert!(w.push(vec![0; 1]).is_ok());
    }

    use super::super::{StaticKeypair, accept, connect};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A Noise channel pair over an in-memory connection, and the task
    /// carrying its bytes: aborting it cuts the connection for both sides.
    async fn linked(
        device: &StaticKeypair,
        server: &StaticKeypair,
    ) -> (
        NoiseChannel<WebSocketStream<tokio::io::DuplexStream>>,
        NoiseChannel<WebSocketStream<tokio::io::DuplexStream>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (a, mut a_far) = tokio::io::duplex(1 << 16);
        let (mut b_far, b) = tokio::io::duplex(1 << 16);
        let wire = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut a_far, &mut b_far).await;
        });
        let (wa, wb) = futures::join!(
            WebSocketStream::from_raw_socket(a, Role::Client, None),
            WebSocketStream::from_raw_socket(b, Role::Server, None)
        );
        let pinned = server.public();
        let (ca, cb) = futures::join!(
            connect(wa, device, &pinned, b""),
            accept(wb, server, |_, _| true)
        );
        (ca.unwrap(), cb.unwrap(), wire)
    }

    fn no_guard() -> (Arc<Session>, Incoming, fmpsc::Sender<Vec<u8>>) {
        Session::open_parts(Arc::default(), Box::new(()), Box::new(|_| true))
    }

    /// Sends `n` numbered messages of varied sizes, some bigger than one
    /// Noise frame. Returns the sender: dropping it is samod closing the
    /// session.
    async fn send_numbered(mut out: fmpsc::Sender<Vec<u8>>, n: u32) -> fmpsc::Sender<Vec<u8>> {
        for i in 1..=n {
            let mut m = i.to_be_bytes().to_vec();
            m.resize(4 + (i as usize * 7919) % 90_000, (i % 251) as u8);
            out.send(m).await.unwrap();
            if i % 17 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        out
    }

    /// The numbers of the first `n` messages (and samod's end, still open).
    async fn numbers(mut incoming: Incoming, n: u32) -> (Vec<u32>, Incoming) {
        let mut got = Vec::new();
        while got.len() < n as usize {
            let Some(Ok(m)) = incoming.next().await else {
                break;
            };
            got.push(u32::from_be_bytes(m[..4].try_into().unwrap()));
        }
        (got, incoming)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_cross_cut_connections_exactly_once_and_in_order() {
        const N: u32 = 400;
        let (device, server) = (
            StaticKeypair::generate().unwrap(),
            StaticKeypair::generate().unwrap(),
        );
        let (a, a_in, a_out) = no_guard();
        let (b, b_in, b_out) = no_guard();
        let _a_out = tokio::spawn(send_numbered(a_out, N));
        let _b_out = tokio::spawn(send_numbered(b_out, N));
        let at_b = tokio::spawn(numbers(b_in, N));
        let at_a = tokio::spawn(numbers(a_in, N));

        // Eight connections, each cut after a while mid-traffic; then one
        // that stays. Each resume tells the other side what arrived.
        let mut cut_mid_traffic = 0;
        for round in 0..9u64 {
            let (ca, cb, wire) = linked(&device, &server).await;
            let (from_b, from_a) = (b.received(), a.received());
            let (a2, b2) = (a.clone(), b.clone());
            let ta = tokio::spawn(async move { a2.attach(ca, from_b).await });
            let tb = tokio::spawn(async move { b2.attach(cb, from_a).await });
            if round == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5 + round * 7)).await;
            wire.abort();
            assert!(matches!(ta.await.unwrap(), Detached::Lost { .. }));
            assert!(matches!(tb.await.unwrap(), Detached::Lost { .. }));
            if a.received() < u64::from(N) || b.received() < u64::from(N) {
                cut_mid_traffic += 1;
            }
        }
        assert!(
            cut_mid_traffic >= 3,
            "only {cut_mid_traffic} cuts fell mid-traffic"
        );
        let all: Vec<u32> = (1..=N).collect();
        let wait = Duration::from_secs(30);
        assert_eq!(
            tokio::time::timeout(wait, at_b).await.unwrap().unwrap().0,
            all
        );
        assert_eq!(
            tokio::time::timeout(wait, at_a).await.unwrap().unwrap().0,
            all
        );
        assert_eq!((a.received(), b.received()), (u64::from(N), u64::from(N)));
    }

    /// samod's connection driver (samod 0.16 `drive_connection`): it reads
    /// what arrives only between its own sends, and awaits each send in
    /// place. Sends `n` numbered messages; returns the numbers received
    /// (and its sending end, still open: dropping it ends the session).
    async fn samod_like(
        mut incoming: Incoming,
        mut out: fmpsc::Sender<Vec<u8>>,
        n: u32,
    ) -> (Vec<u32>, fmpsc::Sender<Vec<u8>>) {
        let (mut got, mut next) = (Vec::new(), 1u32);
        while got.len() < n as usize || next <= n {
            tokio::select! {
                m = incoming.next(), if got.len() < n as usize => {
                    let Some(Ok(m)) = m else { break };
                    got.push(u32::from_be_bytes(m[..4].try_into().unwrap()));
                }
                () = std::future::ready(()), if next <= n => {
                    let mut m = next.to_be_bytes().to_vec();
                    m.resize(30_000, (next % 251) as u8);
                    if out.send(m).await.is_err() {
                        break;
                    }
                    next += 1;
                }
            }
        }
        (got, out)
    }

    /// Heavy traffic both ways between two samod-like drivers: each stops
    /// reading while its send waits, so a session that waited on samod to
    /// deliver (while samod waited on it to take) stalled for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heavy_traffic_both_ways_does_not_deadlock_with_samods_driver() {
        const N: u32 = 400;
        let (device, server) = (
            StaticKeypair::generate().unwrap(),
            StaticKeypair::generate().unwrap(),
        );
        let (a, a_in, a_out) = no_guard();
        let (b, b_in, b_out) = no_guard();
        let (ca, cb, _wire) = linked(&device, &server).await;
        let (a2, b2) = (a.clone(), b.clone());
        let _ta = tokio::spawn(async move { a2.attach(ca, 0).await });
        let _tb = tokio::spawn(async move { b2.attach(cb, 0).await });
        let both = futures::future::join(samod_like(a_in, a_out, N), samod_like(b_in, b_out, N));
        let ((at_a, _), (at_b, _)) = tokio::time::timeout(Duration::from_secs(30), both)
            .await
            .expect("the session deadlocked with samod's driver");
        let all: Vec<u32> = (1..=N).collect();
        assert_eq!((at_a, at_b), (all.clone(), all));
    }

    #[tokio::test]
    async fn an_acknowledgement_of_something_never_sent_ends_the_session() {
        let (device, server) = (
            StaticKeypair::generate().unwrap(),
            StaticKeypair::generate().unwrap(),
        );
        let (a, _a_in, _a_out) = no_guard();
        let (ca, mut cb, _wire) = linked(&device, &server).await;
        let a2 = a.clone();
        let attached = tokio::spawn(async move { a2.attach(ca, 0).await });
        cb.send(&frame(ACK, 0, 5, &[])).await.unwrap();
        assert!(matches!(attached.await.unwrap(), Detached::Ended));
        assert!(a.is_ended());
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let f = frame(DATA, 7, 3, b"hi");
        assert_eq!(parse(&f).unwrap(), (DATA, 7, 3, &b"hi"[..]));
        assert!(parse(&f[..5]).is_err());
        let mut bad = f.clone();
        bad[0] = 9;
        assert!(parse(&bad).is_err());
    }
}
