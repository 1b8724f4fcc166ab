//! Pushed changes checked against the record's rules before samod merges
//! them: for a sync message carrying changes to a compartment document,
//! `scr_core::push_rules::check_changes` on the changes' own operations
//! against the document as samod holds it (or, when they cannot be judged
//! alone, `check_push` on a copy with them applied), for every grant the
//! server issued to the pushing device. (A push to a document the
//! device may not write at all is samod's to drop and `flag`'s to report.)
//! A refused message is dropped
//! whole (nothing of it merged), counted and audited naming the device,
//! the patient, the compartment and the reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use automerge::Automerge;
use prometheus_client::metrics::counter::Counter;
use samod::{DocumentId, PeerId, Repo, ShareConfig};
use scr_core::audit::Outcome;
use scr_core::channel::{Gate, hex_key};
use scr_core::grant::RoleProfileGrant;
use scr_core::push_rules::{PushLimits, Refusal, check_changes, check_push};
use scr_core::record::Compartment;
use scr_core::{NhsNumber, Store};

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
        owners: Mutex::default(),
        grants: Mutex::default(),
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
    /// The record and compartment of each document seen this session.
    owners: Mutex<HashMap<DocumentId, (NhsNumber, Compartment)>>,
    /// The grants issued to the device, as read this session.
    grants: Mutex<Option<Arc<Vec<RoleProfileGrant>>>>,
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
        let Some((patient, compartment)) = self.writable_record(&doc_id).await else {
            // Not a document this device may write, or not a record's:
            // samod merges nothing of it.
            return Some(message);
        };
        let changes: Arc<Vec<Vec<u8>>> =
            Arc::new(sync.changes.iter().map(|c| c.to_vec()).collect());
        let mut verdict = self
            .judge(
                &doc_id,
                compartment,
                &patient,
                &changes,
                self.grants(false).await,
            )
            .await?;
        if matches!(
            verdict,
            Err(Refusal::ForgedProvenance | Refusal::ImplausibleTime)
        ) {
            // The device may have logged in again since the grants were
            // read: read them again before refusing.
            verdict = self
                .judge(
                    &doc_id,
                    compartment,
                    &patient,
                    &changes,
                    self.grants(true).await,
                )
                .await?;
        }
        match verdict {
            Ok(_) => Some(message),
            Err(refusal) => {
                self.flag(patient, compartment, refusal).await;
                None
            }
        }
    }

    /// The record and compartment of `doc`, if this device may write it.
    /// The owner never changes, so it is read once per session; whether
    /// the device may write is asked each time (a relationship can end).
    async fn writable_record(&self, doc: &DocumentId) -> Option<(NhsNumber, Compartment)> {
        let known = self.owners.lock().ok()?.get(doc).cloned();
        let (store, policy, device, id) = (
            self.store.clone(),
            self.policy.clone(),
            self.device,
            doc.clone(),
        );
        let owner = tokio::task::spawn_blocking(move || {
            let peer = PeerId::from(hex_key(&device));
            if policy.decide(&id, &peer) != ShareConfig::read_write() {
                return None;
            }
            known.or_else(|| store.owner_of_document(&id.to_string()).ok().flatten())
        })
        .await
        .ok()
        .flatten()?;
        if let Ok(mut owners) = self.owners.lock() {
            owners.insert(doc.clone(), owner);
        }
        Some(owner)
    }

    /// Every grant the server issued to this device, read once per session
    /// (or again when `fresh`).
    async fn grants(&self, fresh: bool) -> Arc<Vec<RoleProfileGrant>> {
        let cached = self.grants.lock().ok().and_then(|g| g.clone());
        if let (Some(grants), false) = (cached, fresh) {
            return grants;
        }
        let (store, device) = (self.store.clone(), self.device);
        let grants = Arc::new(
            tokio::task::spawn_blocking(move || crate::grants::issued_history(&store, &device))
                .await
                .unwrap_or_default(),
        );
        if let Ok(mut cache) = self.grants.lock() {
            *cache = Some(grants.clone());
        }
        grants
    }

    /// The rules on `changes` to `doc` as samod holds it: on the changes'
    /// own operations when they can be judged alone, else on a copy with
    /// them applied. `None` when the repo has stopped (samod merges
    /// nothing either).
    async fn judge(
        &self,
        doc: &DocumentId,
        compartment: Compartment,
        patient: &NhsNumber,
        changes: &Arc<Vec<Vec<u8>>>,
        grants: Arc<Vec<RoleProfileGrant>>,
    ) -> Option<Result<usize, Refusal>> {
        let Ok(Some(handle)) = self.repo.find(doc.clone()).await else {
            // A record's document samod cannot open: nothing to merge
            // into, so nothing to check; samod answers it.
            return Some(Ok(0));
        };
        let (changes, patient) = (changes.clone(), *patient);
        let now = scr_core::clock::now_ms();
        handle
            .with_document_async(move |held: &mut Automerge| {
                let limits = PushLimits::default();
                let alone =
                    check_changes(compartment, held, &changes, &grants, &patient, now, &limits);
                alone.unwrap_or_else(|| {
                    let mut after = held.clone();
                    for chunk in changes.iter() {
                        if after.load_incremental(chunk).is_err() {
                            return Err(Refusal::MalformedVersion);
                        }
                    }
                    check_push(compartment, &*held, &after, &grants, &patient, now, &limits)
                })
            })
            .await
            .ok()
    }

    async fn flag(&self, patient: NhsNumber, compartment: Compartment, refusal: Refusal) {
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
