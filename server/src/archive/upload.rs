//! One audit upload request on an authenticated channel: the batch is
//! stored before the acknowledgement goes out, so a device never releases
//! an event the server does not hold.

use std::sync::Arc;

use scr_core::channel::{NoiseChannel, WebSocket};
use scr_core::protocol::{AuditAck, AuditReply, AuditUpload};

use super::Archive;

/// Reads one upload, archives it off the async runtime, acknowledges it
/// (telling a `revoked` device to wipe itself).
/// A malformed or refused upload is answered with the reason (no event
/// content in it) and stores nothing.
pub async fn serve_upload<S: WebSocket>(
    mut channel: NoiseChannel<S>,
    archive: Arc<Archive>,
    revoked: bool,
) -> Result<AuditAck, String> {
    let request = crate::request::one_request(&mut channel, "audit upload").await?;
    let device = channel.remote_static();
    let result = match serde_json::from_slice::<AuditUpload>(&request) {
        Err(_) => Err("the audit upload is malformed".to_owned()),
        Ok(upload) => {
            let now = scr_core::clock::now_ms();
            tokio::task::spawn_blocking(move || archive.accept(&device, &upload, now))
                .await
                .map_err(|_| "the archive task failed".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()))
        }
    };
    let reply = match &result {
        // A revoked device is told to wipe itself once its trail is in.
        Ok(ack) => AuditReply::Acknowledged(AuditAck {
            wipe: revoked,
            ..*ack
        }),
        Err(reason) => AuditReply::Refused {
            reason: reason.clone(),
        },
    };
    let body = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    channel.send(&body).await.map_err(|e| e.to_string())?;
    result
}
