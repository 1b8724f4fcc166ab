//! A document rebuilt after the server refused part of it (issue 16): the
//! refused changes, and every change that depends on them, taken out; the
//! versions the refused changes put kept aside (quarantined: shown, never
//! sent again); the versions the dependent changes put (honest work that
//! only waited on a refused change) put again on top, under a new actor,
//! so the server can merge them. Pure.

use std::collections::HashSet;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};

const VERSIONS: &str = "versions";

/// What a rebuild made of a document.
pub struct Rebuilt {
    /// The document without the refused changes and their dependants,
    /// with the dependants' versions put again.
    pub doc: Automerge,
    /// The text of each version a refused change put (as stored: the
    /// JSON of an `EntryVersion`), by its key.
    pub quarantined: Vec<(String, String)>,
    /// How many versions of dependent changes were put again.
    pub replayed: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RebuildError {
    #[error("the document holds none of the refused changes")]
    NothingRefusedHere,
    #[error("the document without the refused changes has no versions map")]
    NoVersionsMap,
    #[error("automerge refused the rebuilt document")]
    Automerge,
}

/// Rebuilds `doc` without the changes `refused` names (and those that
/// depend on them).
pub fn rebuild(doc: &Automerge, refused: &[ChangeHash]) -> Result<Rebuilt, RebuildError> {
    let changes = doc.get_changes(&[]);
    let refused: HashSet<ChangeHash> = refused
        .iter()
        .copied()
        .filter(|h| changes.iter().any(|c| c.hash() == *h))
        .collect();
    if refused.is_empty() {
        return Err(RebuildError::NothingRefusedHere);
    }
    // In causal order: a change is taken out if it is refused or depends
    // on one taken out.
    let mut out: HashSet<ChangeHash> = HashSet::new();
    let mut kept: Vec<Change> = Vec::new();
    let mut dependants: Vec<&Change> = Vec::new();
    for c in &changes {
        if refused.contains(&c.hash()) || c.deps().iter().any(|d| out.contains(d)) {
            out.insert(c.hash());
            if !refused.contains(&c.hash()) {
                dependants.push(c);
            }
        } else {
            kept.push(c.clone());
        }
    }
    let refused_changes: Vec<&Change> = changes
        .iter()
        .filter(|c| refused.contains(&c.hash()))
        .collect();
    let mut rebuilt = Automerge::new();
    rebuilt
        .apply_changes(kept)
        .map_err(|_| RebuildError::Automerge)?;
    let versions = versions_map(&rebuilt).ok_or(RebuildError::NoVersionsMap)?;
    let old_versions = versions_map(doc).ok_or(RebuildError::NoVersionsMap)?;

    let mut quarantined = Vec::new();
    let mut replay = Vec::new();
    for key in doc.keys(&old_versions) {
        for (value, op) in doc.get_all(&old_versions, key.as_str()).unwrap_or_default() {
            let Value::Scalar(s) = value else { continue };
            let Some(text) = s.as_str() else { continue };
            if refused_changes.iter().any(|c| made(c, &op)) {
                quarantined.push((key.clone(), text.to_owned()));
            } else if dependants.iter().any(|c| made(c, &op))
                && rebuilt
                    .get(&versions, key.as_str())
                    .ok()
                    .flatten()
                    .is_none()
            {
                replay.push((key.clone(), text.to_owned()));
            }
        }
    }
    let replayed = replay.len();
    if !replay.is_empty() {
        rebuilt.set_actor(ActorId::random());
        let mut tx = rebuilt.transaction();
        for (key, text) in &replay {
            tx.put(&versions, key.as_str(), text.as_str())
                .map_err(|_| RebuildError::Automerge)?;
        }
        tx.commit();
    }
    Ok(Rebuilt {
        doc: rebuilt,
        quarantined,
        replayed,
    })
}

/// Whether the operation `op` is one of `change`'s.
fn made(change: &Change, op: &ObjId) -> bool {
    let ObjId::Id(counter, actor, _) = op else {
        return false;
    };
    let start = change.start_op().get();
    actor == change.actor_id() && (start..start + change.len() as u64).contains(counter)
}

fn versions_map(doc: &Automerge) -> Option<ObjId> {
    match doc.get(ROOT, VERSIONS).ok().flatten() {
        Some((Value::Object(ObjType::Map), id)) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn put(doc: &mut Automerge, key: &str, text: &str) -> ChangeHash {
        let versions = versions_map(doc).unwrap();
        let mut tx = doc.transaction();
        tx.put(&versions, key, text).unwrap();
        tx.commit().0.unwrap()
    }

    fn texts(doc: &Automerge) -> Vec<(String, String)> {
        let versions = versions_map(doc).unwrap();
        doc.keys(&versions)
            .map(|k| {
                let v = doc.get(&versions, k.as_str()).unwrap().unwrap().0;
                (k, v.into_string().unwrap())
            })
            .collect()
    }

    #[test]
    fn the_refused_change_is_kept_aside_and_what_waited_on_it_is_put_again() {
        // The server's document, then this device's three writes on it: the
        // second is refused; the third was made after it (depends on it).
        let mut server = Automerge::new();
        let mut tx = server.transaction();
        tx.put(ROOT, "format", 1).unwrap();
        tx.put_object(ROOT, VERSIONS, ObjType::Map).unwrap();
        tx.commit();
        put(&mut server, "gp", "the GP's note");
        let mut device = server.fork();
        put(&mut device, "a", "honest before");
        let refused = put(&mut device, "b", "refused");
        put(&mut device, "c", "honest after");

        let rebuilt = rebuild(&device, &[refused]).unwrap();
        assert_eq!(
            rebuilt.quarantined,
            vec![("b".to_owned(), "refused".to_owned())]
        );
        assert_eq!(rebuilt.replayed, 1);
        let mut kept = texts(&rebuilt.doc);
        kept.sort();
        assert_eq!(
            kept,
            [
                ("a", "honest before"),
                ("c", "honest after"),
                ("gp", "the GP's note")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // The server, which never took the refused change, merges the
        // rebuilt document whole: nothing waits on a missing change.
        let mut merged = server.fork();
        let missing = rebuilt.doc.get_changes(&server.get_heads());
        merged.apply_changes(missing).unwrap();
        assert!(merged.get_missing_deps(&[]).is_empty());
        assert_eq!(texts(&merged).len(), 3);
        assert!(rebuilt.doc.get_change_by_hash(&refused).is_none());
        // Nothing refused here: nothing to do.
        assert_eq!(
            rebuild(&rebuilt.doc, &[refused]).err(),
            Some(RebuildError::NothingRefusedHere)
        );
    }
}
