//! One device connection: accepted, kept alive, upgraded to a WebSocket,
//! the Noise handshake (admitting enrolled devices, enrolling a new one
//! with the token in its hello), then handed to its purpose's route.

use std::sync::Arc;

use scr_core::Store;
use scr_core::channel::{self, Hello, Purpose, hex_key};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::metrics::Metrics;
use super::{Channel, Shared, limits};
use crate::directory::Directory;

/// Accepts until `stopped` changes; each connection's task runs on
/// `connections` (a shutdown waits for those in flight).
pub(super) async fn accept_loop(
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    shared: Arc<Shared>,
    connections: tokio_util::task::TaskTracker,
) {
    loop {
        tokio::select! {
            // The stop first: once it is sent, nothing more is accepted.
            biased;
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else {
                    // Out of descriptors or similar: back off, do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                shared.metrics.connections.inc();
                keep_alive(&tcp);
                let shared = shared.clone();
                connections.spawn(async move {
                    let Some((tcp, peer, place)) = admit_connection(tcp, peer, &shared).await else {
                        return;
                    };
                    let handshaken = match place.turn().await {
                        Some(_turn) => handshake(tcp, &shared).await,
                        None => return,
                    };
                    // Authenticated (or refused): its place goes back.
                    drop(place);
                    match handshaken {
                        Ok((channel, hello)) => {
                            shared.metrics.handshakes_ok.inc();
                            super::routes::route(channel, hello, &shared, peer).await;
                        }
                        Err(reason) => {
                            shared.metrics.handshakes_refused.inc();
                            // The address and the reason only: no keys, no payload.
                            tracing::info!(%peer, %reason, "connection refused");
                        }
                    }
                });
            }
        }
    }
}

/// TCP keepalive and a user timeout, so a device that vanished without
/// closing (a tablet out of signal) frees its session within about 90
/// seconds instead of holding one of its few session slots for minutes or
/// hours.
/// The client's address (from a trusted proxy's PROXY header) and its
/// place among the unauthenticated connections, or `None` (turned away,
/// counted; the connection is closed).
async fn admit_connection(
    mut tcp: TcpStream,
    peer: std::net::SocketAddr,
    shared: &Shared,
) -> Option<(TcpStream, std::net::SocketAddr, limits::Place)> {
    let trusted = &shared.gate.limits().trusted_proxies;
    let client = match limits::client_address(&mut tcp, peer, trusted).await {
        Ok(client) => client,
        Err(reason) => {
            shared.metrics.handshakes_refused.inc();
            tracing::info!(%peer, %reason, "connection refused");
            return None;
        }
    };
    match shared.gate.arrive(client.ip(), scr_core::clock::now_ms()) {
        Ok(place) => Some((tcp, client, place)),
        Err(limits::TurnedAway::Busy) => {
            shared.metrics.connections_turned_away.inc();
            None
        }
        Err(limits::TurnedAway::Rate) => {
            shared.metrics.handshakes_rate_limited.inc();
            None
        }
    }
}

fn keep_alive(tcp: &TcpStream) {
    // Small messages go at once (the handshake's, "admitted" and the
    // session reply back to back): with Nagle on, each second one waited
    // for the device's delayed acknowledgement.
    if tcp.set_nodelay(true).is_err() {
        tracing::warn!("could not turn Nagle off on a connection");
    }
    let params = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(3);
    let socket = socket2::SockRef::from(tcp);
    // Keepalive covers an idle connection; a user timeout covers one that
    // vanished with data unacknowledged (otherwise ~15 minutes of retries).
    if socket.set_tcp_keepalive(&params).is_err()
        || socket
            .set_tcp_user_timeout(Some(std::time::Duration::from_secs(90)))
            .is_err()
    {
        tracing::warn!("could not set TCP keepalive on a connection");
    }
}

/// WebSocket upgrade (frames bounded to one Noise message), then the Noise
/// handshake admitting enrolled devices or enrolling a new one with the
/// token in its hello.
async fn handshake(tcp: TcpStream, shared: &Shared) -> Result<(Channel, Hello), String> {
    // Read in 8 KiB steps (a frame up to the 70 KiB cap still arrives
    // whole, in pieces): tungstenite's default 128 KiB read buffer, kept
    // for every connection's life, was most of a connected tablet's memory.
    let config = WebSocketConfig::default()
        .max_message_size(Some(70 * 1024))
        .max_frame_size(Some(70 * 1024))
        .read_buffer_size(8 * 1024);
    let ws = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_tungstenite::accept_async_with_config(tcp, Some(config)),
    )
    .await
    .map_err(|_| "websocket upgrade timed out".to_owned())?
    .map_err(|e| format!("websocket upgrade: {e}"))?;
    let now = scr_core::clock::now_ms();
    let hello = Arc::new(std::sync::Mutex::new(None));
    let (directory, store, metrics) = (
        shared.directory.clone(),
        shared.store.clone(),
        shared.metrics.clone(),
    );
    let seen_hello = hello.clone();
    let gate = shared.gate.clone();
    // SQLite and hashing: off the async runtime.
    let admit = move |key: [u8; 32], payload: Vec<u8>| async move {
        // A device key handshaking too often is refused before any work.
        if !gate.device_may_handshake(&key, now) {
            metrics.device_handshakes_rate_limited.inc();
            return false;
        }
        tokio::task::spawn_blocking(move || {
            let (admitted, hello) = admit(&directory, &store, &metrics, &key, &payload, now);
            if let Ok(mut h) = seen_hello.lock() {
                *h = hello;
            }
            admitted
        })
        .await
        .unwrap_or(false)
    };
    let channel = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        channel::accept_with(ws, &shared.identity.noise, admit),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let hello = hello
        .lock()
        .ok()
        .and_then(|mut h| h.take())
        .ok_or_else(|| "no hello".to_owned())?;
    Ok((channel, hello))
}

/// Whether the handshake's key may connect: an enrolled, unrevoked device,
/// or a new one presenting a valid enrollment token in its hello. An
/// enrollment commits only after its audit event is written (the directory
/// and the audit trail are two databases: at worst an audit event names an
/// enrollment whose commit then failed).
fn admit(
    directory: &Directory,
    store: &Store,
    metrics: &Metrics,
    key: &[u8; 32],
    payload: &[u8],
    now: i64,
) -> (bool, Option<Hello>) {
    let Some(mut hello) = Hello::decode(payload) else {
        return (false, None);
    };
    let token = hello.enrollment_token.take();
    if directory.is_active(key) {
        return (true, Some(hello));
    }
    // A revoked device may still hand over its audit trail, and nothing else.
    if hello.purpose == Purpose::Audit {
        let known = directory.device(key).ok().flatten().is_some();
        return (known, Some(hello));
    }
    let purpose = Some(hello);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return (false, purpose);
    };
    if directory
        .device(key)
        .ok()
        .flatten()
        .is_some_and(|d| d.revoked)
    {
        return (false, purpose);
    }
    // The audit event is written inside the enrollment's transaction: no
    // audit, no enrollment (and nothing to undo).
    let audit = |device: &crate::directory::Device| {
        let detail = format!(
            "{} {} {}",
            device.organisation,
            device.device_class.as_str(),
            &hex_key(key)[..16]
        );
        crate::audit::record(
            store,
            "server",
            "device-enrolled",
            None,
            scr_core::audit::Outcome::Recorded,
            Some(detail),
        )
        .is_ok()
    };
    let device = match directory.enroll(key, &token, now, audit) {
        Ok(device) => device,
        Err(crate::directory::DirectoryError::NotAudited) => {
            tracing::error!("an enrollment could not be audited; the device is refused");
            return (false, purpose);
        }
        Err(_) => return (false, purpose),
    };
    metrics.enrollments.inc();
    tracing::info!(organisation = %device.organisation, class = device.device_class.as_str(), "device enrolled");
    (true, purpose)
}
