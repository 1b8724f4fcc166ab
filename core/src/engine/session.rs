//! The persisted session: the verified grant as the server signed it, the
//! Argon2id passcode verifier, failed tries and lock-out, the clock
//! high-water mark, and how long the grant has been in use. Sealed in the store; survives restarts, so killing the
//! app does not reset the count of wrong passcodes.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const SESSION: &str = "session";
const CLOCK: &str = "clock-high-water";
const GRANT_AGE: &str = "grant-age";

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// The grant bytes exactly as signed, re-verified on every unlock.
    pub grant: Vec<u8>,
    pub passcode_phc: String,
    pub failed_attempts: u32,
    pub locked_out: bool,
}

pub(crate) fn load(
    store: &Store,
    conn: &dyn crate::store::Rows,
) -> Result<Option<SessionRecord>, StoreError> {
    store
        .sealed_meta(conn, SESSION)?
        .map(|plain| {
            serde_json::from_slice(&plain).map_err(|_| StoreError::BadRow { table: "meta" })
        })
        .transpose()
}

pub(crate) fn save(
    store: &Store,
    tx: &dyn crate::store::Rows,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    let plain = serde_json::to_vec(record).map_err(|_| StoreError::BadRow { table: "meta" })?;
    store.put_sealed_meta_tx(tx, SESSION, &plain)
}

/// Forgets the session: its grant and passcode verifier (logging out; the
/// next use needs an online login).
pub(crate) fn clear(store: &Store, tx: &dyn crate::store::Rows) -> Result<(), StoreError> {
    store.delete_meta_tx(tx, SESSION)
}

/// The latest wall-clock time the device has seen.
pub(crate) fn clock_high_water(
    store: &Store,
    conn: &dyn crate::store::Rows,
) -> Result<i64, StoreError> {
    Ok(store
        .sealed_meta(conn, CLOCK)?
        .and_then(|b| b.try_into().ok().map(i64::from_le_bytes))
        .unwrap_or(i64::MIN))
}

pub(crate) fn set_clock_high_water(
    store: &Store,
    tx: &dyn crate::store::Rows,
    at: i64,
) -> Result<(), StoreError> {
    store.put_sealed_meta_tx(tx, CLOCK, &at.to_le_bytes())
}

/// How long the current grant has been in use on this device, counted in
/// monotonic time (which winding the wall clock back does not touch):
/// what was stored, and the monotonic time it was stored at. Accumulated
/// across restarts; time the app is not running is counted by the wall
/// clock alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GrantAge {
    pub stored_ms: i64,
    pub mono_at: i64,
}

impl GrantAge {
    /// The age at monotonic time `mono`.
    pub fn at(&self, mono: i64) -> i64 {
        self.stored_ms
            .saturating_add(mono.saturating_sub(self.mono_at).max(0))
    }
}

/// The stored age of the current grant (0 if none was stored).
pub(crate) fn grant_age(store: &Store, conn: &dyn crate::store::Rows) -> Result<i64, StoreError> {
    Ok(store
        .sealed_meta(conn, GRANT_AGE)?
        .and_then(|b| b.try_into().ok().map(i64::from_le_bytes))
        .unwrap_or(0))
}

pub(crate) fn set_grant_age(
    store: &Store,
    tx: &dyn crate::store::Rows,
    age_ms: i64,
) -> Result<(), StoreError> {
    store.put_sealed_meta_tx(tx, GRANT_AGE, &age_ms.to_le_bytes())
}

pub(crate) use crate::crypto::passcode::{hash_passcode, passcode_matches};
