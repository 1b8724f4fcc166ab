//! Repairing a compartment document that no longer reads (its header
//! changed, or its versions map replaced: a bug, or a store written before
//! the server checked pushes). Pure: the caller loads the document's
//! chunks, and stores and audits the change this makes.
//!
//! The repair is one new change on top of the document's history, never a
//! rewrite of it: the header is put back as it was in the last state that
//! read (format, compartment), and if the versions map was replaced, a
//! new one holds every version of the old ones and of the current one
//! (versions are immutable, so this loses nothing). Every device then
//! merges the repair like any other change.

use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};

use super::Compartment;
use super::doc::{DOC_FORMAT, check_header};

const VERSIONS: &str = "versions";

/// What a repair changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The header (format, compartment) was put back.
    pub header: bool,
    /// Versions copied into a new versions map (0: the map was intact).
    pub versions_restored: usize,
    /// The repair change's hash.
    pub change: ChangeHash,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepairError {
    #[error("the document never read as this compartment: nothing to repair from")]
    NeverReadable,
    #[error("automerge refused the repair")]
    Automerge,
}

/// Whether `doc` reads as `expected`: the header agrees and the versions
/// map is one map.
pub fn readable(doc: &impl ReadDoc, expected: Compartment) -> bool {
    check_header(doc, expected).is_ok() && versions_maps(doc, None).len() == 1
}

/// Repairs `doc` if it does not read as `expected` with the versions map
/// it was created with: `None` when it does.
pub fn repair(expected: Compartment, doc: &mut Automerge) -> Result<Option<Repaired>, RepairError> {
    let history = History::of(doc, expected).ok_or(RepairError::NeverReadable)?;
    let header_bad = check_header(doc, expected).is_err();
    let now_maps = versions_maps(doc, None);
    // Intact: one map, hiding no version any map it has held has had (the
    // map it was created with, or a repair's).
    let map_bad = match now_maps.as_slice() {
        [map] => history.maps.iter().filter(|old| *old != map).any(|old| {
            doc.keys(old)
                .any(|k| doc.get(map, k.as_str()).ok().flatten().is_none())
        }),
        _ => true,
    };
    if !header_bad && !map_bad {
        return Ok(None);
    }
    // Every version of every map the document has had, as they are now
    // (versions added to an old map afterwards included).
    let mut versions: Vec<(String, String)> = Vec::new();
    if map_bad {
        for map in history.maps.iter().chain(&now_maps) {
            for key in doc.keys(map) {
                if versions.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                if let Ok(Some((Value::Scalar(s), _))) = doc.get(map, key.as_str())
                    && let Some(text) = s.as_str()
                {
                    versions.push((key, text.to_owned()));
                }
            }
        }
    }
    let result = doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        if header_bad {
            tx.put(ROOT, "format", DOC_FORMAT)?;
            tx.put(ROOT, "compartment", expected.as_str())?;
        }
        if map_bad {
            let map = tx.put_object(ROOT, VERSIONS, ObjType::Map)?;
            for (key, text) in &versions {
                tx.put(&map, key.as_str(), text.as_str())?;
            }
        }
        Ok(())
    });
    let change = result
        .map_err(|_| RepairError::Automerge)?
        .hash
        .ok_or(RepairError::Automerge)?;
    if !readable(doc, expected) {
        return Err(RepairError::Automerge);
    }
    Ok(Some(Repaired {
        header: header_bad,
        versions_restored: if map_bad { versions.len() } else { 0 },
        change,
    }))
}

/// What the document's history says: every map it has held under
/// `versions` (it read at least once).
struct History {
    maps: Vec<ObjId>,
}

impl History {
    /// The changes replayed in order; `None` if the document never read.
    /// (Object ids are read from `doc` at each state's heads, so they name
    /// its objects.)
    fn of(doc: &Automerge, expected: Compartment) -> Option<Self> {
        let mut replay = Automerge::new();
        let mut read_once = false;
        let mut maps: Vec<ObjId> = Vec::new();
        for change in doc.get_changes(&[]) {
            replay.apply_changes([change.clone()]).ok()?;
            let heads = replay.get_heads();
            let here = versions_maps(doc, Some(&heads));
            read_once |= readable(&replay, expected);
            for map in here {
                if !maps.contains(&map) {
                    maps.push(map);
                }
            }
        }
        read_once.then_some(Self { maps })
    }
}

/// The maps under `versions` now, or at `heads`.
fn versions_maps(doc: &impl ReadDoc, heads: Option<&[ChangeHash]>) -> Vec<ObjId> {
    let all = match heads {
        None => doc.get_all(ROOT, VERSIONS),
        Some(h) => doc.get_all_at(ROOT, VERSIONS, h),
    };
    all.unwrap_or_default()
        .into_iter()
        .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
        .map(|(_, id)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::CompartmentDoc;

    fn document(notes: usize) -> (Automerge, Vec<String>) {
        let mut doc = Automerge::new();
        let mut keys = Vec::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "format", DOC_FORMAT)?;
            tx.put(ROOT, "compartment", "care-events")?;
            let map = tx.put_object(ROOT, VERSIONS, ObjType::Map)?;
            for i in 0..notes {
                let key = format!("v{i}");
                tx.put(&map, key.as_str(), format!("version {i}"))?;
                keys.push(key);
            }
            Ok(())
        })
        .unwrap();
        (doc, keys)
    }

    fn reads(doc: &mut Automerge) -> bool {
        CompartmentDoc::load(Compartment::CareEvents, &doc.save()).is_ok()
    }

    #[test]
    fn a_readable_document_is_left_alone() {
        let (mut doc, _) = document(2);
        let heads = doc.get_heads();
        assert_eq!(repair(Compartment::CareEvents, &mut doc), Ok(None));
        assert_eq!(doc.get_heads(), heads, "no change made");
    }

    #[test]
    fn a_raised_format_is_put_back() {
        let (mut doc, _) = document(2);
        doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "format", 2))
            .unwrap();
        assert!(!reads(&mut doc));
        let repaired = repair(Compartment::CareEvents, &mut doc).unwrap().unwrap();
        assert!(repaired.header);
        assert_eq!(repaired.versions_restored, 0);
        assert!(reads(&mut doc));
        // The bad change is still in the history: repaired on top, not
        // rewritten.
        assert_eq!(doc.get_changes(&[]).len(), 3);
    }

    #[test]
    fn a_replaced_versions_map_is_rebuilt_with_every_version() {
        let (mut doc, keys) = document(3);
        let old_map = doc.get(ROOT, VERSIONS).unwrap().unwrap().1;
        // A device that had not seen the replacement adds to the old map;
        // another version goes into the new, empty one.
        let mut lagging = doc.fork();
        lagging
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(&old_map, "late", "late one"))
            .unwrap();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            let map = tx.put_object(ROOT, VERSIONS, ObjType::Map)?;
            tx.put(&map, "after", "after one")?;
            tx.put(ROOT, "compartment", "core")?;
            Ok(())
        })
        .unwrap();
        doc.merge(&mut lagging).unwrap();
        assert!(!readable(&doc, Compartment::CareEvents));
        let repaired = repair(Compartment::CareEvents, &mut doc).unwrap().unwrap();
        assert!(repaired.header);
        assert_eq!(repaired.versions_restored, 5);
        let map = doc.get(ROOT, VERSIONS).unwrap().unwrap().1;
        let mut now: Vec<String> = doc.keys(&map).collect();
        now.sort();
        let mut expected: Vec<String> = keys;
        expected.extend(["after".to_owned(), "late".to_owned()]);
        expected.sort();
        assert_eq!(now, expected);
        assert!(reads(&mut doc));
        // Repaired once: a second run finds nothing to do.
        assert_eq!(repair(Compartment::CareEvents, &mut doc), Ok(None));
    }

    #[test]
    fn a_document_that_never_read_is_not_repaired() {
        let mut doc = Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "format", 9))
            .unwrap();
        assert_eq!(
            repair(Compartment::CareEvents, &mut doc),
            Err(RepairError::NeverReadable)
        );
    }
}
