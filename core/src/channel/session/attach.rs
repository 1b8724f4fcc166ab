//! Attaching a session to a connection: replay, then the loop that carries
//! samod's messages, acknowledgements and heartbeats until the connection
//! is lost, replaced or the session ends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc as fmpsc;
use tokio::sync::mpsc;

use super::connection::{AbortOnDrop, WRITE_AHEAD, Writer, read_messages};
use super::frame::{ACK, DATA, END, frame};
use super::state::{Detached, Session};
use crate::channel::{ChannelError, NoiseChannel, WebSocket};

/// Silence after which a connection counts as lost (heartbeats are sent
/// more often), so a half-open TCP connection is noticed in seconds.
const SILENCE: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(10);
const ACK_TICK: Duration = Duration::from_millis(200);

impl Session {
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
        let mut side = self.side_rx.lock().await;
        if self.is_ended() {
            // Ended before this connection carried it (a server shutting
            // down just after the session reply): still say goodbye.
            if self.goodbye.load(Ordering::SeqCst) {
                let mut channel = channel;
                let end = frame(END, 0, 0, &[]);
                let _ = tokio::time::timeout(Duration::from_secs(1), channel.send(&end)).await;
            }
            return Detached::Ended;
        }
        self.attached.store(true, Ordering::SeqCst);
        let result = self
            .run(
                channel,
                peer_received,
                generation,
                (&mut from_samod, &mut side),
            )
            .await;
        self.attached.store(false, Ordering::SeqCst);
        result
    }

    async fn run<S: WebSocket>(
        self: &Arc<Self>,
        channel: NoiseChannel<S>,
        peer_received: u64,
        generation: u64,
        (from_samod, side): (
            &mut fmpsc::Receiver<Vec<u8>>,
            &mut mpsc::UnboundedReceiver<super::side::SideFrame>,
        ),
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
                _ = async { let _ = ended.wait_for(|e| *e).await; } => {
                    if self.goodbye.load(Ordering::SeqCst) {
                        let _ = queue.put(frame(END, 0, 0, &[]));
                    }
                    break Detached::Ended;
                }
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
                // Asks and answers wait like samod's messages while the
                // writer is behind: a peer that asks and never reads gets
                // nothing more queued for it.
                Some((kind, seq, payload)) = side.recv(), if queue.pending() < WRITE_AHEAD => {
                    if kind == super::frame::ANSWER {
                        // Only now may the peer ask again (sent, or lost
                        // with this connection: asked again either way).
                        self.answered();
                    } else if !self.still_asking(seq) {
                        // Its asker gave up while it waited here: sent now,
                        // it would arrive while a newer ask is answered.
                        continue;
                    }
                    self.traffic.sent.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    let ack = self.ack_now();
                    if queue.put(frame(kind, seq, ack, &payload)).is_err() {
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
}
