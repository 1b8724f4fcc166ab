//! One audit upload request on an authenticated channel: the batch is
//! stored before the acknowledgement goes out, so a device never releases
//! an event the server does not hold.

use std::sync::Arc;

use scr_core::channel::{NoiseChannel, WebSocket};
use scr_core::protocol::{AuditAck, AuditReply, AuditUpload};

use super::{Archive, AuditBudget, Issued, MAX_UPLOAD_BYTES};

/// Reads what the server issued to the device around an upload's events
/// (`Err` when it cannot be read: the upload is refused, and sent again).
pub type Judge = Box<dyn FnOnce(&AuditUpload) -> Result<Issued, super::ArchiveError> + Send>;

/// Reads one upload, archives it off the async runtime, each event judged
/// against what the server issued to the device (`judge` reads it for the
/// upload's events), and acknowledges it
/// (telling a `revoked` device to wipe itself). A malformed, oversized or
/// refused upload, or one past the device's `budget`, is answered with the
/// reason (no event content in it) and stores nothing: the device keeps
/// its queue and tries again later.
pub async fn serve_upload<S: WebSocket>(
    mut channel: NoiseChannel<S>,
    archive: Arc<Archive>,
    budget: Arc<AuditBudget>,
    judge: Judge,
    revoked: bool,
    refused: prometheus_client::metrics::counter::Counter,
) -> Result<AuditAck, String> {
    let request = crate::request::one_request(&mut channel, "audit upload").await?;
    let device = channel.remote_static();
    let now = scr_core::clock::now_ms();
    let parsed = if request.len() > MAX_UPLOAD_BYTES {
        refused.inc();
        Err(format!(
            "the audit upload is over {MAX_UPLOAD_BYTES} bytes; send fewer events at once"
        ))
    } else {
        serde_json::from_slice::<AuditUpload>(&request)
            .map_err(|_| "the audit upload is malformed".to_owned())
    };
    let result = match parsed {
        Err(reason) => Err(reason),
        Ok(upload) if !budget.take(&device, upload.events.len(), now) => {
            refused.inc();
            Err("this device has uploaded too many audit events lately; try again later".to_owned())
        }
        Ok(upload) => tokio::task::spawn_blocking(move || {
            let issued = judge(&upload)?;
            archive.accept(&device, &upload, &issued, now)
        })
        .await
        .map_err(|_| "the archive task failed".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string())),
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
