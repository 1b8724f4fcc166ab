//! The one request of a one-shot exchange on an authenticated channel
//! (login, audit upload, access log, encounter): it must come soon after
//! the handshake, or the connection is dropped.

use scr_core::channel::{NoiseChannel, WebSocket};

/// How long a device has to send its request once the handshake is done.
pub const REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The request; `what` names it in the error.
pub async fn one_request<S: WebSocket>(
    channel: &mut NoiseChannel<S>,
    what: &str,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(REQUEST_WAIT, channel.recv())
        .await
        .map_err(|_| format!("no {what} arrived"))?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("closed before the {what}"))
}
