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

/// Retires the device's current grant (its user logged out): it
/// authorises nothing more; the history keeps it, to judge what was done
/// under it. Returns the grant retired, if there was one.
pub(crate) fn retire(
    store: &Store,
    device_key: &[u8; 32],
) -> Result<Option<RoleProfileGrant>, GrantsError> {
    let current = issued(store, device_key);
    if current.is_some() {
        store.put_secret(&grant_secret_name(device_key), b"")?;
    }
    Ok(current)
}

/// The grant the server last issued to this device, if any.
pub(crate) fn issued(store: &Store, device_key: &[u8; 32]) -> Option<RoleProfileGrant> {
    let bytes = store.secret(&grant_secret_name(device_key)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// How far before an event a grant naming its patient is looked for (a
/// record stays on a tablet while its caseload lasts; each day's grant
/// names it again).
const COVERED_WITHIN_MS: i64 = 31 * 24 * 60 * 60 * 1000;

/// The grants an upload's events are judged against: those the archive
/// keeps that were issued from a month before its earliest event to its
/// latest, with `kept` (the store's [`issued_history`] for the device:
/// grants issued before the archive kept them), each once, oldest first.
pub(crate) fn judged_against(
    archive: &crate::archive::Archive,
    kept: Vec<RoleProfileGrant>,
    device_key: &[u8; 32],
    upload: &scr_core::protocol::AuditUpload,
) -> Result<Vec<RoleProfileGrant>, crate::archive::ArchiveError> {
    let times = upload.events.iter().map(|e| e.wall_time_ms);
    let (Some(first), Some(last)) = (times.clone().min(), times.max()) else {
        return Ok(Vec::new());
    };
    let from = first.saturating_sub(COVERED_WITHIN_MS + scr_core::grant::MAX_GRANT_MS);
    let to = last.saturating_add(scr_core::grant::CLOCK_SKEW_MS);
    let mut grants = archive.grants_issued(device_key, from, to)?;
    for g in kept {
        if !grants.iter().any(|k| k.grant_id == g.grant_id) {
            grants.push(g);
        }
    }
    grants.sort_by_key(|g| g.issued_at_ms);
    Ok(grants)
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

/// Bumped after every change this process makes to anyone's relationships
/// (an encounter opened or closed): share decisions keep a device's
/// relationships while this stands still (`policy::inputs`), since a user's
/// encounter opened on one device changes what her other devices may hold.
/// (Another process's changes move every share epoch instead.)
static RELATIONSHIPS_EDITED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn relationships_edited() -> u64 {
    RELATIONSHIPS_EDITED.load(std::sync::atomic::Ordering::SeqCst)
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
    RELATIONSHIPS_EDITED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use scr_core::crypto::{SecretKey, StaticKeyProvider};
    use scr_core::protocol::{AUDIT_UPLOAD_FORMAT, AuditUpload, Backlog};

    use super::*;
    use crate::archive::vouch::tests::{event, nurse_grant};
    use crate::archive::{Archive, Issued, vouch};

    const DAY: i64 = 24 * 60 * 60 * 1000;
    const T0: i64 = 1_800_000_000_000;

    fn grant(n: i64) -> RoleProfileGrant {
        RoleProfileGrant {
            grant_id: format!("g{n}"),
            ..nurse_grant(T0 + n * DAY, &[1])
        }
    }

    #[test]
    fn an_event_uploaded_after_hundreds_of_later_logins_is_judged_against_its_own_grant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().join("s.db"),
            &StaticKeyProvider::new(SecretKey::from_bytes([3; 32])),
        )
        .unwrap();
        let archive = Archive::open(
            &dir.path().join("audit.db"),
            &SecretKey::from_bytes([4; 32]),
        )
        .unwrap();
        let device = [9u8; 32];
        for n in 0..200 {
            archive.record_grant(&device, &grant(n)).unwrap();
            store_issued(&store, &device, &grant(n)).unwrap();
        }
        assert_eq!(issued_history(&store, &device).len(), KEPT_GRANTS);
        // A view during the first day's grant, uploaded 200 days on.
        let event = event("555000000102", "R0050", "RX1", Some(1), T0 + DAY / 4);
        let upload = AuditUpload {
            format: AUDIT_UPLOAD_FORMAT,
            events: vec![event.clone()],
            backlog: Backlog::default(),
        };
        let kept = issued_history(&store, &device);
        let grants = judged_against(&archive, kept, &device, &upload).unwrap();
        assert!(grants.iter().any(|g| g.grant_id == "g0"), "the first grant");
        let issued = Issued {
            grants,
            ..Issued::default()
        };
        assert_eq!(vouch(&event, &issued), Ok(()));
        // Only the store's 128 would not have vouched for it.
        let store_only = Issued {
            grants: issued_history(&store, &device),
            ..Issued::default()
        };
        assert!(vouch(&event, &store_only).is_err());
    }
}
