//! The pushes the server refused, per device (sealed, the newest
//! `KEPT_REFUSALS`): so each refused change is flagged once however often
//! the device offers it again, and the device is told what was refused.

use scr_core::Store;
use scr_core::channel::hex_key;
use scr_core::protocol::{KEPT_REFUSALS, PushRefusal};

fn name(device_key: &[u8; 32]) -> String {
    format!("push-refusals:{}", hex_key(device_key))
}

/// Records `refusal` for the device. `false` when that change was refused
/// before (nothing recorded: it is not flagged again).
pub(crate) fn record(
    store: &Store,
    device_key: &[u8; 32],
    refusal: &PushRefusal,
) -> Result<bool, scr_core::StoreError> {
    let mut new = false;
    store.update_secret(&name(device_key), |old| {
        let mut list: Vec<PushRefusal> = old
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        new = !list
            .iter()
            .any(|r| r.change == refusal.change && r.document == refusal.document);
        if new {
            list.push(refusal.clone());
            let excess = list.len().saturating_sub(KEPT_REFUSALS);
            list.drain(..excess);
        }
        serde_json::to_vec(&list).unwrap_or_default()
    })?;
    Ok(new)
}

/// The device's refused pushes, oldest first.
pub(crate) fn of_device(store: &Store, device_key: &[u8; 32]) -> Vec<PushRefusal> {
    store
        .secret(&name(device_key))
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}
