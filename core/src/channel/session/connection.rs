//! An attached connection's two halves as tasks: the writer fed by a
//! queue, and the reader that decrypts and reassembles.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::SinkExt;
use snow::TransportState;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::channel::{Assembler, ChannelError, WebSocket, encrypt_message, recv_frame};

/// Bytes queued for the writer past which samod is not read from.
pub(super) const WRITE_AHEAD: usize = 1024 * 1024;

/// The writing half of an attached connection, as a task fed by a queue.
pub(super) struct Writer(pub(super) tokio::task::JoinHandle<Result<(), ChannelError>>);

/// Frames for the writer, and how many bytes of them wait.
pub(super) struct WriteQueue {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Signalled when the writer brings `pending` under [`WRITE_AHEAD`]
    /// (a stored permit: a signal before the wait is not lost).
    pub(super) drained: Arc<tokio::sync::Notify>,
}

impl WriteQueue {
    pub(super) fn put(&self, frame: Vec<u8>) -> Result<(), ChannelError> {
        self.pending.fetch_add(frame.len(), Ordering::SeqCst);
        self.tx.send(frame).map_err(|_| ChannelError::Closed)
    }

    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

impl Writer {
    pub(super) fn start<S: WebSocket>(
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

pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

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
pub(super) async fn read_messages<S: WebSocket>(
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
