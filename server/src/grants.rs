//! The grant the server issued to each device, and the relationships it
//! is made from: one place for how a grant is named, stored and read back.
//! Both are sealed in the server store (they name patients); the share
//! policy, the holdings list, encounters and the access log read a device's
//! grant from here, never from what the device says. The grants a device
//! was issued before its current one are kept too (the newest
//! `KEPT_GRANTS`): what it wrote offline under yesterday's grant is checked
//! against that grant when it is pushed today.

use scr_core::Store;
use scr_core::channel::hex_key;
use scr_core::grant::{GrantRelationship, RoleProfileGrant};

#[derive(Debug, thiserror::Error)]
pub enum GrantsError {
    #[error("stored relationships are damaged")]
    Damaged,
    #[error("the grant could not be encoded")]
    Encode,
    #[error("server store: {0}")]
    Store(#[from] scr_core::StoreError),
}

/// A grant's id: unique per login.
pub(crate) fn grant_id(now_ms: i64, device_key: &[u8; 32]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&now_ms.to_le_bytes());
    h.update(device_key);
    let mut random = [0u8; 16];
    let _ = getrandom::fill(&mut random);
    h.update(&random);
    h.finalize().to_hex()[..32].to_owned()
}

/// Where the server keeps each device's current grant (sealed: it names patients).
fn grant_secret_name(device_key: &[u8; 32]) -> String {
    format!("grant:{}", hex_key(device_key))
}

/// Where it keeps every grant it issued to the device, oldest first.
fn history_name(device_key: &[u8; 32]) -> String {
    format!("grants-issued:{}", hex_key(device_key))
}

/// Grants kept per device: two months of daily logins and encounters.
pub const KEPT_GRANTS: usize = 128;

/// Records `grant` as the device's current grant, before it is signed and
/// sent: the share policy decides this device's documents from it.
pub(crate) fn store_issued(
    store: &Store,
    device_key: &[u8; 32],
    grant: &RoleProfileGrant,
) -> Result<(), GrantsError> {
    let bytes = serde_json::to_vec(grant).map_err(|_| GrantsError::Encode)?;
    // History first: a grant the device holds is always in it.
    store.update_secret(&history_name(device_key), |old| {
        let mut list: Vec<RoleProfileGrant> = old
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        list.push(grant.clone());
        let excess = list.len().saturating_sub(KEPT_GRANTS);
        list.drain(..excess);
        serde_json::to_vec(&list).unwrap_or_default()
    })?;
    store.put_secret(&grant_secret_name(device_key), &bytes)?;
    Ok(())
}

/// Every grant the server issued to this device (the newest
/// `KEPT_GRANTS`), oldest first.
pub(crate) fn issued_history(store: &Store, device_key: &[u8; 32]) -> Vec<RoleProfileGrant> {
    store
        .secret(&history_name(device_key))
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The grant the server last issued to this device, if any.
pub(crate) fn issued(store: &Store, device_key: &[u8; 32]) -> Option<RoleProfileGrant> {
    let bytes = store.secret(&grant_secret_name(device_key)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

fn relationships_name(user_id: &str) -> String {
    format!("relationships:{user_id}")
}

/// A user's relationships, sealed in the server store (they hold NHS numbers).
/// Encounters past their end are left out.
pub fn relationships(store: &Store, user_id: &str) -> Result<Vec<GrantRelationship>, GrantsError> {
    let mut list: Vec<GrantRelationship> = match store.secret(&relationships_name(user_id))? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| GrantsError::Damaged)?,
        None => Vec::new(),
    };
    let now = scr_core::clock::now_ms();
    list.retain(|r| r.holds_at(now));
    Ok(list)
}

/// Changes a user's stored relationships in one read-modify-write; `keep`
/// decides which stay, `add` is appended. Returns whether any was dropped.
pub(crate) fn edit_relationships(
    store: &Store,
    user_id: &str,
    keep: impl Fn(&GrantRelationship) -> bool,
    add: Option<GrantRelationship>,
) -> Result<bool, GrantsError> {
    let mut dropped = false;
    store.update_secret(&relationships_name(user_id), |old| {
        let mut list: Vec<GrantRelationship> = old
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let before = list.len();
        list.retain(|r| keep(r));
        dropped = list.len() < before;
        list.extend(add);
        serde_json::to_vec(&list).unwrap_or_default()
    })?;
    Ok(dropped)
}
