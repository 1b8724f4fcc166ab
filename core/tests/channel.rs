//! The Noise channel over real WebSockets on loopback, with a proxy in the
//! middle that tampers, replays and injects: every attack is refused, and the
//! server keeps serving honest devices. Then two samod repos sync over it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use futures::{SinkExt, StreamExt};
use scr_core::channel::{self, ChannelError, StaticKeypair};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A server that accepts channels and echoes each message back, reporting
/// every connection's outcome.
async fn echo_server(
    keys: Arc<StaticKeypair>,
    enrolled: Vec<[u8; 32]>,
) -> (u16, mpsc::UnboundedReceiver<Result<[u8; 32], ChannelError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (keys, enrolled, tx) = (keys.clone(), enrolled.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                match channel::accept(ws, &keys, |k, _| enrolled.contains(k)).await {
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                    Ok(mut ch) => {
                        let _ = tx.send(Ok(ch.remote_static()));
                        loop {
                            match ch.recv().await {
                                Ok(Some(m)) => {
                                    if ch.send(&m).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => return,
                                Err(e) => {
                                    let _ = tx.send(Err(e));
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

async fn ws_to(
    port: u16,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/sync"))
        .await
        .unwrap();
    ws
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// Flip a bit in the n-th frame the device sends (0 and 1 are handshake).
    Flip(usize),
    /// Send the n-th device frame twice.
    Replay(usize),
    /// Swap device frames n and n+1.
    Swap(usize),
}

/// A WebSocket proxy that applies `fault` to device-to-server frames and
/// records every frame the device sent.
async fn proxy(server_port: u16, fault: Fault) -> (u16, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let device = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let server = ws_to(server_port).await;
        let (mut d_tx, mut d_rx) = device.split();
        let (mut s_tx, mut s_rx) = server.split();
        let up = async move {
            let mut n = 0usize;
            let mut held: Option<Vec<u8>> = None;
            while let Some(Ok(Message::Binary(b))) = d_rx.next().await {
                let mut frame = b.to_vec();
                record.lock().unwrap().push(frame.clone());
                match fault {
                    Fault::Flip(i) if i == n => {
                        let mid = frame.len() / 2;
                        frame[mid] ^= 0x04;
                    }
                    Fault::Replay(i) if i == n => {
                        let _ = s_tx.send(Message::binary(frame.clone())).await;
                    }
                    Fault::Swap(i) if i == n => {
                        held = Some(frame);
                        n += 1;
                        continue;
                    }
                    _ => {}
                }
                if s_tx.send(Message::binary(frame)).await.is_err() {
                    return;
                }
                if let Some(h) = held.take() {
                    let _ = s_tx.send(Message::binary(h)).await;
                }
                n += 1;
            }
        };
        let down = async move {
            while let Some(Ok(m)) = s_rx.next().await {
                if d_tx.send(m).await.is_err() {
                    return;
                }
            }
        };
        tokio::join!(up, down);
    });
    (port, seen)
}

struct Keys {
    server: Arc<StaticKeypair>,
    device: StaticKeypair,
}

fn keys() -> Keys {
    Keys {
        server: Arc::new(StaticKeypair::generate().unwrap()),
        device: StaticKeypair::generate().unwrap(),
    }
}

async fn next_outcome(
    rx: &mut mpsc::UnboundedReceiver<Result<[u8; 32], ChannelError>>,
) -> Result<[u8; 32], ChannelError> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn messages_of_any_size_round_trip_between_proven_keys() {
    let k = keys();
    let (port, mut outcomes) = echo_server(k.server.clone(), vec![k.device.public()]).await;
    let mut ch = channel::connect(ws_to(port).await, &k.device, &k.server.public(), &[])
        .await
        .unwrap();
    assert_eq!(ch.remote_static(), k.server.public());
    assert_eq!(next_outcome(&mut outcomes).await, Ok(k.device.public()));
    for size in [0usize, 1, 65_518, 65_519, 200_000, 1_000_003] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ch.send(&msg).await.unwrap();
        assert_eq!(ch.recv().await.unwrap().unwrap(), msg, "size {size}");
    }
}

#[tokio::test]
async fn a_server_without_the_pinned_key_is_refused_before_the_device_identifies_itself() {
    let k = keys();
    let impostor = StaticKeypair::generate().unwrap();
    let (port, mut outcomes) = echo_server(k.server.clone(), vec![k.device.public()]).await;
    let got = channel::connect(ws_to(port).await, &k.device, &impostor.public(), &[]).await;
    assert_eq!(got.err(), Some(ChannelError::ServerKeyMismatch));
    // The server never completed a handshake with this device.
    assert!(next_outcome(&mut outcomes).await.is_err());
}

#[tokio::test]
async fn an_unenrolled_device_is_refused_and_others_are_still_served() {
    let k = keys();
    let stranger = StaticKeypair::generate().unwrap();
    let (port, mut outcomes) = echo_server(k.server.clone(), vec![k.device.public()]).await;
    // The device learns it was not admitted (not a network error), and
    // receives nothing.
    let refused = channel::connect(ws_to(port).await, &stranger, &k.server.public(), &[]).await;
    assert_eq!(refused.err(), Some(ChannelError::NotAdmitted));
    assert_eq!(
        next_outcome(&mut outcomes).await,
        Err(ChannelError::UnknownPeer)
    );
    let mut good = channel::connect(ws_to(port).await, &k.device, &k.server.public(), &[])
        .await
        .unwrap();
    good.send(b"still here").await.unwrap();
    assert_eq!(good.recv().await.unwrap().unwrap(), b"still here");
}

async fn attacked(fault: Fault) -> ChannelError {
    let k = keys();
    let (server_port, mut outcomes) = echo_server(k.server.clone(), vec![k.device.public()]).await;
    let (proxy_port, _) = proxy(server_port, fault).await;
    let mut ch = channel::connect(ws_to(proxy_port).await, &k.device, &k.server.public(), &[])
        .await
        .unwrap();
    assert!(next_outcome(&mut outcomes).await.is_ok());
    for i in 0..3u8 {
        let _ = ch.send(&[i; 100]).await;
    }
    next_outcome(&mut outcomes).await.unwrap_err()
}

#[tokio::test]
async fn a_tampered_frame_closes_the_channel() {
    assert_eq!(attacked(Fault::Flip(2)).await, ChannelError::Decrypt);
}

#[tokio::test]
async fn a_replayed_frame_closes_the_channel() {
    assert_eq!(attacked(Fault::Replay(2)).await, ChannelError::Decrypt);
}

#[tokio::test]
async fn reordered_frames_close_the_channel() {
    assert_eq!(attacked(Fault::Swap(2)).await, ChannelError::Decrypt);
}

#[tokio::test]
async fn a_replayed_handshake_does_not_open_a_session() {
    let k = keys();
    let (server_port, mut outcomes) = echo_server(k.server.clone(), vec![k.device.public()]).await;
    let (proxy_port, seen) = proxy(server_port, Fault::None).await;
    let mut ch = channel::connect(ws_to(proxy_port).await, &k.device, &k.server.public(), &[])
        .await
        .unwrap();
    assert!(next_outcome(&mut outcomes).await.is_ok());
    ch.send(b"hello").await.unwrap();
    ch.recv().await.unwrap();
    let recorded = seen.lock().unwrap().clone();
    // An eavesdropper replays the device's handshake frames in a new connection.
    let mut raw = ws_to(server_port).await;
    for frame in recorded.iter().take(2) {
        raw.send(Message::binary(frame.clone())).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(200), raw.next()).await;
    }
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(ChannelError::Handshake(_))
    ));
}

#[tokio::test]
async fn garbage_and_oversized_frames_are_refused_and_the_server_keeps_serving() {
    let k = keys();
    let (port, mut outcomes) = echo_server(k.server.clone(), vec![k.device.public()]).await;
    let mut raw = ws_to(port).await;
    raw.send(Message::binary(vec![0xAB; 7])).await.unwrap();
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(ChannelError::Handshake(_))
    ));
    let mut raw = ws_to(port).await;
    raw.send(Message::binary(vec![0u8; 70_000])).await.unwrap();
    assert_eq!(
        next_outcome(&mut outcomes).await,
        Err(ChannelError::Oversized { limit: 65_535 })
    );
    let mut raw = ws_to(port).await;
    raw.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        next_outcome(&mut outcomes).await,
        Err(ChannelError::Malformed("text frame"))
    );
    let mut good = channel::connect(ws_to(port).await, &k.device, &k.server.public(), &[])
        .await
        .unwrap();
    assert!(next_outcome(&mut outcomes).await.is_ok());
    good.send(b"ok").await.unwrap();
    assert_eq!(good.recv().await.unwrap().unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_samod_repos_sync_a_document_over_the_noise_channel() {
    let k = keys();
    let device = Arc::new(k.device);
    let server_repo = samod::Repo::build_tokio()
        .with_peer_id(samod::PeerId::from(channel::hex_key(&k.server.public())))
        .load()
        .await;
    let acceptor = server_repo
        .make_acceptor(samod::Url::parse("ws://scr.test/sync").unwrap())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (server_keys, enrolled) = (k.server.clone(), device.public());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            // The server's half of a sync session (ADR 0005), as scr-server runs it.
            if let Ok(mut ch) = channel::accept(ws, &server_keys, |key, _| *key == enrolled).await {
                let reply = channel::SessionReply::Opened {
                    id: "00".repeat(16),
                    asks: false,
                };
                ch.send(&reply.encode()).await.unwrap();
                let (session, transport) = channel::Session::open(
                    ch.remote_static(),
                    Arc::default(),
                    Box::new(()),
                    Box::new(|_| true),
                );
                let _ = acceptor.accept(transport);
                tokio::spawn(async move { session.attach(ch, 0).await });
            }
        }
    });

    let device_repo = samod::Repo::build_tokio()
        .with_peer_id(samod::PeerId::from(channel::hex_key(&device.public())))
        .load()
        .await;
    let dialer = device_repo
        .dial(
            samod::BackoffConfig::default(),
            Arc::new(
                scr_core::sync::NoiseDialer::new(
                    &format!("ws://127.0.0.1:{port}/sync"),
                    device,
                    k.server.public(),
                )
                .unwrap(),
            ),
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), dialer.established())
        .await
        .unwrap()
        .unwrap();

    let mut doc = automerge::Automerge::new();
    let mut tx = doc.transaction();
    tx.put(automerge::ROOT, "visit", "dressing changed")
        .unwrap();
    tx.commit();
    let handle = device_repo.create(doc).await.unwrap();
    let id = handle.document_id().clone();

    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Some(h)) = server_repo.find(id.clone()).await {
                let value = h.with_document(|d| {
                    use automerge::ReadDoc;
                    d.get(automerge::ROOT, "visit")
                        .unwrap()
                        .and_then(|(v, _)| v.as_str().map(str::to_owned))
                });
                if value.is_some() {
                    return value;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(found.as_deref(), Some("dressing changed"));
    device_repo.stop().await;
    server_repo.stop().await;
}
