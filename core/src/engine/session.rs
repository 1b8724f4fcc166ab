//! The persisted session: the verified grant as the server signed it, the
//! Argon2id passcode verifier, failed tries and lock-out, and the clock
//! high-water mark. Sealed in the store; survives restarts, so killing the
//! app does not reset the count of wrong passcodes.

use rusqlite::{Connection, Transaction};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const SESSION: &str = "session";
const CLOCK: &str = "clock-high-water";

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// The grant bytes exactly as signed, re-verified on every unlock.
    pub grant: Vec<u8>,
    pub passcode_phc: String,
    pub failed_attempts: u32,
    pub locked_out: bool,
}

pub(crate) fn load(store: &Store, conn: &Connection) -> Result<Option<SessionRecord>, StoreError> {
    store
        .sealed_meta(conn, SESSION)?
        .map(|plain| {
            serde_json::from_slice(&plain).map_err(|_| StoreError::BadRow { table: "meta" })
        })
        .transpose()
}

pub(crate) fn save(
    store: &Store,
    tx: &Transaction<'_>,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    let plain = serde_json::to_vec(record).map_err(|_| StoreError::BadRow { table: "meta" })?;
    store.put_sealed_meta_tx(tx, SESSION, &plain)
}

/// The latest wall-clock time the device has seen.
pub(crate) fn clock_high_water(store: &Store, conn: &Connection) -> Result<i64, StoreError> {
    Ok(store
        .sealed_meta(conn, CLOCK)?
        .and_then(|b| b.try_into().ok().map(i64::from_le_bytes))
        .unwrap_or(i64::MIN))
}

pub(crate) fn set_clock_high_water(
    store: &Store,
    tx: &Transaction<'_>,
    at: i64,
) -> Result<(), StoreError> {
    store.put_sealed_meta_tx(tx, CLOCK, &at.to_le_bytes())
}

pub(crate) use crate::crypto::passcode::{hash_passcode, passcode_matches};
