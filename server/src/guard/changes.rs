//! Pushed changes checked against the record's rules before samod merges
//! them: for a sync message carrying changes to a compartment document,
//! the document as samod holds it now, the same with the changes applied
//! (on a copy), and `scr_core::push_rules::check_push` for every grant
//! the server issued to the pushing device. (A push to a document the
//! device may not write at all is samod's to drop and `flag`'s to report.)
//! A refused message is dropped
//! whole (nothing of it merged), counted and audited naming the device,
//! the patient, the compartment and the reason.

use std::sync::Arc;

use automerge::Automerge;
use prometheus_client::metrics::counter::Counter;
use samod::{DocumentId, PeerId, Repo, ShareConfig};
use scr_core::Store;
use scr_core::audit::Outcome;
use scr_core::channel::{Gate, hex_key};
use scr_core::push_rules::{PushLimits, Refusal, check_push};

use super::wire;
use crate::policy::AccessPolicy;

/// The gate for one sync session of `device`.
pub fn gate(
    repo: Repo,
    store: Store,
    policy: AccessPolicy,
    device: [u8; 32],
    refused: Counter,
) -> Gate {
    let checker = Arc::new(Checker {
        repo,
        store,
        policy,
        device,
        refused,
    });
    Arc::new(move |message: Vec<u8>| {
        let checker = checker.clone();
        Box::pin(async move { checker.pass(message).await })
    })
}

struct Checker {
    repo: Repo,
    store: Store,
    policy: AccessPolicy,
    device: [u8; 32],
    refused: Counter,
}

impl Checker {
    /// The message, or `None` when it carries changes the rules refuse.
    async fn pass(&self, message: Vec<u8>) -> Option<Vec<u8>> {
        let Some(incoming) = wire::parse(&message) else {
            return Some(message);
        };
        let (Some(doc), Some(Ok(sync))) = (wire::document_with_changes(&incoming), &incoming.sync)
        else {
            return Some(message);
        };
        let Ok(doc_id) = doc.parse::<DocumentId>() else {
            return Some(message);
        };
        let (store, policy, device, id) = (
            self.store.clone(),
            self.policy.clone(),
            self.device,
            doc_id.clone(),
        );
        let found = tokio::task::spawn_blocking(move || {
            let peer = PeerId::from(hex_key(&device));
            if policy.decide(&id, &peer) != ShareConfig::read_write() {
                return None;
            }
            let owner = store.owner_of_document(&id.to_string()).ok().flatten();
            owner.map(|o| (o, crate::grants::issued_history(&store, &device)))
        })
        .await
        .ok()
        .flatten();
        // Not a document this device may write, or not a record's: samod
        // merges nothing of it.
        let Some(((patient, compartment), grants)) = found else {
            return Some(message);
        };
        let verdict = match self.repo.find(doc_id).await {
            Ok(Some(handle)) => {
                let changes: Vec<Vec<u8>> = sync.changes.iter().map(|c| c.to_vec()).collect();
                let now = scr_core::clock::now_ms();
                handle
                    .with_document_async(move |held: &mut Automerge| {
                        let mut after = held.clone();
                        for chunk in &changes {
                            if after.load_incremental(chunk).is_err() {
                                return Err(Refusal::MalformedVersion);
                            }
                        }
                        check_push(
                            compartment,
                            &*held,
                            &after,
                            &grants,
                            &patient,
                            now,
                            &PushLimits::default(),
                        )
                    })
                    .await
                    // The repo stopped: samod merges nothing either.
                    .ok()?
            }
            // A record's document samod cannot open: nothing to merge into,
            // so nothing to check; samod answers it.
            _ => Ok(0),
        };
        match verdict {
            Ok(_) => Some(message),
            Err(refusal) => {
                self.flag(patient, compartment, refusal).await;
                None
            }
        }
    }

    async fn flag(
        &self,
        patient: scr_core::NhsNumber,
        compartment: scr_core::record::Compartment,
        refusal: Refusal,
    ) {
        self.refused.inc();
        tracing::warn!(
            compartment = compartment.as_str(),
            %refusal,
            "a device pushed changes the record's rules refuse; not merged"
        );
        let (store, device) = (self.store.clone(), self.device);
        let audited = tokio::task::spawn_blocking(move || {
            crate::audit::record(
                &store,
                "server",
                "push-refused",
                Some(patient),
                Outcome::Recorded,
                Some(format!(
                    "device {} pushed to {}: {refusal}",
                    &hex_key(&device)[..16],
                    compartment.as_str()
                )),
            )
        })
        .await;
        if !matches!(audited, Ok(Ok(()))) {
            tracing::error!("a refused push could not be audited");
        }
    }
}
