//! The [`Session`] itself: samod's transport, its window, and what arrives
//! from the peer, across whichever connection carries it.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc as fmpsc;
use futures::{SinkExt, StreamExt};
use samod::PeerId;
use samod::transport::Transport;
use tokio::sync::watch;

use super::frame::{ACK, DATA, END, parse};
use super::window::{Arrival, Window};
use crate::channel::{ChannelError, Gate, Inspector, Observer, Traffic, hex_key};

/// Bytes delivered to samod and not yet read by it. Delivery never waits
/// (see [`Session::take_in`]); a peer that keeps sending this much more
/// than samod reads, while not reading what we send, is cut off.
const MAX_QUEUED_FOR_SAMOD: usize = 16 * 1024 * 1024;

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

/// What samod reads from a session: ends when the session does.
pub(super) type Incoming = futures::stream::TakeUntil<
    futures::stream::BoxStream<'static, Result<Vec<u8>, ChannelError>>,
    Pin<Box<dyn Future<Output = ()> + Send>>,
>;

/// A sync session: samod's transport on one side, whichever connection is
/// current on the other.
pub struct Session {
    pub(super) window: Mutex<Window>,
    pub(super) to_samod: fmpsc::UnboundedSender<Result<Vec<u8>, ChannelError>>,
    /// Bytes in `to_samod` that samod has not read yet.
    queued_for_samod: Arc<AtomicUsize>,
    /// Held by the attached connection for as long as it runs.
    pub(super) from_samod: tokio::sync::Mutex<fmpsc::Receiver<Vec<u8>>>,
    pub(super) ended: watch::Sender<bool>,
    /// Set once samod dropped its end (see [`Session::is_released`]).
    released: Arc<watch::Sender<bool>>,
    /// The session was ended with [`Session::end_saying_goodbye`]: the
    /// attached connection sends an END before it closes.
    pub(super) goodbye: std::sync::atomic::AtomicBool,
    /// Bumped by every attach; a running attachment that sees it move
    /// knows it was replaced.
    pub(super) generation: watch::Sender<u64>,
    pub(super) traffic: Arc<Traffic>,
    inspect: Inspector,
    /// The caller's token for an open session (the server's per-device
    /// count), dropped the moment the session ends.
    guard: Mutex<Option<Box<dyn Send + Sync>>>,
    pub(super) attached: std::sync::atomic::AtomicBool,
    /// Asks and answers beside samod's stream (`asks`).
    pub(super) asks: Arc<Mutex<super::side::Asks>>,
    pub(super) side_tx: tokio::sync::mpsc::UnboundedSender<super::side::SideFrame>,
    /// Held by the attached connection, as `from_samod` is.
    pub(super) side_rx:
        tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<super::side::SideFrame>>,
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

    /// [`Session::open`], with every message the inspector passed going
    /// through `gate`, in order, before samod reads it.
    pub fn open_gated(
        remote: [u8; 32],
        traffic: Arc<Traffic>,
        guard: Box<dyn Send + Sync>,
        inspect: Inspector,
        gate: Gate,
    ) -> (Arc<Self>, Transport) {
        let parts = Self::open_parts(traffic, guard, inspect);
        Self::gated(remote, parts, gate, Box::new(|_| {}))
    }

    /// [`Session::open_gated`], with every message samod sends seen by
    /// `sent` first (the server's log of what it sent each device).
    pub fn open_observed(
        remote: [u8; 32],
        traffic: Arc<Traffic>,
        guard: Box<dyn Send + Sync>,
        (inspect, gate): (Inspector, Gate),
        sent: Observer,
    ) -> (Arc<Self>, Transport) {
        let parts = Self::open_parts(traffic, guard, inspect);
        Self::gated(remote, parts, gate, sent)
    }

    fn gated(
        remote: [u8; 32],
        (session, incoming, outgoing): (Arc<Self>, Incoming, fmpsc::Sender<Vec<u8>>),
        gate: Gate,
        sent: Observer,
    ) -> (Arc<Self>, Transport) {
        let outgoing = outgoing.with(move |m: Vec<u8>| {
            sent(&m);
            futures::future::ready(Ok::<_, fmpsc::SendError>(m))
        });
        let gated = incoming
            .then(move |message| {
                let gate = gate.clone();
                async move {
                    match message {
                        Ok(bytes) => gate(bytes).await.map(Ok),
                        Err(e) => Some(Err(e)),
                    }
                }
            })
            .filter_map(futures::future::ready)
            .boxed();
        let transport =
            Transport::new(gated, outgoing).with_expected_peer_id(PeerId::from(hex_key(&remote)));
        (session, transport)
    }

    /// The session and samod's two ends of it: what arrives, and where
    /// samod puts what it sends.
    pub(super) fn open_parts(
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
        let released = Arc::new(watch::channel(false).0);
        // Dropped with samod's end of the stream: wakes whoever waits for
        // the release without polling.
        let on_release = Released(released.clone());
        let incoming = incoming
            .inspect(move |m: &Result<Vec<u8>, ChannelError>| {
                let _ = &on_release;
                if let Ok(m) = m {
                    read.fetch_sub(m.len(), Ordering::SeqCst);
                }
            })
            .boxed();
        let (outgoing, from_samod) = fmpsc::channel(64);
        let (ended, mut ended_rx) = watch::channel(false);
        let (side_tx, side_rx) = super::side::side_queue();
        let session = Arc::new(Self {
            window: Mutex::default(),
            to_samod,
            queued_for_samod,
            from_samod: tokio::sync::Mutex::new(from_samod),
            ended,
            released,
            goodbye: Default::default(),
            generation: watch::channel(0).0,
            traffic,
            inspect,
            guard: Mutex::new(Some(guard)),
            attached: Default::default(),
            asks: Arc::default(),
            side_tx,
            side_rx: tokio::sync::Mutex::new(side_rx),
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
        self.to_samod.is_closed() || *self.released.borrow()
    }

    /// Resolves once samod has let go of its end.
    pub async fn released(&self) {
        let mut rx = self.released.subscribe();
        if self.to_samod.is_closed() {
            return;
        }
        let _ = rx.wait_for(|r| *r).await;
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

    /// Ends the session and tells the peer so on the attached connection
    /// (an END frame), instead of leaving it to find the connection gone:
    /// a server shutting down. The peer then opens a fresh session, at
    /// once and wherever its address leads, rather than trying to resume
    /// this one, which lived in the ending process's memory.
    pub fn end_saying_goodbye(&self) {
        self.goodbye.store(true, Ordering::SeqCst);
        self.end();
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

    pub(super) fn ended_now(&self) -> Detached {
        self.end();
        Detached::Ended
    }

    /// The acknowledgement to put on a frame being sent now.
    pub(super) fn ack_now(&self) -> u64 {
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
    pub(super) fn take_in(&self, bytes: &[u8]) -> Result<(), ChannelError> {
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
            (kind == DATA).then(|| w.arrived(seq))
        };
        let Some(arrival) = arrival else {
            return self.take_side(kind, seq, payload);
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

/// Marks the session released when samod drops its end of the stream.
struct Released(Arc<watch::Sender<bool>>);

impl Drop for Released {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}
