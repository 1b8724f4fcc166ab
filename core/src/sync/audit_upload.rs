//! Uploading the audit queue: batches over a one-shot channel request
//! (`Purpose::Audit`), each released on the device only after the server
//! acknowledged storing it. The server stores events idempotently by id, so
//! a batch sent twice (a cut after the server committed, a crash before the
//! device released) is stored once: exactly once in effect.

use std::sync::Arc;

use crate::channel::{self, ChannelError, Hello, Purpose, StaticKeypair};
use crate::engine::{Engine, EngineError};
use crate::protocol::{
    AUDIT_UPLOAD_FORMAT, AuditAck, AuditReply, AuditUpload, Backlog, MAX_AUDIT_BATCH,
};

/// What one upload run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditUploadOutcome {
    pub batches: usize,
    pub uploaded: usize,
    pub released: usize,
    /// The server asked for a remote wipe, and this many records were
    /// forgotten (their forgetting uploaded in the same run).
    pub wiped: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditUploadError {
    #[error("the audit upload failed: {0}")]
    Channel(#[from] ChannelError),
    #[error("the server refused the audit upload: {0}")]
    Refused(String),
    #[error("the server's reply to an audit upload is malformed")]
    Malformed,
    #[error("the server acknowledged events it was not sent")]
    OverAcknowledged,
    #[error("the audit queue: {0}")]
    Engine(#[from] EngineError),
}

/// Sends one batch and returns the server's acknowledgement. Releasing the
/// events is the caller's, and only after this returns.
pub async fn send_audit_batch(
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
    upload: &AuditUpload,
) -> Result<AuditAck, AuditUploadError> {
    let ws = crate::channel::open_websocket(url)
        .await
        .map_err(|e| ChannelError::Io(e.to_string()))?;
    let hello = Hello::new(Purpose::Audit, None).encode();
    let mut ch = channel::connect(ws, keys, server_key, &hello).await?;
    let body = serde_json::to_vec(upload).map_err(|_| AuditUploadError::Malformed)?;
    ch.send(&body).await?;
    let reply = ch.recv().await?.ok_or(ChannelError::Closed)?;
    match serde_json::from_slice(&reply).map_err(|_| AuditUploadError::Malformed)? {
        AuditReply::Acknowledged(ack) => Ok(ack),
        AuditReply::Refused { reason } => Err(AuditUploadError::Refused(reason)),
    }
}

/// The next batch to send: the oldest queued events, and the backlog.
pub fn next_audit_batch(engine: &Engine) -> Result<AuditUpload, EngineError> {
    let mut events = engine.audit_batch(MAX_AUDIT_BATCH + 1)?;
    let after = (events.len() > MAX_AUDIT_BATCH)
        .then(|| events.pop())
        .flatten();
    let backlog = Backlog {
        queued: engine
            .audit_queue_len()?
            .saturating_sub(events.len() as u64),
        oldest_ms: after.map(|e| e.wall_time_ms),
    };
    Ok(AuditUpload {
        format: AUDIT_UPLOAD_FORMAT,
        events,
        backlog,
    })
}

/// Uploads everything queued, batch by batch, each released only after
/// its acknowledgement. Stops at the first failure (the rest waits for the
/// next attempt; nothing is released that the server did not acknowledge).
/// An empty queue still reports its (empty) backlog. If the server says the
/// device is revoked, the device then forgets every patient and uploads
/// the record of that too.
pub async fn upload_audit_queue(
    engine: &Arc<Engine>,
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
) -> Result<AuditUploadOutcome, AuditUploadError> {
    let (mut outcome, wipe) = upload_queued(engine, url, keys, server_key).await?;
    if wipe {
        let e = engine.clone();
        let wiped = tokio::task::spawn_blocking(move || e.forget_everything())
            .await
            .map_err(|_| AuditUploadError::Malformed)??;
        outcome.wiped = Some(wiped);
        let (reported, _) = upload_queued(engine, url, keys, server_key).await?;
        outcome.batches += reported.batches;
        outcome.uploaded += reported.uploaded;
        outcome.released += reported.released;
    }
    Ok(outcome)
}

/// The upload loop; also says whether the server asked for a wipe.
async fn upload_queued(
    engine: &Arc<Engine>,
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
) -> Result<(AuditUploadOutcome, bool), AuditUploadError> {
    let mut outcome = AuditUploadOutcome::default();
    let mut wipe = false;
    loop {
        let e = engine.clone();
        let upload = tokio::task::spawn_blocking(move || next_audit_batch(&e))
            .await
            .map_err(|_| AuditUploadError::Malformed)??;
        let last = upload.events.last().map(|e| e.seq);
        let count = upload.events.len();
        let ack = send_audit_batch(url, keys, server_key, &upload).await?;
        outcome.batches += 1;
        wipe |= ack.wipe;
        let Some(last) = last else {
            return Ok((outcome, wipe));
        };
        if ack.through_seq > last {
            return Err(AuditUploadError::OverAcknowledged);
        }
        outcome.uploaded += count;
        let e = engine.clone();
        let through = ack.through_seq;
        outcome.released += tokio::task::spawn_blocking(move || e.acknowledge_audit(through))
            .await
            .map_err(|_| AuditUploadError::Malformed)??;
        if ack.through_seq < last || count < MAX_AUDIT_BATCH {
            return Ok((outcome, wipe));
        }
    }
}
