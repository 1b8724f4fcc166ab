//! The server's archive of device audit events, in its own SQLite file
//! (`audit.db`): append-only, idempotent by event id, each device's hash
//! chain verified as it arrives (a gap or a fork is stored and flagged,
//! never silently accepted), and alerts raised for privacy officers in the
//! same transaction. Events are sealed; the NHS number and event id appear
//! only as keyed hashes.

mod budget;
mod grants;
pub mod postgres;
pub mod rows;
mod sent;
pub mod sqlite;
mod upload;
pub(crate) mod vouch;

use std::path::Path;

use scr_core::NhsNumber;
use scr_core::access::{Alert, AlertReason, AlertType};
use scr_core::audit::{AuditEvent, GENESIS_HASH};
use scr_core::channel::hex_key;
use scr_core::crypto::{self, LookupKey, SecretKey};
use scr_core::protocol::{AuditAck, AuditUpload, Backlog, MAX_AUDIT_BATCH};

pub use budget::{AuditBudget, MAX_UPLOAD_BYTES};
pub use sent::{Sent, SentNow};
pub use upload::serve_upload;
pub use vouch::{DEVICE_USER, Doubt, Issued, vouch};

const EVENTS: &[u8] = b"events";
/// The name the server's own audit events carry as their device.
pub const SERVER_DEVICE: &str = "scr-server";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("audit archive database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("audit archive database: {0}")]
    Postgres(#[from] crate::pg::PgError),
    #[error("an archived event failed to open (tampered or wrong key)")]
    Tampered,
    #[error("the audit archive lock was poisoned")]
    Poisoned,
    #[error("the upload has {0} events; at most {MAX_AUDIT_BATCH} per batch")]
    TooMany(usize),
    #[error("the upload format {0} is not understood")]
    Format(u8),
    #[error("the directory could not be read")]
    Directory,
    #[error("an event of the upload is over {MAX_EVENT_BYTES} bytes")]
    EventTooLarge,
}

/// An uploaded event's encoding at most (an honest one is well under a
/// kilobyte: codes, ids and a short detail).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

/// Why an event was stored flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// Events before it are missing from the device's chain.
    Gap,
    /// It does not follow the event before it (a rewritten history).
    Fork,
    /// It names another device than the one that uploaded it.
    Foreign,
    /// Nothing the server issued to the device vouches for the user, role,
    /// organisation or patient it names ([`Doubt::Unvouched`]).
    Unvouched,
    /// Dated after the device was revoked ([`Doubt::AfterRevocation`]).
    AfterRevocation,
}

impl Flag {
    fn as_str(self) -> &'static str {
        match self {
            Flag::Gap => "gap",
            Flag::Fork => "fork",
            Flag::Foreign => "foreign",
            Flag::Unvouched => "unvouched",
            Flag::AfterRevocation => "after-revocation",
        }
    }

    /// Whether the event may be taken as what happened: a gap or a fork
    /// says the chain is incomplete or rewritten, not that the event is
    /// false; the others say the server does not believe it.
    pub fn believed(flag: Option<&str>) -> bool {
        !matches!(flag, Some("foreign" | "unvouched" | "after-revocation"))
    }
}

impl From<Doubt> for Flag {
    fn from(d: Doubt) -> Self {
        match d {
            Doubt::Unvouched => Flag::Unvouched,
            Doubt::AfterRevocation => Flag::AfterRevocation,
        }
    }
}

/// A privacy officer's alert: what was raised, on which event, and where
/// it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRecord {
    pub id: i64,
    pub organisation: String,
    pub alert: Alert,
    pub raised_at_ms: i64,
    /// open, justified or referred.
    pub status: String,
    pub closed_by: Option<String>,
    pub event: AuditEvent,
}

/// How a privacy officer closes an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertOutcome {
    Justified,
    Referred,
}

impl AlertOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertOutcome::Justified => "justified",
            AlertOutcome::Referred => "referred",
        }
    }
}

/// An archived event with what the server noted about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    pub event: AuditEvent,
    pub flag: Option<String>,
    pub received_at_ms: i64,
}

pub struct Archive {
    rows: Box<dyn rows::ArchiveRows>,
    seal: SecretKey,
    lookup: LookupKey,
}

impl Archive {
    /// Opens (creating) the archive at `path`; `root` is a server secret
    /// kept sealed in the server store.
    pub fn open(path: &Path, root: &SecretKey) -> Result<Self, ArchiveError> {
        Ok(Self::over(
            Box::new(sqlite::SqliteArchive::open(path)?),
            root,
        ))
    }

    /// The archive in PostgreSQL, shared with every node on it.
    pub fn on_postgres(pg: crate::pg::Pg, root: &SecretKey) -> Self {
        Self::over(Box::new(postgres::PgArchive::new(pg)), root)
    }

    pub fn over(rows: Box<dyn rows::ArchiveRows>, root: &SecretKey) -> Self {
        Self {
            rows,
            seal: root.derive("scr-sync server audit archive seal v1"),
            lookup: LookupKey::from_secret(root, "scr-sync server audit archive lookup v1"),
        }
    }

    fn patient_ref(&self, nhs: &NhsNumber) -> [u8; 16] {
        self.lookup.hash(&[b"patient", nhs.digits().as_bytes()])
    }

    /// Stores one upload from `device` (the key its handshake proved) in one
    /// transaction and says what the device may release. Each event is
    /// judged against what the server `issued` to the device: one it does
    /// not vouch for is stored flagged and raises no alert.
    pub fn accept(
        &self,
        device: &[u8; 32],
        upload: &AuditUpload,
        issued: &Issued,
        now_ms: i64,
    ) -> Result<AuditAck, ArchiveError> {
        self.accept_chain(device, &hex_key(device), upload, Some(issued), now_ms)
    }

    /// Copies the server's own trail (logins, admin and privacy-officer
    /// actions, encounters opened online) into the archive after the last
    /// event archived, verified as a chain like any device's, so the
    /// patient's access log and the privacy officers' alerts read one
    /// place. The trail stays in the server store too (it is never
    /// released there). Returns how many events were archived.
    pub fn take_server_trail(
        &self,
        store: &scr_core::Store,
        server_key: &[u8; 32],
        now_ms: i64,
    ) -> Result<usize, ArchiveError> {
        let mut archived = 0;
        loop {
            let (last_seq, _) = self.chain(server_key)?;
            let events = store
                .audit_events_after(last_seq, Some(MAX_AUDIT_BATCH))
                .map_err(|_| ArchiveError::Tampered)?;
            if events.is_empty() {
                return Ok(archived);
            }
            let upload = AuditUpload {
                format: scr_core::protocol::AUDIT_UPLOAD_FORMAT,
                events,
                backlog: Backlog::default(),
            };
            let ack = self.accept_chain(server_key, SERVER_DEVICE, &upload, None, now_ms)?;
            archived += ack.stored as usize;
            if ack.stored == 0 {
                return Ok(archived);
            }
        }
    }

    /// Stores one upload of the chain of `device`, whose events name
    /// themselves `device_name`; `issued`: what vouches for them (`None`
    /// for the server's own trail).
    fn accept_chain(
        &self,
        device: &[u8; 32],
        device_name: &str,
        upload: &AuditUpload,
        issued: Option<&Issued>,
        now_ms: i64,
    ) -> Result<AuditAck, ArchiveError> {
        if upload.format != scr_core::protocol::AUDIT_UPLOAD_FORMAT {
            return Err(ArchiveError::Format(upload.format));
        }
        if upload.events.len() > MAX_AUDIT_BATCH {
            return Err(ArchiveError::TooMany(upload.events.len()));
        }
        if upload
            .events
            .iter()
            .any(|e| e.encode().len() > MAX_EVENT_BYTES)
        {
            return Err(ArchiveError::EventTooLarge);
        }
        let mut events: Vec<&AuditEvent> = upload.events.iter().collect();
        events.sort_by_key(|e| e.seq);
        let ids: Vec<rows::Ref> = events
            .iter()
            .map(|e| self.lookup.hash(&[b"event", e.id.as_bytes()]))
            .collect();
        let mut ack = AuditAck::default();
        self.rows
            .append(device, &ids, now_ms, &mut |state, stored| {
                ack = AuditAck::default();
                let (mut last_seq, mut last_hash) = (state.last_seq, state.last_hash);
                let mut rows = Vec::new();
                let mut taken = std::collections::HashSet::new();
                for (event, id_ref) in events.iter().zip(&ids) {
                    ack.through_seq = ack.through_seq.max(event.seq);
                    // Stored before, or twice in this upload: once only.
                    if stored.contains(id_ref) || !taken.insert(*id_ref) {
                        ack.duplicates += 1;
                        continue;
                    }
                    let follows = event.seq == last_seq + 1 && event.prev_hash == last_hash;
                    let mut flag = if follows {
                        None
                    } else if event.seq > last_seq + 1 {
                        Some(Flag::Gap)
                    } else {
                        Some(Flag::Fork)
                    };
                    if let Some(Err(doubt)) = issued.map(|i| vouch(event, i)) {
                        flag = Some(doubt.into());
                    }
                    if event.device != device_name {
                        flag = Some(Flag::Foreign);
                    }
                    // (Only allowed type/reason pairs decode at all.) An event
                    // the server does not believe raises nothing.
                    let alerts = if Flag::believed(flag.map(Flag::as_str)) {
                        event.alerts.as_slice()
                    } else {
                        &[]
                    };
                    rows.push(rows::EventRow {
                        id_ref: *id_ref,
                        seq: i64::try_from(event.seq).unwrap_or(i64::MAX),
                        patient_ref: event.patient.as_ref().map(|p| self.patient_ref(p)),
                        flag: flag.map(Flag::as_str),
                        sealed: crypto::seal(&self.seal, &[EVENTS, id_ref], &event.encode())
                            .map_err(|_| ArchiveError::Tampered)?,
                        alerts: alerts
                            .iter()
                            .map(|alert| rows::NewAlert {
                                organisation: event.organisation.clone(),
                                alert_type: alert.alert_type().code(),
                                reason: alert.reason().code(),
                                raised_at_ms: event.wall_time_ms,
                            })
                            .collect(),
                    });
                    ack.stored += 1;
                    if flag.is_some() {
                        ack.flagged += 1;
                    }
                    // The chain goes on from the newest of this device's events,
                    // verified or believed or not, so one gap flags one event,
                    // not every event after it. Another device's event is no
                    // part of it.
                    if event.seq > last_seq && flag != Some(Flag::Foreign) {
                        last_seq = event.seq;
                        last_hash = event.hash();
                    }
                }
                Ok(rows::Appended {
                    events: rows,
                    chain: rows::ChainRow {
                        last_seq,
                        last_hash,
                        queued: i64::try_from(upload.backlog.queued).unwrap_or(i64::MAX),
                        oldest_ms: upload.backlog.oldest_ms,
                    },
                })
            })?;
        Ok(ack)
    }

    fn open_row(&self, id_ref: &[u8], sealed: &[u8]) -> Result<AuditEvent, ArchiveError> {
        let plain = crypto::open(&self.seal, &[EVENTS, id_ref], sealed)
            .map_err(|_| ArchiveError::Tampered)?;
        AuditEvent::decode(&plain).ok_or(ArchiveError::Tampered)
    }

    /// Every archived event about `nhs`, oldest first.
    pub fn events_about(&self, nhs: &NhsNumber) -> Result<Vec<Archived>, ArchiveError> {
        let mut out = self
            .rows
            .events_about(&self.patient_ref(nhs))?
            .into_iter()
            .map(|r| {
                Ok(Archived {
                    event: self.open_row(&r.id_ref, &r.sealed)?,
                    flag: r.flag,
                    received_at_ms: r.received_at_ms,
                })
            })
            .collect::<Result<Vec<_>, ArchiveError>>()?;
        out.sort_by_key(|a| (a.event.wall_time_ms, a.event.seq));
        Ok(out)
    }

    /// The alerts routed to `organisation` (open ones only unless
    /// `include_closed`), oldest first.
    pub fn alerts(
        &self,
        organisation: &str,
        include_closed: bool,
    ) -> Result<Vec<AlertRecord>, ArchiveError> {
        self.rows
            .alerts(organisation, include_closed)?
            .into_iter()
            .map(|a| {
                Ok(AlertRecord {
                    id: a.id,
                    organisation: organisation.to_owned(),
                    alert: alert_from_codes(a.alert_type, a.reason)
                        .ok_or(ArchiveError::Tampered)?,
                    raised_at_ms: a.raised_at_ms,
                    status: a.status,
                    closed_by: a.closed_by,
                    event: self.open_row(&a.event_ref, &a.event_sealed)?,
                })
            })
            .collect()
    }

    /// Closes an open alert of `organisation` with an outcome; the caller
    /// audits it. Returns false if there is no such open alert.
    pub fn close_alert(
        &self,
        id: i64,
        organisation: &str,
        outcome: AlertOutcome,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, ArchiveError> {
        self.rows
            .close_alert(id, organisation, outcome.as_str(), by, now_ms)
    }

    /// How many events are archived, and how many of them are flagged.
    pub fn counts(&self) -> Result<(u64, u64), ArchiveError> {
        self.rows.counts(None)
    }

    /// How many events `device` uploaded, and how many of them are flagged.
    pub fn counts_of(&self, device: &[u8; 32]) -> Result<(u64, u64), ArchiveError> {
        self.rows.counts(Some(device))
    }

    /// Devices whose last upload said they hold an event written before
    /// `older_than_ms` (their audit backlog is overdue).
    pub fn overdue_devices(&self, older_than_ms: i64) -> Result<u64, ArchiveError> {
        self.rows.overdue_devices(older_than_ms)
    }

    /// Where `device`'s chain stands: the last event's counter and hash.
    pub fn chain(&self, device: &[u8; 32]) -> Result<(u64, String), ArchiveError> {
        Ok(self
            .rows
            .chain(device)?
            .map(|c| (c.last_seq, c.last_hash))
            .unwrap_or((0, GENESIS_HASH.to_owned())))
    }
}

fn alert_from_codes(alert_type: u8, reason: u8) -> Option<Alert> {
    let t = [AlertType::SelfClaimedRelationship, AlertType::AccessAlert]
        .into_iter()
        .find(|t| t.code() == alert_type)?;
    let r = AlertReason::ALL.into_iter().find(|r| r.code() == reason)?;
    Alert::new(t, r)
}
