//! The archive's rows in PostgreSQL (`server/src/pg/0002_archive.sql`),
//! shared by every node: a device's uploads are archived once whichever
//! node receives them, its chain's row held for the length of each.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;

use super::ArchiveError;
use super::rows::{
    Appended, ArchiveRows, ChainState, Plan, R, Ref, SentRow, StoredAlert, StoredEvent,
    StoredGrant, StoredSent,
};
use crate::pg::{Pg, PgError, client, failed};

pub struct PgArchive {
    pg: Pg,
}

impl PgArchive {
    pub fn new(pg: Pg) -> Self {
        Self { pg }
    }
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn code(n: i16) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

impl ArchiveRows for PgArchive {
    fn append(&self, device: &[u8; 32], ids: &[Ref], now_ms: i64, plan: &mut Plan<'_>) -> R<()> {
        // The transaction runs on the pool's runtime and hands where the
        // chain stands to this thread; `plan` (sealing, the chain's rules)
        // runs here; the rows go back to be written and committed.
        let dev = device.to_vec();
        let id_list: Vec<Vec<u8>> = ids.iter().map(|i| i.to_vec()).collect();
        let (to_caller, state) = std::sync::mpsc::sync_channel::<R<(ChainState, HashSet<Ref>)>>(1);
        let (give_rows, rows) = tokio::sync::oneshot::channel::<Appended>();
        let done = self.pg.spawn(|pool| async move {
            let mut c = match client(&pool).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = to_caller.send(Err(e.into()));
                    return Ok(());
                }
            };
            let tx = match c.transaction().await {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = to_caller.send(Err(failed("append begin")(e).into()));
                    return Ok(());
                }
            };
            let read: Result<(ChainState, HashSet<Ref>), PgError> = async {
                // The chain's row exists and is held: a second node's upload
                // of this device waits here until this one commits.
                tx.execute(
                    "INSERT INTO chains (device, last_seq, last_hash, queued, reported_at_ms)
                     VALUES ($1, 0, $2, 0, 0) ON CONFLICT (device) DO NOTHING",
                    &[&dev, &scr_core::audit::GENESIS_HASH],
                )
                .await
                .map_err(failed("chain"))?;
                let row = tx
                    .query_one(
                        "SELECT last_seq, last_hash FROM chains WHERE device = $1 FOR UPDATE",
                        &[&dev],
                    )
                    .await
                    .map_err(failed("chain"))?;
                let state = ChainState {
                    last_seq: row.get::<_, i64>(0).max(0) as u64,
                    last_hash: row.get(1),
                };
                let stored = tx
                    .query(
                        "SELECT id_ref FROM events WHERE id_ref = ANY($1)",
                        &[&id_list],
                    )
                    .await
                    .map_err(failed("stored events"))?
                    .iter()
                    .filter_map(|r| Ref::try_from(r.get::<_, &[u8]>(0)).ok())
                    .collect();
                Ok((state, stored))
            }
            .await;
            let read_ok = read.is_ok();
            let _ = to_caller.send(read.map_err(ArchiveError::from));
            if !read_ok {
                return Ok(());
            }
            // No rows: the plan failed on the caller's side; roll back.
            let Ok(appended) = rows.await else {
                return Ok(());
            };
            for e in &appended.events {
                tx.execute(
                    "INSERT INTO events
                     (id_ref, device, seq, patient_ref, flag, received_at_ms, sealed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &e.id_ref.as_slice(),
                        &dev,
                        &e.seq,
                        &e.patient_ref.as_ref().map(|p| p.as_slice()),
                        &e.flag,
                        &now_ms,
                        &e.sealed,
                    ],
                )
                .await
                .map_err(failed("event"))?;
                for a in &e.alerts {
                    tx.execute(
                        "INSERT INTO alerts
                         (event_ref, organisation, alert_type, reason, raised_at_ms, status)
                         VALUES ($1, $2, $3, $4, $5, 'open')
                         ON CONFLICT (event_ref, alert_type, reason) DO NOTHING",
                        &[
                            &e.id_ref.as_slice(),
                            &a.organisation,
                            &i16::from(a.alert_type),
                            &i16::from(a.reason),
                            &a.raised_at_ms,
                        ],
                    )
                    .await
                    .map_err(failed("alert"))?;
                }
            }
            let ch = &appended.chain;
            tx.execute(
                "UPDATE chains SET last_seq = $2, last_hash = $3, queued = $4, oldest_ms = $5,
                     reported_at_ms = $6
                 WHERE device = $1",
                &[
                    &dev,
                    &i64_of(ch.last_seq),
                    &ch.last_hash,
                    &ch.queued,
                    &ch.oldest_ms,
                    &now_ms,
                ],
            )
            .await
            .map_err(failed("chain"))?;
            tx.commit().await.map_err(failed("append commit"))
        });
        let (state, stored) = state.recv().map_err(|_| PgError::Runtime)??;
        let appended = plan(state, &stored)?;
        let _ = give_rows.send(appended);
        done.recv().map_err(|_| PgError::Runtime)??;
        Ok(())
    }

    fn chain(&self, device: &[u8; 32]) -> R<Option<ChainState>> {
        let dev = device.to_vec();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT last_seq, last_hash FROM chains WHERE device = $1",
                    &[&dev],
                )
                .await
                .map_err(failed("chain"))?;
            Ok(row.map(|r| ChainState {
                last_seq: r.get::<_, i64>(0).max(0) as u64,
                last_hash: r.get(1),
            }))
        })?)
    }

    fn events_about(&self, patient_ref: &Ref) -> R<Vec<StoredEvent>> {
        let p = patient_ref.to_vec();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query(
                    "SELECT id_ref, sealed, flag, received_at_ms FROM events
                     WHERE patient_ref = $1",
                    &[&p],
                )
                .await
                .map_err(failed("events about"))?;
            Ok(rows
                .iter()
                .map(|r| StoredEvent {
                    id_ref: r.get(0),
                    sealed: r.get(1),
                    flag: r.get(2),
                    received_at_ms: r.get(3),
                })
                .collect())
        })?)
    }

    fn alerts(&self, organisation: &str, include_closed: bool) -> R<Vec<StoredAlert>> {
        let org = organisation.to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query(
                    "SELECT a.id, a.alert_type, a.reason, a.raised_at_ms, a.status, a.closed_by,
                            e.id_ref, e.sealed
                     FROM alerts a JOIN events e ON e.id_ref = a.event_ref
                     WHERE a.organisation = $1 AND ($2 OR a.status = 'open')
                     ORDER BY a.raised_at_ms, a.id",
                    &[&org, &include_closed],
                )
                .await
                .map_err(failed("alerts"))?;
            Ok(rows
                .iter()
                .map(|r| StoredAlert {
                    id: r.get(0),
                    alert_type: code(r.get(1)),
                    reason: code(r.get(2)),
                    raised_at_ms: r.get(3),
                    status: r.get(4),
                    closed_by: r.get(5),
                    event_ref: r.get(6),
                    event_sealed: r.get(7),
                })
                .collect())
        })?)
    }

    fn close_alert(
        &self,
        id: i64,
        organisation: &str,
        status: &str,
        by: &str,
        now_ms: i64,
    ) -> R<bool> {
        let (org, status, by) = (organisation.to_owned(), status.to_owned(), by.to_owned());
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let n = c
                .execute(
                    "UPDATE alerts SET status = $1, closed_by = $2, closed_at_ms = $3
                     WHERE id = $4 AND organisation = $5 AND status = 'open'",
                    &[&status, &by, &now_ms, &id, &org],
                )
                .await
                .map_err(failed("close alert"))?;
            Ok(n == 1)
        })?)
    }

    fn counts(&self, device: Option<&[u8; 32]>) -> R<(u64, u64)> {
        let dev = device.map(|d| d.to_vec());
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_one(
                    "SELECT COUNT(*), COUNT(flag) FROM events
                     WHERE $1::BYTEA IS NULL OR device = $1",
                    &[&dev],
                )
                .await
                .map_err(failed("counts"))?;
            let (all, flagged): (i64, i64) = (row.get(0), row.get(1));
            Ok((all.max(0) as u64, flagged.max(0) as u64))
        })?)
    }

    fn overdue_devices(&self, older_than_ms: i64) -> R<u64> {
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM chains WHERE queued > 0 AND oldest_ms < $1",
                    &[&older_than_ms],
                )
                .await
                .map_err(failed("overdue"))?
                .get(0);
            Ok(n.max(0) as u64)
        })?)
    }

    fn record_sent(&self, rows: &[SentRow], now_ms: i64) -> R<()> {
        let rows = rows.to_vec();
        Ok(self.pg.run(|pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(failed("sent begin"))?;
            let insert = tx
                .prepare(
                    "INSERT INTO sent
                     (device, doc_ref, patient_ref, first_sent_ms, last_sent_ms, sealed)
                     VALUES ($1, $2, $3, $4, $4, $5)
                     ON CONFLICT (device, doc_ref) DO UPDATE
                     SET last_sent_ms = excluded.last_sent_ms",
                )
                .await
                .map_err(failed("sent"))?;
            for s in &rows {
                tx.execute(
                    &insert,
                    &[
                        &s.device.as_slice(),
                        &s.doc_ref.as_slice(),
                        &s.patient_ref.as_slice(),
                        &now_ms,
                        &s.sealed,
                    ],
                )
                .await
                .map_err(failed("sent"))?;
            }
            tx.commit().await.map_err(failed("sent commit"))
        })?)
    }

    fn sent_to(&self, device: &[u8; 32]) -> R<Vec<StoredSent>> {
        let dev = device.to_vec();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query(
                    "SELECT doc_ref, first_sent_ms, last_sent_ms, sealed FROM sent
                     WHERE device = $1 ORDER BY first_sent_ms",
                    &[&dev],
                )
                .await
                .map_err(failed("sent to"))?;
            Ok(rows
                .iter()
                .map(|r| StoredSent {
                    doc_ref: r.get(0),
                    first_sent_ms: r.get(1),
                    last_sent_ms: r.get(2),
                    sealed: r.get(3),
                })
                .collect())
        })?)
    }

    fn record_grant(
        &self,
        device: &[u8; 32],
        grant_ref: &Ref,
        issued_at_ms: i64,
        expires_at_ms: i64,
        sealed: &[u8],
    ) -> R<()> {
        let (dev, gref, sealed) = (device.to_vec(), grant_ref.to_vec(), sealed.to_vec());
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            c.execute(
                "INSERT INTO grants (device, grant_ref, issued_at_ms, expires_at_ms, sealed)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device, grant_ref) DO NOTHING",
                &[&dev, &gref, &issued_at_ms, &expires_at_ms, &sealed],
            )
            .await
            .map_err(failed("grant"))
            .map(|_| ())
        })?)
    }

    fn retire_grant(&self, device: &[u8; 32], grant_ref: &Ref, now_ms: i64) -> R<()> {
        let (dev, gref) = (device.to_vec(), grant_ref.to_vec());
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            c.execute(
                "UPDATE grants SET retired_at_ms = $3
                 WHERE device = $1 AND grant_ref = $2 AND retired_at_ms IS NULL",
                &[&dev, &gref, &now_ms],
            )
            .await
            .map_err(failed("retire grant"))
            .map(|_| ())
        })?)
    }

    fn grants_issued(
        &self,
        device: &[u8; 32],
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> R<Vec<StoredGrant>> {
        let dev = device.to_vec();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query(
                    "SELECT grant_ref, sealed, retired_at_ms FROM grants
                     WHERE device = $1 AND issued_at_ms BETWEEN $2 AND $3
                     ORDER BY issued_at_ms DESC LIMIT $4",
                    &[&dev, &from_ms, &to_ms, &limit],
                )
                .await
                .map_err(failed("grants issued"))?;
            Ok(rows
                .iter()
                .map(|r| StoredGrant {
                    grant_ref: r.get(0),
                    sealed: r.get(1),
                    retired_at_ms: r.get(2),
                })
                .collect())
        })?)
    }
}
