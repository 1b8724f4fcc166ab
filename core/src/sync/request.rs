//! One request and one reply on a fresh channel: how a device logs in and
//! asks the server for its holdings list, a patient's access log, or an
//! encounter.

use crate::channel::{self, ChannelError, Hello, Purpose, StaticKeypair, WebSocket};
use crate::protocol::{LoginRequest, LoginResponse};

/// Dials `url`, runs the handshake with `purpose`, sends `request` (if
/// any) and returns the server's one reply.
pub async fn one_shot(
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
    purpose: Purpose,
    request: Option<&[u8]>,
) -> Result<Vec<u8>, ChannelError> {
    let ws = crate::channel::open_websocket(url)
        .await
        .map_err(|e| ChannelError::Io(e.to_string()))?;
    let hello = Hello::new(purpose, None).encode();
    let mut ch = channel::connect(ws, keys, server_key, &hello).await?;
    if let Some(body) = request {
        ch.send(body).await?;
    }
    ch.recv().await?.ok_or(ChannelError::Closed)
}

/// Logs in online over a fresh channel: one request, one response.
pub async fn login<S: WebSocket>(
    ws: S,
    local: &StaticKeypair,
    pinned_server: &[u8; 32],
    request: &LoginRequest,
) -> Result<LoginResponse, ChannelError> {
    let hello = Hello::new(Purpose::Login, None).encode();
    let mut channel = channel::connect(ws, local, pinned_server, &hello).await?;
    let body = serde_json::to_vec(request).map_err(|_| ChannelError::Malformed("login request"))?;
    channel.send(&body).await?;
    let reply = channel.recv().await?.ok_or(ChannelError::Closed)?;
    serde_json::from_slice(&reply).map_err(|_| ChannelError::Malformed("login response"))
}

/// Tells the server the device's user logged out: it retires the grant it
/// issued to this device. `Ok` once the server says so.
pub async fn retire_grant(
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
) -> Result<(), ChannelError> {
    let reply = one_shot(url, keys, server_key, Purpose::Logout, None).await?;
    if reply == b"retired" {
        Ok(())
    } else {
        Err(ChannelError::Malformed("logout reply"))
    }
}
