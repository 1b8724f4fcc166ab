//! The server's archive of device audit events, in its own SQLite file
//! (`audit.db`): append-only, idempotent by event id, each device's hash
//! chain verified as it arrives (a gap or a fork is stored and flagged,
//! never silently accepted), and alerts raised for privacy officers in the
//! same transaction. Events are sealed; the NHS number and event id appear
//! only as keyed hashes.

mod budget;
mod grants;
mod sent;
mod upload;
pub(crate) mod vouch;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
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

const MIGRATIONS: &[&str] = &[
    include_str!("0001_archive.sql"),
    include_str!("0002_sent.sql"),
    include_str!("0003_grants.sql"),
];
const EVENTS: &[u8] = b"events";
/// The name the server's own audit events carry as their device.
pub const SERVER_DEVICE: &str = "scr-server";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("audit archive database error")]
    Sqlite(#[from] rusqlite::Error),
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
    conn: Mutex<Connection>,
    seal: SecretKey,
    lookup: LookupKey,
}

impl Archive {
    /// Opens (creating) the archive at `path`; `root` is a server secret
    /// kept sealed in the server store.
    pub fn open(path: &Path, root: &SecretKey) -> Result<Self, ArchiveError> {
        // (An acknowledged event is released on the device: it must
        // survive a power cut here.)
        let conn = crate::sqlite::open_durable(path, MIGRATIONS)?;
        Ok(Self {
            conn: Mutex::new(conn),
            seal: root.derive("scr-sync server audit archive seal v1"),
            lookup: LookupKey::from_secret(root, "scr-sync server audit archive lookup v1"),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, ArchiveError> {
        self.conn.lock().map_err(|_| ArchiveError::Poisoned)
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
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut last_seq, mut last_hash) = chain_of(&tx, device)?;
        let mut ack = AuditAck::default();
        for event in events {
            ack.through_seq = ack.through_seq.max(event.seq);
            let id_ref = self.lookup.hash(&[b"event", event.id.as_bytes()]);
            if is_stored(&tx, &id_ref)? {
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
            self.insert(&tx, device, &id_ref, event, flag, now_ms)?;
            // (Only allowed type/reason pairs decode at all.) An event the
            // server does not believe raises nothing.
            let alerts = if Flag::believed(flag.map(Flag::as_str)) {
                event.alerts.as_slice()
            } else {
                &[]
            };
            for alert in alerts {
                tx.execute(
                    "INSERT OR IGNORE INTO alerts
                     (event_ref, organisation, alert_type, reason, raised_at_ms, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'open')",
                    params![
                        id_ref,
                        event.organisation,
                        alert.alert_type().code(),
                        alert.reason().code(),
                        event.wall_time_ms
                    ],
                )?;
            }
            ack.stored += 1;
            if flag.is_some() {
                ack.flagged += 1;
            }
            // The chain goes on from the newest of this device's events,
            // verified or believed or not, so one gap flags one event, not
            // every event after it. Another device's event is no part of it.
            if event.seq > last_seq && flag != Some(Flag::Foreign) {
                last_seq = event.seq;
                last_hash = event.hash();
            }
        }
        set_chain(&tx, device, last_seq, &last_hash, upload.backlog, now_ms)?;
        tx.commit()?;
        Ok(ack)
    }

    fn insert(
        &self,
        tx: &Transaction<'_>,
        device: &[u8; 32],
        id_ref: &[u8; 16],
        event: &AuditEvent,
        flag: Option<Flag>,
        now_ms: i64,
    ) -> Result<(), ArchiveError> {
        let sealed = crypto::seal(&self.seal, &[EVENTS, id_ref], &event.encode())
            .map_err(|_| ArchiveError::Tampered)?;
        tx.execute(
            "INSERT INTO events (id_ref, device, seq, patient_ref, flag, received_at_ms, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id_ref,
                device.as_slice(),
                i64::try_from(event.seq).unwrap_or(i64::MAX),
                event.patient.as_ref().map(|p| self.patient_ref(p).to_vec()),
                flag.map(Flag::as_str),
                now_ms,
                sealed
            ],
        )?;
        Ok(())
    }

    fn open_row(&self, id_ref: &[u8], sealed: &[u8]) -> Result<AuditEvent, ArchiveError> {
        let plain = crypto::open(&self.seal, &[EVENTS, id_ref], sealed)
            .map_err(|_| ArchiveError::Tampered)?;
        AuditEvent::decode(&plain).ok_or(ArchiveError::Tampered)
    }

    /// Every archived event about `nhs`, oldest first.
    pub fn events_about(&self, nhs: &NhsNumber) -> Result<Vec<Archived>, ArchiveError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id_ref, sealed, flag, received_at_ms FROM events WHERE patient_ref = ?1",
        )?;
        let rows = stmt
            .query_map([self.patient_ref(nhs).as_slice()], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = rows
            .into_iter()
            .map(|(id_ref, sealed, flag, received_at_ms)| {
                Ok(Archived {
                    event: self.open_row(&id_ref, &sealed)?,
                    flag,
                    received_at_ms,
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
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.id, a.alert_type, a.reason, a.raised_at_ms, a.status, a.closed_by,
                    e.id_ref, e.sealed
             FROM alerts a JOIN events e ON e.id_ref = a.event_ref
             WHERE a.organisation = ?1 AND (?2 OR a.status = 'open')
             ORDER BY a.raised_at_ms, a.id",
        )?;
        let rows = stmt
            .query_map(params![organisation, include_closed], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, u8>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Vec<u8>>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(
                |(id, t, reason, raised_at_ms, status, closed_by, id_ref, sealed)| {
                    Ok(AlertRecord {
                        id,
                        organisation: organisation.to_owned(),
                        alert: alert_from_codes(t, reason).ok_or(ArchiveError::Tampered)?,
                        raised_at_ms,
                        status,
                        closed_by,
                        event: self.open_row(&id_ref, &sealed)?,
                    })
                },
            )
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
        let n = self.conn()?.execute(
            "UPDATE alerts SET status = ?1, closed_by = ?2, closed_at_ms = ?3
             WHERE id = ?4 AND organisation = ?5 AND status = 'open'",
            params![outcome.as_str(), by, now_ms, id, organisation],
        )?;
        Ok(n == 1)
    }

    /// How many events are archived, and how many of them are flagged.
    pub fn counts(&self) -> Result<(u64, u64), ArchiveError> {
        let conn = self.conn()?;
        let (all, flagged): (i64, i64) =
            conn.query_row("SELECT COUNT(*), COUNT(flag) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok((all.max(0) as u64, flagged.max(0) as u64))
    }

    /// How many events `device` uploaded, and how many of them are flagged.
    pub fn counts_of(&self, device: &[u8; 32]) -> Result<(u64, u64), ArchiveError> {
        let conn = self.conn()?;
        let (all, flagged): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COUNT(flag) FROM events WHERE device = ?1",
            [device.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((all.max(0) as u64, flagged.max(0) as u64))
    }

    /// Devices whose last upload said they hold an event written before
    /// `older_than_ms` (their audit backlog is overdue).
    pub fn overdue_devices(&self, older_than_ms: i64) -> Result<u64, ArchiveError> {
        let conn = self.conn()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM chains WHERE queued > 0 AND oldest_ms < ?1",
            [older_than_ms],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Where `device`'s chain stands: the last event's counter and hash.
    pub fn chain(&self, device: &[u8; 32]) -> Result<(u64, String), ArchiveError> {
        let conn = self.conn()?;
        chain_of(&conn, device)
    }
}

fn alert_from_codes(alert_type: u8, reason: u8) -> Option<Alert> {
    let t = [AlertType::SelfClaimedRelationship, AlertType::AccessAlert]
        .into_iter()
        .find(|t| t.code() == alert_type)?;
    let r = AlertReason::ALL.into_iter().find(|r| r.code() == reason)?;
    Alert::new(t, r)
}

fn chain_of(conn: &Connection, device: &[u8; 32]) -> Result<(u64, String), ArchiveError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT last_seq, last_hash FROM chains WHERE device = ?1",
            [device.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row
        .map(|(s, h)| (s.max(0) as u64, h))
        .unwrap_or((0, GENESIS_HASH.to_owned())))
}

fn is_stored(tx: &Transaction<'_>, id_ref: &[u8; 16]) -> Result<bool, ArchiveError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM events WHERE id_ref = ?1",
            [id_ref.as_slice()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn set_chain(
    tx: &Transaction<'_>,
    device: &[u8; 32],
    last_seq: u64,
    last_hash: &str,
    backlog: Backlog,
    now_ms: i64,
) -> Result<(), ArchiveError> {
    tx.execute(
        "INSERT INTO chains (device, last_seq, last_hash, queued, oldest_ms, reported_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(device) DO UPDATE SET last_seq = excluded.last_seq,
             last_hash = excluded.last_hash, queued = excluded.queued,
             oldest_ms = excluded.oldest_ms, reported_at_ms = excluded.reported_at_ms",
        params![
            device.as_slice(),
            i64::try_from(last_seq).unwrap_or(i64::MAX),
            last_hash,
            i64::try_from(backlog.queued).unwrap_or(i64::MAX),
            backlog.oldest_ms,
            now_ms
        ],
    )?;
    Ok(())
}
