//! Automerge actor ids, each bound to the device that first pushed a change
//! under it. A change is named by its actor and sequence number. A device
//! that pushes under another device's actor (learnt from the changes the
//! server forwards) passes its work off, in the document's history, as that
//! device's, and takes that actor's next sequence number: where that device
//! still writes under it, its own next change collides with one the server
//! holds. Honest devices draw a fresh random actor for each document they
//! open (and the rebuild after a refusal draws another), so no two devices
//! ever share one; one pushed by another device is refused.
//!
//! Kept in the store (sealed, one row per actor, named by the actor id,
//! which is neither patient data nor a secret) for as long as the server's
//! documents are: a binding must outlive restarts. Actors that wrote only
//! before this check existed, or only on the server (a record loaded, a
//! repair), are bound to the first device that pushes under them.

use automerge::ActorId;
use scr_core::Store;

fn name(actor: &ActorId) -> String {
    format!("actor-owner:{}", actor.to_hex_string())
}

/// Binds each of `actors` not yet bound to `device`, in one transaction
/// each (two sessions racing for one actor: the first commit wins), and
/// answers the first that another device holds, if any. (The rows are
/// never pruned: one per actor a device pushed under, some tens a device
/// a day; the gate bounds how many one session may add.)
pub fn bind(
    store: &Store,
    device: &[u8; 32],
    actors: &[ActorId],
) -> Result<Option<ActorId>, scr_core::StoreError> {
    for actor in actors {
        // Most are bound already (by this device, in an earlier session):
        // read first, write only what is new.
        if let Some(owner) = store.secret(&name(actor))? {
            if owner.as_slice() != device.as_slice() {
                return Ok(Some(actor.clone()));
            }
            continue;
        }
        let mut owner = None;
        store.update_secret(&name(actor), |old| {
            let held = old.map(<[u8]>::to_vec).unwrap_or_else(|| device.to_vec());
            owner = Some(held.clone());
            held
        })?;
        if owner.as_deref() != Some(device.as_slice()) {
            return Ok(Some(actor.clone()));
        }
    }
    Ok(None)
}
