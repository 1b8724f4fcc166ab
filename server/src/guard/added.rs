//! What a push would add to a document as samod holds it: every change it
//! makes part of the document (its own, and those waiting for one of them
//! that it releases), and the changes of its own it leaves waiting for a
//! dependency, each with its Automerge actor (whose owner the gate checks:
//! `crate::actors`); and the bound on changes left waiting.
//!
//! samod keeps a change whose dependency never comes for as long as it
//! runs, and every push to a document holding one takes the slower check.
//! An honest device sends a change without what it depends on only when a
//! Bloom filter misleads it, and the next round fills it in; so each device
//! may leave changes waiting in a document once (`Waiting`): until nothing
//! waits there any more, its further pushes that would wait are dropped
//! (not refused: they broke no rule; the device sends them again). One
//! device's orphan never holds back another device's push.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use samod::DocumentId;
use scr_core::record::untrusted::{contained, split_chunk};

/// What a push adds.
pub(super) struct Adds {
    /// Every change it adds or leaves waiting: actor and hash.
    pub changes: Vec<(ActorId, ChangeHash)>,
    /// Some change of it would wait for a dependency.
    pub waits: bool,
}

/// What `bytes` (a push's elements; `parsed` when each is one change)
/// would add to `held`. `None` when applying them made automerge panic.
pub(super) fn what_it_adds(
    held: &Automerge,
    bytes: &[Vec<u8>],
    parsed: Option<&[Change]>,
) -> Option<Adds> {
    let named = |c: &Change| (c.actor_id().clone(), c.hash());
    if let Some(parsed) = parsed
        && held.get_missing_deps(&[]).is_empty()
    {
        // Nothing waits in the document: a change the document lacks is
        // added when everything it depends on is held or in the push.
        let in_push: HashSet<ChangeHash> = parsed.iter().map(Change::hash).collect();
        let outside: Vec<ChangeHash> = parsed
            .iter()
            .flat_map(|c| c.deps().iter().copied())
            .filter(|d| !in_push.contains(d))
            .collect();
        let mut asked: Vec<ChangeHash> = in_push.iter().copied().collect();
        asked.extend(outside.iter().copied());
        let lacking = held.get_missing_deps(&asked);
        if outside.iter().all(|d| !lacking.contains(d)) {
            return Some(Adds {
                changes: parsed
                    .iter()
                    .filter(|c| lacking.contains(&c.hash()))
                    .map(named)
                    .collect(),
                waits: false,
            });
        }
    }
    // Otherwise, on a copy: what applying them adds, and which changes of
    // the push (every change chunk of every element) are neither held nor
    // added.
    let mut after = held.clone();
    contained(|| {
        for chunk in bytes {
            let _ = after.load_incremental(chunk);
        }
    })?;
    let added: Vec<Change> = after.get_changes(&held.get_heads());
    let added_hashes: HashSet<ChangeHash> = added.iter().map(Change::hash).collect();
    let mut changes: Vec<(ActorId, ChangeHash)> = added.iter().map(named).collect();
    let mut waits = false;
    for change in bytes.iter().flat_map(|element| change_chunks(element)) {
        let hash = change.hash();
        if added_hashes.contains(&hash) || held.get_change_by_hash(&hash).is_some() {
            continue;
        }
        waits = true;
        changes.push(named(&change));
    }
    Some(Adds { changes, waits })
}

/// Every change chunk (plain or deflated) of one element, parsed; document
/// chunks hold no change that could wait (they load whole or not at all).
fn change_chunks(mut element: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    while let Some((kind, _, rest)) = split_chunk(element) {
        let chunk = &element[..element.len() - rest.len()];
        if matches!(kind, 1 | 2)
            && let Some(Ok(change)) = contained(|| Change::try_from(chunk))
        {
            out.push(change);
        }
        element = rest;
    }
    out
}

/// Which devices have left changes waiting in which documents, across
/// sessions (a device's sessions come and go; the waiting changes stay).
#[derive(Clone, Default)]
pub struct Waiting(Arc<Mutex<HashMap<DocumentId, HashSet<[u8; 32]>>>>);

impl Waiting {
    /// Whether `device` may leave changes waiting in `doc` now; forgets
    /// the document's entries once nothing waits in `held` any more.
    pub(super) fn may_wait(&self, doc: &DocumentId, device: &[u8; 32], held: &Automerge) -> bool {
        let Ok(mut all) = self.0.lock() else {
            return false;
        };
        if held.get_missing_deps(&[]).is_empty() {
            all.remove(doc);
        }
        !all.get(doc).is_some_and(|d| d.contains(device))
    }

    /// `device` left changes waiting in `doc`.
    pub(super) fn left(&self, doc: &DocumentId, device: &[u8; 32]) {
        if let Ok(mut all) = self.0.lock() {
            all.entry(doc.clone()).or_default().insert(*device);
        }
    }
}
