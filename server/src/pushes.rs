//! Pushes the server will not merge, flagged. samod drops changes a device
//! sends to a document it may only read (or not see at all) without saying
//! so; the server reads each incoming wire message far enough to see which
//! document it carries changes for, and when the device may not write that
//! document, counts it, logs it (no patient data) and audits it once per
//! session and document.

use std::collections::HashSet;
use std::sync::Arc;

use samod::{DocumentId, PeerId, ShareConfig};
use scr_core::Store;
use scr_core::audit::Outcome;
use tokio::sync::mpsc;

use crate::policy::AccessPolicy;

/// The document an incoming wire message carries changes for, if any (a
/// `sync` or `request` message whose Automerge sync message has changes).
pub fn document_with_changes(incoming: &crate::wire::Incoming) -> Option<String> {
    let Some(Ok(sync)) = &incoming.sync else {
        return None;
    };
    (!sync.changes.is_empty())
        .then(|| incoming.document_id.clone())
        .flatten()
}

/// Documents checked per session; past this a device flooding pushes to
/// made-up ids is checked no further (each check reads the store).
const MAX_CHECKED: usize = 1024;

/// Starts the checker for one session; returns the inspector its
/// transport calls with every incoming message.
pub fn watch(
    policy: AccessPolicy,
    store: Store,
    device: [u8; 32],
    refused: Arc<std::sync::atomic::AtomicU64>,
    flood_dropped: Arc<std::sync::atomic::AtomicU64>,
) -> scr_core::channel::Inspector {
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
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    "a device pushed changes to a document it may not write; not merged"
                );
            }
        }
    });
    let checked = std::sync::Mutex::new(HashSet::new());
    let flood = std::sync::Mutex::new(crate::flood::FloodGuard::default());
    Box::new(move |message: &[u8]| {
        let Some(incoming) = crate::wire::parse(message) else {
            // Not a map samod could read either: let samod refuse it.
            return true;
        };
        if !crate::wire::acceptable(&incoming) {
            tracing::warn!(kind = %incoming.kind, "an incoming sync message was dropped by the guard");
            return false;
        }
        let admitted = flood
            .lock()
            .map(|mut g| g.admit(&incoming.kind, incoming.document_id.as_deref()))
            .unwrap_or(false);
        if !admitted {
            let dropped = flood_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if dropped.is_multiple_of(1024) {
                tracing::warn!(
                    "a device asked about more documents than any caseload holds; dropped"
                );
            }
            return false;
        }
        if let Some(doc) = document_with_changes(&incoming)
            && let Ok(mut checked) = checked.lock()
            && checked.len() < MAX_CHECKED
            && checked.insert(doc.clone())
        {
            let _ = tx.try_send(doc);
        }
        true
    })
}
