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
pub fn document_with_changes(message: &[u8]) -> Option<String> {
    let mut d = minicbor::Decoder::new(message);
    let entries = d.map().ok()??;
    let (mut kind, mut doc, mut data) = (None, None, None);
    for _ in 0..entries {
        match d.str().ok()? {
            "type" => kind = Some(d.str().ok()?.to_owned()),
            "documentId" => doc = Some(d.str().ok()?.to_owned()),
            "data" => data = Some(d.bytes().ok()?.to_vec()),
            _ => d.skip().ok()?,
        }
    }
    if !matches!(kind.as_deref(), Some("sync" | "request")) {
        return None;
    }
    let sync = automerge::sync::Message::decode(&data?).ok()?;
    (!sync.changes.is_empty()).then_some(doc?)
}

/// Starts the checker for one session; returns the inspector its
/// transport calls with every incoming message.
pub fn watch(
    policy: AccessPolicy,
    store: Store,
    device: [u8; 32],
    refused: Arc<std::sync::atomic::AtomicU64>,
) -> scr_core::channel::Inspector {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let peer = PeerId::from(scr_core::channel::hex_key(&device));
        let mut flagged = HashSet::new();
        while let Some(doc) = rx.recv().await {
            if flagged.contains(&doc) {
                continue;
            }
            let Ok(doc_id) = doc.parse::<DocumentId>() else {
                continue;
            };
            let (policy, store, peer) = (policy.clone(), store.clone(), peer.clone());
            let flag = tokio::task::spawn_blocking(move || {
                if policy.decide(&doc_id, &peer) == ShareConfig::read_write() {
                    return false;
                }
                let owner = store.owner_of_document(&doc_id.to_string()).ok().flatten();
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
                flagged.insert(doc);
            }
        }
    });
    Box::new(move |message: &[u8]| {
        if let Some(doc) = document_with_changes(message) {
            let _ = tx.send(doc);
        }
    })
}
