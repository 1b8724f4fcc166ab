//! Uploading the audit queue: batches over a one-shot channel request
//! (`Purpose::Audit`), each released on the device only after the server
//! acknowledged storing it. The server stores events idempotently by id, so
//! a batch sent twice (a cut after the server committed, a crash before the
//! device released) is stored once: exactly once in effect.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::channel::{self, ChannelError, Hello, Purpose, StaticKeypair};
use crate::engine::{Engine, EngineError};

/// The upload request format. Bump when the JSON shape changes.
pub const AUDIT_UPLOAD_FORMAT: u8 = 1;
/// Events per request: about 150 KB, far under the channel's limit.
pub const MAX_AUDIT_BATCH: usize = 256;

/// What the device will still hold unsent once this batch is released,
/// reported with every upload (the server's metrics show devices whose
/// backlog grows old).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub queued: u64,
    /// When the oldest queued event was written.
    pub oldest_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditUpload {
    #[serde(rename = "v")]
    pub format: u8,
    /// Consecutive events of this device's chain, oldest first.
    pub events: Vec<AuditEvent>,
    pub backlog: Backlog,
}

/// The server's acknowledgement: every event up to `through_seq` is stored
/// (now or before), so the device may release them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAck {
    pub through_seq: u64,
    pub stored: u32,
    pub duplicates: u32,
    /// Stored, but flagged for review: the chain did not verify (a gap, a
    /// fork), or the event named another device.
    pub flagged: u32,
    /// The device is revoked: once its trail is uploaded it must forget
    /// every patient (a remote wipe) and upload the record of doing so.
    #[serde(default)]
    pub wipe: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum AuditReply {
    Acknowledged(AuditAck),
    Refused { reason: String },
}

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
    let (ws, _) = tokio_tungstenite::connect_async(url)
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
        let wiped = tokio::task::spawn_blocking(move || e.forget_everything("remote-wipe"))
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

/// When the next upload may be tried after failures: 1 s, doubling to
/// 5 minutes, jittered (a server that refuses uploads is not hammered by
/// every pass of every device; a success resets it).
#[derive(Debug)]
pub(super) struct AuditRetry {
    next: Option<std::time::Instant>,
    delay: std::time::Duration,
}

impl AuditRetry {
    const FIRST: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX: std::time::Duration = std::time::Duration::from_secs(300);

    pub(super) fn new() -> Self {
        Self {
            next: None,
            delay: Self::FIRST,
        }
    }

    pub(super) fn due(&self, now: std::time::Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    pub(super) fn failed(&mut self, now: std::time::Instant) {
        self.next = Some(now + super::driver::jittered(self.delay));
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    /// The connection failed mid-upload (a network fault, not a server
    /// refusing): try again after the first delay, without escalating, so a
    /// device back in signal uploads on its next pass instead of minutes
    /// later.
    pub(super) fn connection_lost(&mut self, now: std::time::Instant) {
        self.next = Some(now + super::driver::jittered(Self::FIRST));
    }

    pub(super) fn succeeded(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod retry_tests {
    use std::time::{Duration, Instant};

    use super::AuditRetry;

    #[test]
    fn failures_back_off_to_five_minutes_and_a_success_resets() {
        let t0 = Instant::now();
        let mut retry = AuditRetry::new();
        assert!(retry.due(t0));
        let mut waits = Vec::new();
        for _ in 0..12 {
            retry.failed(t0);
            assert!(!retry.due(t0));
            waits.push(retry.next.unwrap() - t0);
        }
        // Each wait is in [d/2, d) of a doubling d capped at 300 s.
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] < Duration::from_secs(1));
        assert!(waits[3] >= Duration::from_secs(4) && waits[3] < Duration::from_secs(8));
        assert!(waits[11] >= Duration::from_secs(150) && waits[11] < Duration::from_secs(300));
        assert!(retry.due(t0 + Duration::from_secs(300)));
        retry.succeeded();
        assert!(retry.due(t0));
        // Lost connections do not escalate: each waits about the first delay.
        for _ in 0..5 {
            retry.connection_lost(t0);
            assert!(retry.next.unwrap() - t0 <= Duration::from_millis(1500));
        }
        assert_eq!(retry.delay, Duration::from_secs(1));
    }
}
