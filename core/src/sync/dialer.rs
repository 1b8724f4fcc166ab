//! How the device reaches the server: a WebSocket and a Noise handshake
//! pinned to the server's key, carrying a sync session that outlives the
//! connection (ADR 0005). samod's dialer opens sessions, with exponential
//! backoff and jitter; when a connection drops, the session's keeper dials
//! again and resumes it, so samod keeps every document's sync state. Every
//! failure is transient to samod (a revoked device keeps retrying at the
//! capped delay and shows why).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::channel::{
    self, ChannelError, Detached, Hello, Purpose, RESUME_WINDOW, Session, SessionReply,
    StaticKeypair,
};

/// Whether a session is carried by a live connection now, and how many
/// times its keeper has tried to resume it since the last one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub attached: bool,
    pub attempt: u32,
}

pub struct NoiseDialer {
    url: samod::Url,
    keys: Arc<StaticKeypair>,
    server_key: [u8; 32],
    /// The enrollment token, on the first contact only.
    token: Option<String>,
    /// Why the last attempt failed, for the app's sync state.
    last_error: Arc<Mutex<Option<String>>>,
    link: Arc<watch::Sender<Link>>,
    /// The server refused this device at its last attempt (revoked, or
    /// not enrolled).
    refused: Arc<AtomicBool>,
    /// What the device checks of what it receives, before samod merges it.
    gate: Option<crate::channel::Gate>,
    /// The current session, when its server answers asks (the catalogue).
    asker: Asker,
}

/// The session the driver asks the catalogue on, if the server answers.
pub type Asker = Arc<Mutex<Option<Arc<Session>>>>;
impl NoiseDialer {
    /// `url`: the server's sync endpoint, `ws://host:port/sync`.
    pub fn new(
        url: &str,
        keys: Arc<StaticKeypair>,
        server_key: [u8; 32],
    ) -> Result<Self, super::SyncError> {
        let url = samod::Url::parse(url).map_err(|_| super::SyncError::BadServerUrl)?;
        if url.scheme() != "ws" && url.scheme() != "wss" {
            return Err(super::SyncError::BadServerUrl);
        }
        Ok(Self {
            url,
            keys,
            server_key,
            token: None,
            last_error: Arc::new(Mutex::new(None)),
            link: Arc::new(watch::channel(Link::default()).0),
            refused: Arc::default(),
            gate: None,
            asker: Arc::default(),
        })
    }

    /// Every message of the sessions it opens goes through `gate` before
    /// samod reads it (`sync::received`).
    pub(super) fn with_gate(mut self, gate: crate::channel::Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Presents an enrollment token in the hello (first contact).
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Shared view of the last failure (cleared on success).
    pub fn last_error(&self) -> Arc<Mutex<Option<String>>> {
        self.last_error.clone()
    }

    /// Whether the server refused the device at its last attempt.
    pub fn refused(&self) -> Arc<AtomicBool> {
        self.refused.clone()
    }

    /// The current session, while its server answers asks.
    pub fn asker(&self) -> Asker {
        self.asker.clone()
    }

    /// Whether the current session has a live connection.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }
}

fn note(slot: &Mutex<Option<String>>, error: Option<String>) {
    if let Ok(mut s) = slot.lock() {
        *s = error;
    }
}

impl samod::Dialer for NoiseDialer {
    type Error = ChannelError;

    fn url(&self) -> samod::Url {
        self.url.clone()
    }

    fn connect(
        &self,
    ) -> BoxFuture<'static, Result<samod::transport::Transport, samod::DialError<ChannelError>>>
    {
        let dial = Dial {
            url: self.url.to_string(),
            keys: self.keys.clone(),
            server_key: self.server_key,
            last_error: self.last_error.clone(),
            refused: self.refused.clone(),
        };
        let (token, link, gate) = (self.token.clone(), self.link.clone(), self.gate.clone());
        let asker = self.asker.clone();
        Box::pin(async move {
            // samod puts no deadline on a dial: a stalled server must not
            // leave the device connecting forever.
            let hello = Hello::new(Purpose::Sync, token.as_deref());
            let (channel, reply) = dial
                .connect(&hello)
                .await
                .map_err(samod::DialError::transient)?;
            let SessionReply::Opened { id, asks } = reply else {
                dial.failed("the server did not open a session");
                return Err(samod::DialError::transient(ChannelError::Malformed(
                    "session reply",
                )));
            };
            let Some(id) = channel::from_hex(&id) else {
                return Err(samod::DialError::transient(ChannelError::Malformed(
                    "session id",
                )));
            };
            let (session, transport) = match gate {
                Some(gate) => Session::open_gated(
                    channel.remote_static(),
                    Arc::default(),
                    Box::new(()),
                    Box::new(|_| true),
                    gate,
                ),
                None => Session::open(
                    channel.remote_static(),
                    Arc::default(),
                    Box::new(()),
                    Box::new(|_| true),
                ),
            };
            if let Ok(mut a) = asker.lock() {
                *a = asks.then(|| session.clone());
            }
            set(
                &link,
                Link {
                    attached: true,
                    attempt: 0,
                },
            );
            tokio::spawn(keep(session, channel, id, dial, link));
            Ok(transport)
        })
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

type Channel = channel::NoiseChannel<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// What it takes to dial the server.
struct Dial {
    url: String,
    keys: Arc<StaticKeypair>,
    server_key: [u8; 32],
    last_error: Arc<Mutex<Option<String>>>,
    refused: Arc<AtomicBool>,
}

impl Dial {
    fn failed(&self, why: &str) {
        note(&self.last_error, Some(why.to_owned()));
    }

    /// WebSocket, handshake with `hello`, and the server's session reply,
    /// within [`CONNECT_TIMEOUT`] (samod puts no deadline on a dial).
    async fn connect(&self, hello: &Hello) -> Result<(Channel, SessionReply), ChannelError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_now(hello)).await {
            Ok(result) => result,
            Err(_) => {
                self.failed("the server did not answer in time");
                Err(ChannelError::Closed)
            }
        }
    }

    async fn connect_now(&self, hello: &Hello) -> Result<(Channel, SessionReply), ChannelError> {
        let ws = match crate::channel::open_websocket(self.url.as_str()).await {
            Ok(ws) => ws,
            Err(e) => {
                self.failed("the server cannot be reached");
                return Err(ChannelError::Io(e.to_string()));
            }
        };
        let mut channel =
            match channel::connect(ws, &self.keys, &self.server_key, &hello.encode()).await {
                Ok(ch) => ch,
                Err(e) => {
                    self.failed(&format!("the server refused the connection: {e}"));
                    self.refused
                        .store(e == ChannelError::NotAdmitted, Ordering::SeqCst);
                    return Err(e);
                }
            };
        self.refused.store(false, Ordering::SeqCst);
        let reply = channel.recv().await?.ok_or(ChannelError::Closed)?;
        let reply = SessionReply::decode(&reply)?;
        note(&self.last_error, None);
        Ok((channel, reply))
    }
}

/// Keeps a session connected: runs it over the current connection, and
/// when that drops dials again (jittered backoff) and resumes it. Ends the
/// session, so samod opens a fresh one, when the server no longer knows it,
/// refuses the device, or the resume window passes.
async fn keep(
    session: Arc<Session>,
    mut channel: Channel,
    id: Vec<u8>,
    dial: Dial,
    link: Arc<watch::Sender<Link>>,
) {
    let mut peer_received = 0;
    loop {
        set(
            &link,
            Link {
                attached: true,
                attempt: 0,
            },
        );
        if let Detached::Ended = session.attach(channel, peer_received).await {
            break;
        }
        let lost_at = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        let resumed = loop {
            set(
                &link,
                Link {
                    attached: false,
                    attempt,
                },
            );
            if session.is_ended() || lost_at.elapsed() > RESUME_WINDOW {
                break None;
            }
            let hello = Hello::resuming(&id, session.received());
            match dial.connect(&hello).await {
                Ok((ch, SessionReply::Resumed { received })) => break Some((ch, received)),
                Ok(_) | Err(ChannelError::NotAdmitted) => break None,
                Err(_) => {}
            }
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(super::backoff::jittered(delay)) => {}
                _ = session.ended() => break None,
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        };
        match resumed {
            Some((ch, received)) => {
                channel = ch;
                peer_received = received;
            }
            None => break,
        }
    }
    session.end();
    set(&link, Link::default());
}

/// Publishes a change of link, and only a change (each wakes the driver).
fn set(link: &watch::Sender<Link>, value: Link) {
    link.send_if_modified(|l| {
        let changed = *l != value;
        *l = value;
        changed
    });
}
