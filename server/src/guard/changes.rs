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
use scr_core::protocol::PushRefusal;
use scr_core::push_rules::{PushLimits, Refusal, check_changes, check_push};
use scr_core::record::Compartment;
use scr_core::{NhsNumber, Store};

use super::wire;
use crate::holdings::HoldingsWriter;
use crate::policy::AccessPolicy;

/// The gate for one sync session of `device`.
pub fn gate(
    repo: Repo,
    store: Store,
    policy: AccessPolicy,
    holdings: HoldingsWriter,
    device: [u8; 32],
    refused: Counter,
) -> Gate {
    let checker = Arc::new(Checker {
        repo,
        store,
        policy,
        holdings,
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
    /// To bump the device's notice, so it fetches what was refused.
    holdings: HoldingsWriter,
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
            Err((Refusal::ForgedProvenance | Refusal::ImplausibleTime, _))
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
            Err((refusal, change)) => {
                let refusal = PushRefusal {
                    document: doc_id.to_string(),
                    compartment,
                    reason: refusal.to_string(),
                    change,
                    refused_at_ms: scr_core::clock::now_ms(),
                };
                self.refuse(patient, refusal).await;
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

    /// The rules on `changes` to `doc` as samod holds it, and when they
    /// refuse, the first change they refuse (its hash, hex). `None` when
    /// the repo has stopped (samod merges nothing either).
    async fn judge(
        &self,
        doc: &DocumentId,
        compartment: Compartment,
        patient: &NhsNumber,
        changes: &Arc<Vec<Vec<u8>>>,
        grants: Arc<Vec<RoleProfileGrant>>,
    ) -> Option<Result<usize, (Refusal, String)>> {
        let Ok(Some(handle)) = self.repo.find(doc.clone()).await else {
            // A record's document samod cannot open: nothing to merge
            // into, so nothing to check; samod answers it.
            return Some(Ok(0));
        };
        let (changes, patient) = (changes.clone(), *patient);
        let now = scr_core::clock::now_ms();
        handle
            .with_document_async(move |held: &mut Automerge| {
                let rules = |changes: &[Vec<u8>]| {
                    verdict(compartment, held, changes, &grants, &patient, now)
                };
                let refusal = match rules(&changes) {
                    Ok(added) => return Ok(added),
                    Err(refusal) => refusal,
                };
                // Only on a refusal: the shortest refused prefix names the
                // change to blame, found in a logarithmic number of checks
                // (a change refused stays refused whatever follows it).
                let (mut lo, mut hi) = (1, changes.len());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if rules(&changes[..mid]).is_err() {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                let first = changes.get(hi.wrapping_sub(1)).map(|c| change_name(c));
                Err((refusal, first.unwrap_or_default()))
            })
            .await
            .ok()
    }

    /// A refused push: recorded for the device, and the first time that
    /// change is refused, counted, audited and told to the device (its
    /// notice is bumped, so it fetches the refusal with its list).
    async fn refuse(&self, patient: NhsNumber, refusal: PushRefusal) {
        let (store, device, kept) = (self.store.clone(), self.device, refusal.clone());
        let new =
            tokio::task::spawn_blocking(move || crate::refusals::record(&store, &device, &kept))
                .await;
        if matches!(new, Ok(Ok(false))) {
            tracing::debug!("a device offered a change refused before; not merged");
            return;
        }
        self.flag(patient, &refusal).await;
        self.holdings.notify(self.device).await;
    }

    async fn flag(&self, patient: NhsNumber, refusal: &PushRefusal) {
        self.refused.inc();
        tracing::warn!(
            compartment = refusal.compartment.as_str(),
            reason = %refusal.reason,
            "a device pushed changes the record's rules refuse; not merged"
        );
        let detail = format!(
            "device {} pushed to {}: {}",
            &hex_key(&self.device)[..16],
            refusal.compartment.as_str(),
            refusal.reason
        );
        let store = self.store.clone();
        let audited = tokio::task::spawn_blocking(move || {
            crate::audit::record(
                &store,
                "server",
                "push-refused",
                Some(patient),
                Outcome::Recorded,
                Some(detail),
            )
        })
        .await;
        if !matches!(audited, Ok(Ok(()))) {
            tracing::error!("a refused push could not be audited");
        }
    }
}

/// The rules on `changes` to `held`: on their own operations when they can
/// be judged alone, else on a copy with them applied.
fn verdict(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    grants: &[RoleProfileGrant],
    patient: &NhsNumber,
    now: i64,
) -> Result<usize, Refusal> {
    let limits = PushLimits::default();
    check_changes(compartment, held, changes, grants, patient, now, &limits).unwrap_or_else(|| {
        let mut after = held.clone();
        for chunk in changes {
            if after.load_incremental(chunk).is_err() {
                return Err(Refusal::MalformedVersion);
            }
        }
        check_push(compartment, held, &after, grants, patient, now, &limits)
    })
}

/// A chunk's name: its change hash, or (a chunk that is not one change)
/// a digest of its bytes.
fn change_name(chunk: &[u8]) -> String {
    match automerge::Change::try_from(chunk) {
        Ok(change) => change.hash().to_string(),
        Err(_) => blake3::hash(chunk).to_hex().to_string(),
    }
}
