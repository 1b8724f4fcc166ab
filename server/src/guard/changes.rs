//! Pushed changes checked against the record's rules before samod merges
//! them: for a sync message carrying changes to a compartment document,
//! `scr_core::push_rules::check_changes` on the changes' own operations
//! against the document as samod holds it (or, when they cannot be judged
//! alone, `check_applied`: the same on the changes applying them to a copy
//! makes part of it), for every grant the server issued to the pushing
//! device. (A push to a document the
//! device may not write at all is samod's to drop and `flag`'s to report.)
//! A refused message is dropped
//! whole (nothing of it merged), counted and audited naming the device,
//! the patient, the compartment and the reason.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Pushes of one session refused, audited and told; past this they are
/// only counted (a device sending refused pushes in a loop cannot flood
/// the audit trail or its own notice).
const MAX_FLAGGED_PER_SESSION: usize = 16;
/// The length of an actor id automerge draws (`ActorId::random`); honest
/// devices push under no other.
const ACTOR_BYTES: usize = 16;
/// New actors one push may bring (an honest push brings the one the
/// device writes the document under, and one more after a rebuild).
const MAX_NEW_ACTORS_PER_PUSH: usize = 4;
/// Actors one session may bind: a device draws one per document it opens
/// and writes (a nurse's day is some tens); each costs a store write.
const MAX_ACTORS_PER_SESSION: usize = 512;

use automerge::{ActorId, Automerge, Change, ChangeHash};
use prometheus_client::metrics::counter::Counter;
use samod::{DocumentId, PeerId, Repo, ShareConfig};
use scr_core::audit::Outcome;
use scr_core::channel::{Gate, hex_key};
use scr_core::grant::RoleProfileGrant;
use scr_core::protocol::PushRefusal;
use scr_core::push_rules::{
    PushLimits, Refusal, VersionsAt, check_applied, check_parsed_at, refused_changes,
};
use scr_core::record::Compartment;
use scr_core::record::untrusted::lone_changes;
use scr_core::{NhsNumber, Store};

use super::added::{self, Waiting};
use super::wire;
use crate::holdings::HoldingsWriter;
use crate::policy::AccessPolicy;

/// The gate for one sync session of `device`: every incoming message is
/// read once, goes through `admission` (`super::Admission`), then, when it
/// pushes changes, through the record's rules.
#[allow(clippy::too_many_arguments)]
pub fn gate(
    admission: super::Admission,
    waiting: Waiting,
    repo: Repo,
    store: Store,
    policy: AccessPolicy,
    holdings: HoldingsWriter,
    device: [u8; 32],
    refused: Counter,
) -> Gate {
    let checker = Arc::new(Checker {
        admission,
        repo,
        store,
        policy,
        holdings,
        device,
        refused,
        owners: Mutex::default(),
        versions: Mutex::default(),
        actors: Mutex::default(),
        waiting,
        grants: Mutex::default(),
        flagged: AtomicUsize::new(0),
    });
    Arc::new(move |message: Vec<u8>| {
        let checker = checker.clone();
        Box::pin(async move { checker.pass(message).await })
    })
}

struct Checker {
    admission: super::Admission,
    repo: Repo,
    store: Store,
    policy: AccessPolicy,
    /// To bump the device's notice, so it fetches what was refused.
    holdings: HoldingsWriter,
    device: [u8; 32],
    refused: Counter,
    /// The record and compartment of each document seen this session.
    owners: Mutex<HashMap<DocumentId, (NhsNumber, Compartment)>>,
    /// Where each document pushed to keeps its versions, as read at an
    /// outside-writes epoch (`crate::outside_writes::epoch`): read again
    /// once the epoch moves (a repair may have moved it).
    versions: Mutex<HashMap<DocumentId, (u64, VersionsAt)>>,
    /// Actor ids bound to this device (`crate::actors`), as checked this
    /// session.
    actors: Mutex<HashSet<ActorId>>,
    /// Which devices left changes waiting where (`added`), server-wide.
    waiting: Waiting,
    /// The grants issued to the device, as read this session.
    grants: Mutex<Option<Arc<Vec<RoleProfileGrant>>>>,
    /// Refused pushes flagged this session.
    flagged: AtomicUsize,
}

impl Checker {
    /// The message, or `None` when it carries changes the rules refuse.
    async fn pass(&self, message: Vec<u8>) -> Option<Vec<u8>> {
        let Some(incoming) = wire::parse(&message) else {
            // Not a map samod could read either: samod refuses it.
            return Some(message);
        };
        let parsed = self.admission.admit(&incoming, message.len())?;
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
        // Each change as the admission parsed it; `None` when one element
        // is not a lone change (the check then applies them to a copy).
        let changes = Arc::new(Pushed {
            bytes: sync.changes.iter().map(|c| c.to_vec()).collect(),
            parsed: lone_changes(parsed),
        });
        let mut verdict = self
            .judge(
                &doc_id,
                compartment,
                &patient,
                &changes,
                self.grants(false).await,
            )
            .await?;
        let about_grants = |r: &(Refusal, String)| {
            matches!(r.0, Refusal::ForgedProvenance | Refusal::ImplausibleTime)
        };
        if matches!(&verdict, Judged::Refused(blamed) if blamed.iter().any(about_grants)) {
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
        let verdict = match verdict {
            Judged::Taken { adds, waits } => match self.actors_own(&adds).await {
                Ok(()) => {
                    if waits {
                        self.waiting.left(&doc_id, &self.device);
                    }
                    Judged::Taken { adds, waits }
                }
                Err(Some(change)) => {
                    Judged::Refused(vec![(Refusal::ActorTaken, change.to_string())])
                }
                Err(None) => Judged::Dropped,
            },
            other => other,
        };
        match verdict {
            Judged::Taken { .. } => Some(message),
            Judged::Dropped => {
                tracing::debug!("a push dropped (it would wait again, or its check could not run)");
                None
            }
            Judged::Refused(blamed) => {
                let at = scr_core::clock::now_ms();
                let refusals = blamed
                    .into_iter()
                    .map(|(refusal, change)| PushRefusal {
                        document: doc_id.to_string(),
                        compartment,
                        reason: refusal.to_string(),
                        change,
                        refused_at_ms: at,
                    })
                    .collect();
                self.refuse(patient, refusals).await;
                None
            }
        }
    }

    /// Whether the actors of `new` changes are this device's own
    /// (`crate::actors`), binding those not yet bound: `Err(Some(change))`
    /// names the first change under an actor that is not (another
    /// device's, not an actor automerge draws, or past the bounds on new
    /// actors); `Err(None)` when the store could not answer (the push is
    /// dropped, not refused: the device sends it again).
    async fn actors_own(&self, new: &[(ActorId, ChangeHash)]) -> Result<(), Option<ChangeHash>> {
        let first_of = |actor: &ActorId| new.iter().find(|(a, _)| a == actor).map(|(_, h)| *h);
        if let Some((_, odd)) = new.iter().find(|(a, _)| a.to_bytes().len() != ACTOR_BYTES) {
            return Err(Some(*odd));
        }
        let unbound: Vec<ActorId> = {
            let bound = self.actors.lock().map_err(|_| None)?;
            let mut unbound: Vec<ActorId> = Vec::new();
            for (actor, _) in new {
                if !bound.contains(actor) && !unbound.contains(actor) {
                    unbound.push(actor.clone());
                }
            }
            if unbound.len() > MAX_NEW_ACTORS_PER_PUSH
                || bound.len() + unbound.len() > MAX_ACTORS_PER_SESSION
            {
                return Err(unbound.last().and_then(first_of));
            }
            unbound
        };
        if unbound.is_empty() {
            return Ok(());
        }
        let (store, device, asked) = (self.store.clone(), self.device, unbound.clone());
        let taken =
            tokio::task::spawn_blocking(move || crate::actors::bind(&store, &device, &asked)).await;
        match taken {
            Ok(Ok(None)) => {
                if let Ok(mut bound) = self.actors.lock() {
                    bound.extend(unbound);
                }
                Ok(())
            }
            Ok(Ok(Some(actor))) => Err(first_of(&actor)),
            _ => {
                tracing::error!("the actors of a push could not be checked; not merged");
                Err(None)
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
    /// refuse, what to blame: each change refused on its own (hash, hex),
    /// or, when none is, the push as a whole (a digest of it). `None` when
    /// the repo has stopped or cannot open the document now (samod merges
    /// nothing of it either way).
    async fn judge(
        &self,
        doc: &DocumentId,
        compartment: Compartment,
        patient: &NhsNumber,
        changes: &Arc<Pushed>,
        grants: Arc<Vec<RoleProfileGrant>>,
    ) -> Option<Judged> {
        let Ok(Some(handle)) = self.repo.find(doc.clone()).await else {
            // A record's document samod cannot open now: dropped (fail
            // closed; the device sends it again).
            return None;
        };
        let (changes, patient) = (changes.clone(), *patient);
        let (waiting, device, doc_id) = (self.waiting.clone(), self.device, doc.clone());
        let now = scr_core::clock::now_ms();
        let limits = self.policy.push_limits();
        let kept = self.versions.lock().ok().and_then(|v| v.get(doc).cloned());
        let (verdict, read) = handle
            .with_document_async(move |held: &mut Automerge| {
                let on = Push {
                    compartment,
                    grants: &grants,
                    patient: &patient,
                    now,
                    limits: &limits,
                };
                // Dropped, not refused, when it would leave changes
                // waiting where this device already has some (`added`),
                // or applying it to a copy made automerge panic.
                let adds =
                    match added::what_it_adds(held, &changes.bytes, changes.parsed.as_deref()) {
                        Some(adds) if !adds.waits || waiting.may_wait(&doc_id, &device, held) => {
                            adds
                        }
                        _ => return (Judged::Dropped, None),
                    };
                // Inside the document's exclusive access, where an outside
                // write is merged and the epoch bumped.
                let epoch = crate::outside_writes::epoch();
                let kept = kept.filter(|(at, _)| *at == epoch).map(|(_, v)| v);
                let mut used = kept.clone().or_else(|| VersionsAt::read(held));
                let mut outcome = verdict(held, &changes, used.as_ref(), &on);
                if outcome.is_err() && kept.is_some() {
                    // Never refuse on what was kept: read it again.
                    used = VersionsAt::read(held);
                    outcome = verdict(held, &changes, used.as_ref(), &on);
                }
                let read = used.map(|v| (epoch, v));
                let refusal = match outcome {
                    Ok(_) => {
                        let (adds, waits) = (adds.changes, adds.waits);
                        return (Judged::Taken { adds, waits }, read);
                    }
                    Err(refusal) => refusal,
                };
                // Only on a refusal, and linear in the push.
                let bytes = &changes.bytes;
                let blamed: Vec<(Refusal, String)> =
                    refused_changes(compartment, held, bytes, &grants, &patient, now, &limits)
                        .into_iter()
                        .map(|(i, hash, why)| match hash {
                            Some(h) => (why, h.to_string()),
                            None => (why, digest(&bytes[i..=i])),
                        })
                        .collect();
                if blamed.is_empty() {
                    return (Judged::Refused(vec![(refusal, digest(bytes))]), read);
                }
                (Judged::Refused(blamed), read)
            })
            .await
            .ok()?;
        if let (Some(read), Ok(mut kept)) = (read, self.versions.lock()) {
            kept.insert(doc.clone(), read);
        }
        Some(verdict)
    }

    /// A refused push: each blamed change recorded for the device; those
    /// refused for the first time are counted and audited (one event per
    /// push, the first few pushes of a session; after that only counted)
    /// and told to the device (its notice is bumped, so it fetches them
    /// with its list). A change refused before is dropped silently.
    async fn refuse(&self, patient: NhsNumber, refusals: Vec<PushRefusal>) {
        let (store, device) = (self.store.clone(), self.device);
        let new = tokio::task::spawn_blocking(move || {
            refusals
                .into_iter()
                .filter(|r| !matches!(crate::refusals::record(&store, &device, r), Ok(false)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let Some(first) = new.first() else {
            tracing::debug!("a device offered changes refused before; not merged");
            return;
        };
        self.refused.inc_by(new.len() as u64);
        let flagged = self.flagged.fetch_add(1, Ordering::Relaxed);
        if flagged >= MAX_FLAGGED_PER_SESSION {
            tracing::debug!("a session's refusals past the audit bound; counted only");
            return;
        }
        self.flag(patient, first, new.len() - 1).await;
        self.holdings.notify(self.device).await;
    }

    async fn flag(&self, patient: NhsNumber, refusal: &PushRefusal, more: usize) {
        tracing::warn!(
            compartment = refusal.compartment.as_str(),
            reason = %refusal.reason,
            "a device pushed changes the record's rules refuse; not merged"
        );
        let detail = format!(
            "device {} pushed to {}: {}{}",
            &hex_key(&self.device)[..16],
            refusal.compartment.as_str(),
            refusal.reason,
            if more > 0 {
                format!(" (and {more} more changes refused)")
            } else {
                String::new()
            }
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

/// What a push is judged on: its document's compartment, the device's
/// grants, the record's patient, the receipt time, the server's bounds.
struct Push<'a> {
    compartment: Compartment,
    grants: &'a [RoleProfileGrant],
    patient: &'a NhsNumber,
    now: i64,
    limits: &'a PushLimits,
}

/// What the gate makes of a push.
enum Judged {
    /// The rules take it: every change it adds, releases or leaves waiting
    /// (actor and hash), and whether some wait.
    Taken {
        adds: Vec<(ActorId, ChangeHash)>,
        waits: bool,
    },
    /// Refused: what to blame (each change refused on its own, or the push).
    Refused(Vec<(Refusal, String)>),
    /// Dropped unjudged, not refused (the device sends it again): it would
    /// leave changes waiting where the device already has some, or a check
    /// could not run.
    Dropped,
}

/// The changes of one push: as sent, and each parsed (when each element is
/// one change).
struct Pushed {
    bytes: Vec<Vec<u8>>,
    parsed: Option<Vec<Change>>,
}

/// The rules on `changes` to `held`: on their own operations when they can
/// be judged alone, else on the changes applying them makes part of it.
/// `at`: where `held` keeps its versions (`None` when that is not one
/// map, which only the fallback can judge).
fn verdict(
    held: &Automerge,
    changes: &Pushed,
    at: Option<&VersionsAt>,
    on: &Push<'_>,
) -> Result<usize, Refusal> {
    let Push {
        compartment,
        grants,
        patient,
        now,
        limits,
    } = *on;
    let bytes = &changes.bytes;
    changes
        .parsed
        .as_deref()
        .zip(at)
        .and_then(|(parsed, at)| {
            check_parsed_at(at, compartment, held, parsed, grants, patient, now, limits)
        })
        .unwrap_or_else(|| check_applied(compartment, held, bytes, grants, patient, now, limits))
}

/// A name for chunks that are not one change each: a digest of them.
fn digest(chunks: &[Vec<u8>]) -> String {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(c);
    }
    h.finalize().to_hex().to_string()
}
