//! One request and one reply on a fresh channel: how a device asks the
//! server for its holdings list, a patient's access log, or an encounter.

use crate::channel::{self, ChannelError, Hello, Purpose, StaticKeypair};

/// Dials `url`, runs the handshake with `purpose`, sends `request` (if
/// any) and returns the server's one reply.
pub async fn one_shot(
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
    purpose: Purpose,
    request: Option<&[u8]>,
) -> Result<Vec<u8>, ChannelError> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| ChannelError::Io(e.to_string()))?;
    let hello = Hello::new(purpose, None).encode();
    let mut ch = channel::connect(ws, keys, server_key, &hello).await?;
    if let Some(body) = request {
        ch.send(body).await?;
    }
    ch.recv().await?.ok_or(ChannelError::Closed)
}
