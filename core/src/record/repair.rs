//! Repairing a compartment document that no longer reads (its header
//! changed, or its versions map replaced: a bug, or a store written before
//! the server checked pushes). Pure: the caller loads the document's
//! chunks, and stores and audits the change this makes.
//!
//! The repair is one new change on top of the document's history, never a
//! rewrite of it: the header is put back as it was in the last state that
//! read (format, compartment), and if the versions map was replaced, the
//! current one (or a new one, if there is none) is given every version of
//! the maps it replaced that it lacks (versions are immutable, so this
//! loses nothing; only values that read as the version their key names
//! are put back). Every device then merges the repair like any other
//! change.

use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};

use super::doc::{DOC_FORMAT, check_header};
use super::{Compartment, EntryVersion};

const VERSIONS: &str = "versions";

/// What a repair changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The header (format, compartment) was put back.
    pub header: bool,
    /// Versions put back into the versions map (0: it was intact).
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
    // Every version of every map the document has had, as they are now
    // (versions added to an old map afterwards included), that the
    // current map lacks. Only what reads as the version its key names:
    // whatever else an old map holds is not put back.
    let current = match now_maps.as_slice() {
        [map] => Some(map),
        _ => None,
    };
    let mut versions: Vec<(String, String)> = Vec::new();
    for map in history.maps.iter().chain(&now_maps) {
        for key in doc.keys(map) {
            let held_now =
                current.is_some_and(|c| doc.get(c, key.as_str()).ok().flatten().is_some());
            if held_now || versions.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if let Ok(Some((Value::Scalar(s), _))) = doc.get(map, key.as_str())
                && let Some(text) = s.as_str()
                && serde_json::from_str::<EntryVersion>(text)
                    .is_ok_and(|v| v.version_id.to_string() == key)
            {
                versions.push((key, text.to_owned()));
            }
        }
    }
    // Intact: one map, hiding no version any map it has held has had.
    let map_bad = current.is_none() || !versions.is_empty();
    if !header_bad && !map_bad {
        return Ok(None);
    }
    let mut restored = 0;
    let result = doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        if header_bad {
            tx.put(ROOT, "format", DOC_FORMAT)?;
            tx.put(ROOT, "compartment", expected.as_str())?;
        }
        if map_bad {
            // Into the current map when there is one (plain additions, as
            // devices take them); a new one only when there is none.
            let map = match now_maps.as_slice() {
                [map] => map.clone(),
                _ => tx.put_object(ROOT, VERSIONS, ObjType::Map)?,
            };
            for (key, text) in &versions {
                tx.put(&map, key.as_str(), text.as_str())?;
                restored += 1;
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
        versions_restored: restored,
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

    /// A visit note's version: its key and its JSON.
    fn version(text: &str) -> (String, String) {
        let v = EntryVersion::new(
            crate::record::EntryId::new(),
            Vec::new(),
            crate::record::VersionStatus::Current,
            crate::record::EntryContent::EncounterSummary {
                setting: "home".into(),
                occurred_at: "2026-12-03".into(),
                note: text.into(),
            },
            crate::record::Provenance {
                author_id: "555000000001".into(),
                role: "R0260".into(),
                organisation: "A99001".into(),
                device: "gp-desktop".into(),
                recorded_at_ms: 1,
            },
        );
        (v.version_id.to_string(), serde_json::to_string(&v).unwrap())
    }

    fn document(notes: usize) -> (Automerge, Vec<String>) {
        let mut doc = Automerge::new();
        let mut keys = Vec::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "format", DOC_FORMAT)?;
            tx.put(ROOT, "compartment", "care-events")?;
            let map = tx.put_object(ROOT, VERSIONS, ObjType::Map)?;
            for i in 0..notes {
                let (key, json) = version(&format!("visit {i}"));
                tx.put(&map, key.as_str(), json)?;
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
        // another version goes into the new one, beside a value that is
        // not a version (never put back).
        let (late, late_json) = version("late");
        let (after, after_json) = version("after");
        let mut lagging = doc.fork();
        lagging
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(&old_map, late.as_str(), late_json.as_str())?;
                tx.put(&old_map, "junk", "not a version")
            })
            .unwrap();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            let map = tx.put_object(ROOT, VERSIONS, ObjType::Map)?;
            tx.put(&map, after.as_str(), after_json.as_str())?;
            tx.put(ROOT, "compartment", "core")?;
            Ok(())
        })
        .unwrap();
        doc.merge(&mut lagging).unwrap();
        assert!(!readable(&doc, Compartment::CareEvents));
        let current = doc.get(ROOT, VERSIONS).unwrap().unwrap().1;
        let repaired = repair(Compartment::CareEvents, &mut doc).unwrap().unwrap();
        assert!(repaired.header);
        assert_eq!(
            repaired.versions_restored, 4,
            "three old versions and the late one"
        );
        // Put back into the current map (devices take plain additions).
        let map = doc.get(ROOT, VERSIONS).unwrap().unwrap().1;
        assert_eq!(map, current);
        let mut now: Vec<String> = doc.keys(&map).collect();
        now.sort();
        let mut expected: Vec<String> = keys;
        expected.extend([after, late]);
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
