//! The channel as a samod `Transport`: a stream of whole incoming messages
//! and a sink of outgoing ones, bound to the peer the handshake proved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use samod::PeerId;
use samod::transport::Transport;
use tokio_tungstenite::tungstenite::Message;

use super::{
    Assembler, ChannelError, NoiseChannel, WebSocket, encrypt_message, hex_key, recv_frame,
};

/// Bytes carried by sync sessions (message payloads, before encryption),
/// for the server's metrics.
#[derive(Default)]
pub struct Traffic {
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

/// Sees every incoming message before samod does, and says whether to pass
/// it on (the server's guard and push check).
pub type Inspector = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Sees every message samod sends on a session, before it goes out (the
/// server's log of which documents it sent each device).
pub type Observer = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Sees every message the inspector passed, in order, on samod's side of
/// the session, and may take its time (read the document the message is
/// for): it answers the message to hand to samod, or `None` to drop it.
/// The server's check of pushed changes against the record's rules.
pub type Gate =
    Arc<dyn Fn(Vec<u8>) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> + Send + Sync>;

/// Hands the channel to samod. The transport only accepts samod messages
/// from the peer whose static key the handshake proved (`with_expected_peer_id`),
/// so a device cannot speak as another.
pub fn into_samod_transport<S: WebSocket>(channel: NoiseChannel<S>) -> Transport {
    into_counted_transport(channel, Arc::default(), Box::new(()), Box::new(|_| true))
}

/// [`into_samod_transport`], counting bytes into `traffic`, showing every
/// incoming message to `inspect` (which may drop it), and holding `session` until the connection ends (its `Drop` is
/// how the caller learns that: an open-sessions gauge, a per-device cap).
pub fn into_counted_transport<S: WebSocket>(
    channel: NoiseChannel<S>,
    traffic: Arc<Traffic>,
    session: Box<dyn Send + Sync>,
    inspect: Inspector,
) -> Transport {
    let (ws, noise, remote) = channel.into_parts();
    let (sink, stream) = ws.split();
    let noise = Arc::new(Mutex::new(noise));

    let reader_noise = noise.clone();
    let writer_traffic = traffic.clone();
    let incoming = futures::stream::unfold(
        (
            stream,
            reader_noise,
            Assembler::default(),
            (traffic, session, inspect),
        ),
        |(mut stream, noise, mut assembler, counted)| async move {
            loop {
                let frame = match recv_frame(&mut stream).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), (stream, noise, assembler, counted))),
                };
                let pushed = match noise.lock() {
                    Ok(mut n) => assembler.push(&mut n, &frame),
                    Err(_) => Err(ChannelError::Malformed("poisoned")),
                };
                match pushed {
                    Ok(Some(message)) => {
                        counted
                            .0
                            .received
                            .fetch_add(message.len() as u64, Ordering::Relaxed);
                        if !(counted.2)(&message) {
                            continue;
                        }
                        return Some((Ok(message), (stream, noise, assembler, counted)));
                    }
                    Ok(None) => continue,
                    Err(e) => return Some((Err(e), (stream, noise, assembler, counted))),
                }
            }
        },
    );

    let outgoing = sink.with_flat_map(move |message: Vec<u8>| {
        writer_traffic
            .sent
            .fetch_add(message.len() as u64, Ordering::Relaxed);
        let frames = match noise.lock() {
            Ok(mut n) => encrypt_message(&mut n, &message),
            Err(_) => Err(ChannelError::Malformed("poisoned")),
        };
        let items: Vec<Result<Message, tokio_tungstenite::tungstenite::Error>> = match frames {
            Ok(frames) => frames.into_iter().map(|f| Ok(Message::binary(f))).collect(),
            // An oversized outgoing message cannot be sent: close rather
            // than drop it silently.
            Err(_) => vec![Ok(Message::Close(None))],
        };
        futures::stream::iter(items)
    });

    Transport::new(Box::pin(incoming), Box::pin(outgoing))
        .with_expected_peer_id(PeerId::from(hex_key(&remote)))
}
