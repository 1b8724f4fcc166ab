//! Pushes the server will not merge, flagged. samod drops changes a device
//! sends to a document it may only read (or not see at all) without saying
//! so; for each document a session pushed changes to, this checks the share
//! decision off the runtime and, when the device may not write it, counts
//! it, logs it (no patient data) and audits it, once per session and
//! document.

use prometheus_client::metrics::counter::Counter;
use samod::{DocumentId, PeerId, ShareConfig};
use scr_core::Store;
use scr_core::audit::Outcome;
use tokio::sync::mpsc;

use crate::policy::AccessPolicy;

/// Starts the flagger for one session's device; send it each document id
/// the session pushed changes to.
pub(super) fn spawn_flagger(
    policy: AccessPolicy,
    store: Store,
    device: [u8; 32],
    refused: Counter,
) -> mpsc::Sender<String> {
    // Bounded: a device cannot queue unbounded work; pushes past the
    // bound are still refused by samod, just not flagged.
    let (tx, mut rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let peer = PeerId::from(scr_core::channel::hex_key(&device));
        while let Some(doc) = rx.recv().await {
            let Ok(doc_id) = doc.parse::<DocumentId>() else {
                continue;
            };
            let (policy, store, peer) = (policy.clone(), store.clone(), peer.clone());
            let flag = tokio::task::spawn_blocking(move || {
                if policy.decide(&doc_id, &peer) == ShareConfig::read_write() {
                    return false;
                }
                // A document no record owns is a probe or stale: counted,
                // not audited (an audit row per made-up id would let a
                // device fill the trail).
                let Some(owner) = store.owner_of_document(&doc_id.to_string()).ok().flatten()
                else {
                    return true;
                };
                let owner = Some(owner);
                let detail = format!(
                    "device {} pushed to {}",
                    &scr_core::channel::hex_key(&device)[..16],
                    owner
                        .map(|(_, c)| c.as_str())
                        .unwrap_or("a document it may not write")
                );
                if crate::audit::record(
                    &store,
                    "server",
                    "push-refused",
                    owner.map(|(nhs, _)| nhs),
                    Outcome::Recorded,
                    Some(detail),
                )
                .is_err()
                {
                    tracing::error!("a refused push could not be audited");
                }
                true
            })
            .await
            .unwrap_or(false);
            if flag {
                refused.inc();
                tracing::warn!(
                    "a device pushed changes to a document it may not write; not merged"
                );
            }
        }
    });
    tx
}
