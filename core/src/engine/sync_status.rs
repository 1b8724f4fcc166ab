//! Each held record's sync status, for the app to show beside it ("has my
//! visit note reached the server?"): whether the record has changes the
//! server has not confirmed, and when the server last confirmed it in
//! step. When it was confirmed is kept (sealed) across restarts, written
//! once per pass, and pruned of every record no longer held, in the same
//! transaction that forgets one.

use std::collections::BTreeMap;

use super::{Engine, EngineError};
use crate::NhsNumber;

/// Where the confirmation times are persisted (sealed).
const CONFIRMED: &str = "sync-confirmed";

/// One held record's sync status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSyncStatus {
    pub nhs_number: NhsNumber,
    /// Changes made on this device that the server has not confirmed.
    pub unsent: bool,
    /// When the server last confirmed the record in step (never: `None`).
    pub last_confirmed_ms: Option<i64>,
}

pub(super) fn read_confirmed(
    store: &crate::Store,
    conn: &dyn crate::store::Rows,
) -> Result<BTreeMap<NhsNumber, i64>, crate::StoreError> {
    match store.sealed_meta(conn, CONFIRMED)? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).map_err(|_| crate::StoreError::BadRow { table: "meta" })
        }
        None => Ok(BTreeMap::new()),
    }
}

fn write_confirmed_tx(
    store: &crate::Store,
    tx: &dyn crate::store::Rows,
    confirmed: &BTreeMap<NhsNumber, i64>,
) -> Result<(), crate::StoreError> {
    let json =
        serde_json::to_vec(confirmed).map_err(|_| crate::StoreError::BadRow { table: "meta" })?;
    store.put_sealed_meta_tx(tx, CONFIRMED, &json)
}

impl Engine {
    /// Every held record's sync status, in NHS number order. The list
    /// names patients: only while a session is unlocked, as the holdings.
    pub fn record_sync_statuses(&self) -> Result<Vec<RecordSyncStatus>, EngineError> {
        {
            let mut state = self.state()?;
            self.checked_active(&mut state, false)?;
        }
        let confirmed = self
            .local_changes
            .confirmed
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let mut out: Vec<RecordSyncStatus> = self
            .store
            .holdings()?
            .into_iter()
            .map(|h| RecordSyncStatus {
                nhs_number: h.nhs_number,
                unsent: self.is_unsent(&h.nhs_number),
                last_confirmed_ms: confirmed.get(&h.nhs_number).copied(),
            })
            .collect();
        out.sort_by_key(|s| s.nhs_number);
        Ok(out)
    }

    /// Moves whenever a record's sync status may have changed (an edit
    /// here, a confirmation, a record received or forgotten).
    pub fn watch_sync_statuses(&self) -> tokio::sync::watch::Receiver<u64> {
        self.local_changes.status.subscribe()
    }

    pub(crate) fn status_changed(&self) {
        self.local_changes
            .status
            .send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The server confirmed the record in step now (kept in memory until
    /// [`Engine::persist_confirmed`]).
    pub(crate) fn note_confirmed(&self, nhs: &NhsNumber) {
        let now = self.clock.now_ms();
        if let Ok(mut c) = self.local_changes.confirmed.lock() {
            c.insert(*nhs, now);
        }
        self.status_changed();
    }

    /// Writes the confirmation times of the records still held, once (the
    /// sync driver, after each pass; apps with their own transport, after
    /// [`Engine::confirm_sent`]).
    pub fn persist_confirmed(&self) -> Result<(), EngineError> {
        // Under the engine lock, which forgetting holds: a record forgotten
        // meanwhile cannot come back into what is written.
        let _state = self.state()?;
        let held: std::collections::BTreeSet<NhsNumber> = self
            .store
            .holdings()?
            .into_iter()
            .map(|h| h.nhs_number)
            .collect();
        let confirmed = {
            let Ok(mut c) = self.local_changes.confirmed.lock() else {
                return Ok(());
            };
            c.retain(|nhs, _| held.contains(nhs));
            c.clone()
        };
        self.store
            .write(|tx| write_confirmed_tx(&self.store, tx, &confirmed))?;
        Ok(())
    }

    /// In the transaction forgetting `nhs`: its confirmation time goes too.
    pub(super) fn forget_confirmed_tx(
        &self,
        tx: &dyn crate::store::Rows,
        nhs: &NhsNumber,
    ) -> Result<(), crate::StoreError> {
        let mut confirmed = read_confirmed(&self.store, tx)?;
        if confirmed.remove(nhs).is_some() {
            write_confirmed_tx(&self.store, tx, &confirmed)?;
        }
        if let Ok(mut c) = self.local_changes.confirmed.lock() {
            c.remove(nhs);
        }
        Ok(())
    }
}
