//! The archive's rows in its own SQLite file (`audit.db`), the default
//! store: one connection, WAL, `synchronous=FULL` (an acknowledged event is
//! released on the device: it must survive a power cut here).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::ArchiveError;
use super::rows::{
    ArchiveRows, ChainState, Plan, R, Ref, SentRow, StoredAlert, StoredEvent, StoredGrant,
    StoredSent,
};

const MIGRATIONS: &[&str] = &[
    include_str!("0001_archive.sql"),
    include_str!("0002_sent.sql"),
    include_str!("0003_grants.sql"),
];

pub struct SqliteArchive {
    conn: Mutex<Connection>,
}

impl SqliteArchive {
    pub fn open(path: &Path) -> R<Self> {
        Ok(Self {
            conn: Mutex::new(crate::sqlite::open_durable(path, MIGRATIONS)?),
        })
    }

    fn conn(&self) -> R<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| ArchiveError::Poisoned)
    }
}

fn chain_of(conn: &Connection, device: &[u8; 32]) -> R<Option<ChainState>> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT last_seq, last_hash FROM chains WHERE device = ?1",
            [device.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(s, h)| ChainState {
        last_seq: s.max(0) as u64,
        last_hash: h,
    }))
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ArchiveRows for SqliteArchive {
    fn append(&self, device: &[u8; 32], ids: &[Ref], now_ms: i64, plan: &mut Plan<'_>) -> R<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let state = chain_of(&tx, device)?.unwrap_or_else(|| ChainState {
            last_seq: 0,
            last_hash: scr_core::audit::GENESIS_HASH.to_owned(),
        });
        let mut stored = HashSet::new();
        for id in ids {
            let found = tx
                .query_row(
                    "SELECT 1 FROM events WHERE id_ref = ?1",
                    [id.as_slice()],
                    |_| Ok(()),
                )
                .optional()?;
            if found.is_some() {
                stored.insert(*id);
            }
        }
        let appended = plan(state, &stored)?;
        for e in &appended.events {
            tx.execute(
                "INSERT INTO events (id_ref, device, seq, patient_ref, flag, received_at_ms, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    e.id_ref.as_slice(),
                    device.as_slice(),
                    e.seq,
                    e.patient_ref.map(|p| p.to_vec()),
                    e.flag,
                    now_ms,
                    e.sealed
                ],
            )?;
            for a in &e.alerts {
                tx.execute(
                    "INSERT OR IGNORE INTO alerts
                     (event_ref, organisation, alert_type, reason, raised_at_ms, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'open')",
                    params![
                        e.id_ref.as_slice(),
                        a.organisation,
                        a.alert_type,
                        a.reason,
                        a.raised_at_ms
                    ],
                )?;
            }
        }
        let c = &appended.chain;
        tx.execute(
            "INSERT INTO chains (device, last_seq, last_hash, queued, oldest_ms, reported_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(device) DO UPDATE SET last_seq = excluded.last_seq,
                 last_hash = excluded.last_hash, queued = excluded.queued,
                 oldest_ms = excluded.oldest_ms, reported_at_ms = excluded.reported_at_ms",
            params![
                device.as_slice(),
                i64_of(c.last_seq),
                c.last_hash,
                c.queued,
                c.oldest_ms,
                now_ms
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn chain(&self, device: &[u8; 32]) -> R<Option<ChainState>> {
        chain_of(&*self.conn()?, device)
    }

    fn events_about(&self, patient_ref: &Ref) -> R<Vec<StoredEvent>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id_ref, sealed, flag, received_at_ms FROM events WHERE patient_ref = ?1",
        )?;
        let rows = stmt
            .query_map([patient_ref.as_slice()], |r| {
                Ok(StoredEvent {
                    id_ref: r.get(0)?,
                    sealed: r.get(1)?,
                    flag: r.get(2)?,
                    received_at_ms: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn alerts(&self, organisation: &str, include_closed: bool) -> R<Vec<StoredAlert>> {
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
                Ok(StoredAlert {
                    id: r.get(0)?,
                    alert_type: r.get(1)?,
                    reason: r.get(2)?,
                    raised_at_ms: r.get(3)?,
                    status: r.get(4)?,
                    closed_by: r.get(5)?,
                    event_ref: r.get(6)?,
                    event_sealed: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn close_alert(
        &self,
        id: i64,
        organisation: &str,
        status: &str,
        by: &str,
        now_ms: i64,
    ) -> R<bool> {
        let n = self.conn()?.execute(
            "UPDATE alerts SET status = ?1, closed_by = ?2, closed_at_ms = ?3
             WHERE id = ?4 AND organisation = ?5 AND status = 'open'",
            params![status, by, now_ms, id, organisation],
        )?;
        Ok(n == 1)
    }

    fn counts(&self, device: Option<&[u8; 32]>) -> R<(u64, u64)> {
        let conn = self.conn()?;
        let (all, flagged): (i64, i64) = match device {
            Some(d) => conn.query_row(
                "SELECT COUNT(*), COUNT(flag) FROM events WHERE device = ?1",
                [d.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?,
            None => conn.query_row("SELECT COUNT(*), COUNT(flag) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
        };
        Ok((all.max(0) as u64, flagged.max(0) as u64))
    }

    fn overdue_devices(&self, older_than_ms: i64) -> R<u64> {
        let n: i64 = self.conn()?.query_row(
            "SELECT COUNT(*) FROM chains WHERE queued > 0 AND oldest_ms < ?1",
            [older_than_ms],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    fn record_sent(&self, rows: &[SentRow], now_ms: i64) -> R<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        for s in rows {
            tx.execute(
                "INSERT INTO sent (device, doc_ref, patient_ref, first_sent_ms, last_sent_ms, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                 ON CONFLICT(device, doc_ref) DO UPDATE SET last_sent_ms = excluded.last_sent_ms",
                params![
                    s.device.as_slice(),
                    s.doc_ref.as_slice(),
                    s.patient_ref.as_slice(),
                    now_ms,
                    s.sealed
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn sent_to(&self, device: &[u8; 32]) -> R<Vec<StoredSent>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT doc_ref, first_sent_ms, last_sent_ms, sealed FROM sent WHERE device = ?1
             ORDER BY first_sent_ms",
        )?;
        let rows = stmt
            .query_map([device.as_slice()], |r| {
                Ok(StoredSent {
                    doc_ref: r.get(0)?,
                    first_sent_ms: r.get(1)?,
                    last_sent_ms: r.get(2)?,
                    sealed: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn record_grant(
        &self,
        device: &[u8; 32],
        grant_ref: &Ref,
        issued_at_ms: i64,
        expires_at_ms: i64,
        sealed: &[u8],
    ) -> R<()> {
        self.conn()?.execute(
            "INSERT OR IGNORE INTO grants (device, grant_ref, issued_at_ms, expires_at_ms, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                device.as_slice(),
                grant_ref.as_slice(),
                issued_at_ms,
                expires_at_ms,
                sealed
            ],
        )?;
        Ok(())
    }

    fn retire_grant(&self, device: &[u8; 32], grant_ref: &Ref, now_ms: i64) -> R<()> {
        self.conn()?.execute(
            "UPDATE grants SET retired_at_ms = ?3
             WHERE device = ?1 AND grant_ref = ?2 AND retired_at_ms IS NULL",
            params![device.as_slice(), grant_ref.as_slice(), now_ms],
        )?;
        Ok(())
    }

    fn grants_issued(
        &self,
        device: &[u8; 32],
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> R<Vec<StoredGrant>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT grant_ref, sealed, retired_at_ms FROM grants
             WHERE device = ?1 AND issued_at_ms BETWEEN ?2 AND ?3
             ORDER BY issued_at_ms DESC LIMIT ?4",
        )?;
        let rows = stmt
            .query_map(params![device.as_slice(), from_ms, to_ms, limit], |r| {
                Ok(StoredGrant {
                    grant_ref: r.get(0)?,
                    sealed: r.get(1)?,
                    retired_at_ms: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
