//! The durable audit queue: events appended inside the same transaction
//! that releases or changes data, chained by hash, released only up to what
//! the server acknowledged.

use serde::{Deserialize, Serialize};

use super::{Rows, Store, StoreError};
use crate::audit::{AuditDraft, AuditEvent, ChainError, GENESIS_HASH, verify_chain};
use crate::crypto;

const TABLE: &str = "audit_queue";
const HEAD: &str = "audit-head";
const BASE: &str = "audit-base";

/// A position in the chain: the last event's counter and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    pub seq: u64,
    pub hash: String,
}

impl ChainPoint {
    fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl Store {
    fn chain_point(&self, conn: &dyn Rows, name: &str) -> Result<ChainPoint, StoreError> {
        let Some(sealed) = conn.meta_get(name)? else {
            return Ok(ChainPoint::genesis());
        };
        let plain = crypto::open(&self.inner.keys.audit, &[b"meta", name.as_bytes()], &sealed)
            .map_err(|cause| StoreError::Tampered {
                table: "meta",
                cause,
            })?;
        serde_json::from_slice(&plain).map_err(|_| StoreError::BadRow { table: "meta" })
    }

    fn set_chain_point(
        &self,
        tx: &dyn Rows,
        name: &str,
        point: &ChainPoint,
    ) -> Result<(), StoreError> {
        let plain = serde_json::to_vec(point).map_err(|_| StoreError::BadRow { table: "meta" })?;
        let sealed = crypto::seal(&self.inner.keys.audit, &[b"meta", name.as_bytes()], &plain)
            .map_err(StoreError::Crypto)?;
        tx.meta_put(name, &sealed)
    }

    /// Appends an event in the caller's transaction: it commits, or nothing
    /// that the transaction releases or changes does.
    pub fn append_audit_tx(
        &self,
        tx: &dyn Rows,
        draft: AuditDraft,
        device: &str,
        now_ms: i64,
    ) -> Result<AuditEvent, StoreError> {
        let head = self.chain_point(tx, HEAD)?;
        let event = AuditEvent::from_draft(draft, device, head.seq + 1, head.hash, now_ms);
        let seq = i64::try_from(event.seq).map_err(|_| StoreError::BadRow { table: TABLE })?;
        let sealed = crypto::seal(
            &self.inner.keys.audit,
            &[TABLE.as_bytes(), &seq.to_le_bytes()],
            &event.encode(),
        )
        .map_err(StoreError::Crypto)?;
        tx.audit_insert(seq, &sealed)?;
        self.set_chain_point(
            tx,
            HEAD,
            &ChainPoint {
                seq: event.seq,
                hash: event.hash(),
            },
        )?;
        Ok(event)
    }

    pub fn append_audit(
        &self,
        draft: AuditDraft,
        device: &str,
        now_ms: i64,
    ) -> Result<AuditEvent, StoreError> {
        self.write(|tx| self.append_audit_tx(tx, draft, device, now_ms))
    }

    /// How many events wait for acknowledgement (without decrypting them).
    pub fn audit_queue_len(&self) -> Result<u64, StoreError> {
        self.read(|rows| rows.audit_count())
    }

    /// Every queued (unacknowledged) event, oldest first.
    pub fn queued_audit_events(&self) -> Result<Vec<AuditEvent>, StoreError> {
        self.oldest_audit_events(None)
    }

    /// The oldest `limit` queued events (all of them for `None`).
    pub fn oldest_audit_events(&self, limit: Option<usize>) -> Result<Vec<AuditEvent>, StoreError> {
        self.audit_events_after(0, limit)
    }

    /// The queued events after `seq`, oldest first, at most `limit`.
    pub fn audit_events_after(
        &self,
        seq: u64,
        limit: Option<usize>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let after = i64::try_from(seq).unwrap_or(i64::MAX);
        self.read(|conn| {
            conn.audit_after(after, limit)?
                .into_iter()
                .map(|(seq, sealed)| {
                    let plain = crypto::open(
                        &self.inner.keys.audit,
                        &[TABLE.as_bytes(), &seq.to_le_bytes()],
                        &sealed,
                    )
                    .map_err(|cause| StoreError::Tampered {
                        table: TABLE,
                        cause,
                    })?;
                    let event =
                        AuditEvent::decode(&plain).ok_or(StoreError::BadRow { table: TABLE })?;
                    if i64::try_from(event.seq).ok() != Some(seq) {
                        return Err(StoreError::BadRow { table: TABLE });
                    }
                    Ok(event)
                })
                .collect()
        })
    }

    /// Checks the queue continues the chain from the last released event
    /// and ends at the recorded head.
    pub fn verify_audit_chain(&self) -> Result<Result<(), ChainError>, StoreError> {
        let events = self.queued_audit_events()?;
        let (base, head) =
            self.read(|conn| Ok((self.chain_point(conn, BASE)?, self.chain_point(conn, HEAD)?)))?;
        if let Err(e) = verify_chain(base.seq, &base.hash, &events) {
            return Ok(Err(e));
        }
        let end = events
            .last()
            .map(|e| (e.seq, e.hash()))
            .unwrap_or((base.seq, base.hash));
        if end != (head.seq, head.hash) {
            return Ok(Err(ChainError::Gap { seq: end.0 + 1 }));
        }
        Ok(Ok(()))
    }

    /// Releases events up to and including `seq` once the server has
    /// acknowledged them; the chain's base moves with them. Refuses when the
    /// queue does not verify: releasing past a gap would erase the evidence.
    pub fn release_audit_through(&self, seq: u64) -> Result<usize, StoreError> {
        if self.verify_audit_chain()?.is_err() {
            return Err(StoreError::BadRow { table: TABLE });
        }
        let upto = i64::try_from(seq).map_err(|_| StoreError::BadRow { table: TABLE })?;
        self.write(|tx| {
            // Read the last released event inside the transaction, so a
            // concurrent append cannot slip between the read and the delete.
            let Some((last_seq, sealed)) = tx.audit_last_through(upto)? else {
                return Ok(0);
            };
            let plain = crypto::open(
                &self.inner.keys.audit,
                &[TABLE.as_bytes(), &last_seq.to_le_bytes()],
                &sealed,
            )
            .map_err(|cause| StoreError::Tampered {
                table: TABLE,
                cause,
            })?;
            let event = AuditEvent::decode(&plain).ok_or(StoreError::BadRow { table: TABLE })?;
            let n = tx.audit_delete_through(upto)?;
            self.set_chain_point(
                tx,
                BASE,
                &ChainPoint {
                    seq: event.seq,
                    hash: event.hash(),
                },
            )?;
            Ok(n)
        })
    }
}
