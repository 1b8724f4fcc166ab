//! How the device reaches the server: a fresh WebSocket and Noise handshake
//! on every (re)connect, pinned to the server's key. samod's dialer retries
//! with exponential backoff and jitter; every failure here is transient
//! (a revoked device keeps retrying at the capped delay and shows why).

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::channel::{self, ChannelError, Hello, Purpose, StaticKeypair};

pub struct NoiseDialer {
    url: samod::Url,
    keys: Arc<StaticKeypair>,
    server_key: [u8; 32],
    /// The enrollment token, on the first contact only.
    token: Option<String>,
    /// Why the last attempt failed, for the app's sync state.
    last_error: Arc<Mutex<Option<String>>>,
}

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
        })
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
        let (url, keys, server_key, token, last_error) = (
            self.url.to_string(),
            self.keys.clone(),
            self.server_key,
            self.token.clone(),
            self.last_error.clone(),
        );
        Box::pin(async move {
            // samod puts no deadline on a dial: a stalled server must not
            // leave the device connecting forever.
            let slot = last_error.clone();
            match tokio::time::timeout(
                CONNECT_TIMEOUT,
                dial(url, keys, server_key, token, last_error),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => {
                    note(&slot, Some("the server did not answer in time".into()));
                    Err(samod::DialError::transient(ChannelError::Closed))
                }
            }
        })
    }
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

async fn dial(
    url: String,
    keys: Arc<StaticKeypair>,
    server_key: [u8; 32],
    token: Option<String>,
    last_error: Arc<Mutex<Option<String>>>,
) -> Result<samod::transport::Transport, samod::DialError<ChannelError>> {
    let ws = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            note(&last_error, Some("the server cannot be reached".into()));
            return Err(samod::DialError::transient(e));
        }
    };
    let hello = Hello::new(Purpose::Sync, token.as_deref()).encode();
    match channel::connect(ws, &keys, &server_key, &hello).await {
        Ok(ch) => {
            note(&last_error, None);
            Ok(channel::into_samod_transport(ch))
        }
        Err(e) => {
            note(
                &last_error,
                Some(format!("the server refused the connection: {e}")),
            );
            Err(samod::DialError::transient(e))
        }
    }
}
