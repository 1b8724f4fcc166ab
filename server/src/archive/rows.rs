//! The archive's storage interface (ADR 0017): the rows of `audit.db`, one
//! method a transaction, implemented by the embedded SQLite file
//! (`sqlite.rs`) and by PostgreSQL (`postgres.rs`). Sealing, the chain's
//! verification and what an event raises stay in `Archive`; here every
//! value arrives sealed or as a keyed hash.
//!
//! Blocking: call off the async runtime.

use std::collections::HashSet;

use super::ArchiveError;

pub type R<T> = Result<T, ArchiveError>;

/// A keyed hash (an event id, a patient, a document, a grant).
pub type Ref = [u8; 16];

/// Where a device's chain stood when an upload began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainState {
    pub last_seq: u64,
    pub last_hash: String,
}

/// One event to store, sealed, with the alerts it raises.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub id_ref: Ref,
    pub seq: i64,
    pub patient_ref: Option<Ref>,
    pub flag: Option<&'static str>,
    pub sealed: Vec<u8>,
    pub alerts: Vec<NewAlert>,
}

#[derive(Clone, Debug)]
pub struct NewAlert {
    pub organisation: String,
    pub alert_type: u8,
    pub reason: u8,
    pub raised_at_ms: i64,
}

/// Where the chain stands after an upload, and what the device said it
/// still holds.
#[derive(Clone, Debug)]
pub struct ChainRow {
    pub last_seq: u64,
    pub last_hash: String,
    pub queued: i64,
    pub oldest_ms: Option<i64>,
}

/// What to write for one upload, decided from where the chain stood.
pub struct Appended {
    pub events: Vec<EventRow>,
    pub chain: ChainRow,
}

/// An archived event as stored.
pub struct StoredEvent {
    pub id_ref: Vec<u8>,
    pub sealed: Vec<u8>,
    pub flag: Option<String>,
    pub received_at_ms: i64,
}

/// An alert as stored, with its event.
pub struct StoredAlert {
    pub id: i64,
    pub alert_type: u8,
    pub reason: u8,
    pub raised_at_ms: i64,
    pub status: String,
    pub closed_by: Option<String>,
    pub event_ref: Vec<u8>,
    pub event_sealed: Vec<u8>,
}

/// A document sent to a device.
#[derive(Clone)]
pub struct SentRow {
    pub device: [u8; 32],
    pub doc_ref: Ref,
    pub patient_ref: Ref,
    pub sealed: Vec<u8>,
}

pub struct StoredSent {
    pub doc_ref: Vec<u8>,
    pub first_sent_ms: i64,
    pub last_sent_ms: i64,
    pub sealed: Vec<u8>,
}

pub struct StoredGrant {
    pub grant_ref: Vec<u8>,
    pub sealed: Vec<u8>,
    pub retired_at_ms: Option<i64>,
}

/// Decides an upload's rows from where the chain stands and which of its
/// events are stored already.
pub type Plan<'a> = dyn FnMut(ChainState, &HashSet<Ref>) -> R<Appended> + 'a;

pub trait ArchiveRows: Send + Sync {
    /// One upload of `device`'s chain, in one transaction that holds the
    /// chain (an upload of the same device on another node waits): reads
    /// where it stands and which of `ids` are stored, asks `plan`, writes
    /// its events (each once: a stored one is never written again), their
    /// alerts (once per event, type and reason) and the chain.
    fn append(&self, device: &[u8; 32], ids: &[Ref], now_ms: i64, plan: &mut Plan<'_>) -> R<()>;
    /// Where the chain stands (`None`: nothing archived of it).
    fn chain(&self, device: &[u8; 32]) -> R<Option<ChainState>>;
    fn events_about(&self, patient_ref: &Ref) -> R<Vec<StoredEvent>>;
    /// `organisation`'s alerts (open ones unless `include_closed`), oldest
    /// first.
    fn alerts(&self, organisation: &str, include_closed: bool) -> R<Vec<StoredAlert>>;
    /// Closes an open alert; false if there is no such open alert.
    fn close_alert(
        &self,
        id: i64,
        organisation: &str,
        status: &str,
        by: &str,
        now_ms: i64,
    ) -> R<bool>;
    /// Events archived and flagged, of one device or of all.
    fn counts(&self, device: Option<&[u8; 32]>) -> R<(u64, u64)>;
    /// Devices whose last upload left an event older than `older_than_ms`.
    fn overdue_devices(&self, older_than_ms: i64) -> R<u64>;
    /// Each document sent: first sent now, or its last sent time moved.
    fn record_sent(&self, rows: &[SentRow], now_ms: i64) -> R<()>;
    fn sent_to(&self, device: &[u8; 32]) -> R<Vec<StoredSent>>;
    /// Keeps a grant (a second time: nothing).
    fn record_grant(
        &self,
        device: &[u8; 32],
        grant_ref: &Ref,
        issued_at_ms: i64,
        expires_at_ms: i64,
        sealed: &[u8],
    ) -> R<()>;
    fn retire_grant(&self, device: &[u8; 32], grant_ref: &Ref, now_ms: i64) -> R<()>;
    /// The newest `limit` grants issued in the window, newest first.
    fn grants_issued(
        &self,
        device: &[u8; 32],
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> R<Vec<StoredGrant>>;
}
