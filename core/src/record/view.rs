//! From a set of versions to what a clinician sees. Pure: the view depends
//! only on the set of versions present, so replicas holding the same versions
//! show the same view whatever order the versions arrived in.

use std::collections::{BTreeMap, HashSet};

use super::{Compartment, EntryId, EntryVersion, VersionId};

/// What an entry currently says.
// Views are built once per read and handed out by reference; boxing the
// common single-version case would cost an allocation per entry instead.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum EntryState {
    /// One newest version; it may be marked entered-in-error.
    Current(EntryVersion),
    /// Several versions replaced the same parent concurrently. All are kept
    /// and shown for review, ordered by version id; a later version that
    /// names every candidate in `replaces` resolves the conflict.
    Conflict(Vec<EntryVersion>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct EntryView {
    pub entry_id: EntryId,
    pub state: EntryState,
    /// Every version of this entry, oldest id first: nothing is ever lost.
    pub history: Vec<VersionId>,
}

impl EntryView {
    pub fn is_conflict(&self) -> bool {
        matches!(self.state, EntryState::Conflict(_))
    }

    /// The newest versions: one unless in conflict.
    pub fn heads(&self) -> Vec<&EntryVersion> {
        match &self.state {
            EntryState::Current(v) => vec![v],
            EntryState::Conflict(vs) => vs.iter().collect(),
        }
    }

    pub fn head_ids(&self) -> Vec<VersionId> {
        self.heads().iter().map(|v| v.version_id).collect()
    }

    /// The current version when there is exactly one.
    pub fn current(&self) -> Option<&EntryVersion> {
        match &self.state {
            EntryState::Current(v) => Some(v),
            EntryState::Conflict(_) => None,
        }
    }
}

/// The entries of one compartment, in creation order (UUIDv7 entry ids).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct CompartmentView {
    pub compartment: Compartment,
    pub entries: Vec<EntryView>,
    /// Map keys whose value could not be read as a version (written by a newer
    /// format or damaged). Reported, never silently dropped.
    pub unreadable: Vec<String>,
}

impl CompartmentView {
    pub fn entry(&self, id: EntryId) -> Option<&EntryView> {
        self.entries.iter().find(|e| e.entry_id == id)
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &EntryView> {
        self.entries.iter().filter(|e| e.is_conflict())
    }
}

/// Groups versions by entry and finds each entry's heads: the versions that
/// no other version of the same entry replaces.
pub fn materialise(versions: impl IntoIterator<Item = EntryVersion>) -> Vec<EntryView> {
    let mut by_entry: BTreeMap<EntryId, Vec<EntryVersion>> = BTreeMap::new();
    for v in versions {
        by_entry.entry(v.entry_id).or_default().push(v);
    }
    by_entry
        .into_iter()
        .map(|(entry_id, mut versions)| {
            // Sorting by id and full content makes the result independent of
            // arrival order, even for the (malicious) case of two different
            // values under one version id.
            versions.sort_by(|a, b| {
                a.version_id
                    .cmp(&b.version_id)
                    .then_with(|| canonical(a).cmp(&canonical(b)))
            });
            versions.dedup();
            let replaced: HashSet<VersionId> = versions
                .iter()
                .flat_map(|v| v.replaces.iter().copied())
                .collect();
            let mut history: Vec<VersionId> = versions.iter().map(|v| v.version_id).collect();
            history.dedup();
            let mut heads: Vec<EntryVersion> = versions
                .into_iter()
                .filter(|v| !replaced.contains(&v.version_id))
                .collect();
            let state = if heads.len() == 1 {
                EntryState::Current(heads.remove(0))
            } else {
                // Zero heads only arises from a replacement cycle, which honest
                // writers cannot create (a version names only versions that
                // existed before it); show it for review rather than hide it.
                EntryState::Conflict(heads)
            };
            EntryView {
                entry_id,
                state,
                history,
            }
        })
        .collect()
}

fn canonical(v: &EntryVersion) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Code, EntryContent, Provenance, VERSION_FORMAT, VersionStatus};

    fn version(entry: EntryId, replaces: Vec<VersionId>, note: &str) -> EntryVersion {
        EntryVersion {
            format: VERSION_FORMAT,
            version_id: VersionId::new(),
            entry_id: entry,
            replaces,
            status: VersionStatus::Current,
            content: EntryContent::Allergy {
                substance: Code::snomed("91936005", note),
                reaction: None,
                severity: None,
            },
            provenance: Provenance {
                author_id: "u1".into(),
                role: "R8000".into(),
                organisation: "A81001".into(),
                device: "d1".into(),
                recorded_at_ms: 0,
            },
        }
    }

    #[test]
    fn a_chain_of_supersessions_shows_the_newest() {
        let e = EntryId::new();
        let v1 = version(e, vec![], "first");
        let v2 = version(e, vec![v1.version_id], "second");
        let v3 = version(e, vec![v2.version_id], "third");
        let view = materialise([v3.clone(), v1.clone(), v2.clone()]);
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].current(), Some(&v3));
        assert_eq!(
            view[0].history,
            vec![v1.version_id, v2.version_id, v3.version_id]
        );
    }

    #[test]
    fn concurrent_replacements_are_both_kept_as_a_conflict() {
        let e = EntryId::new();
        let v1 = version(e, vec![], "first");
        let a = version(e, vec![v1.version_id], "nurse");
        let b = version(e, vec![v1.version_id], "paramedic");
        let view = materialise([v1.clone(), b.clone(), a.clone()]);
        assert_eq!(
            view[0].state,
            EntryState::Conflict(vec![a.clone(), b.clone()])
        );
        let resolved = version(e, vec![a.version_id, b.version_id], "agreed");
        let view = materialise([v1, a, b, resolved.clone()]);
        assert_eq!(view[0].current(), Some(&resolved));
        assert_eq!(view[0].history.len(), 4);
    }

    #[test]
    fn resolving_only_one_candidate_leaves_the_conflict_open() {
        let e = EntryId::new();
        let v1 = version(e, vec![], "first");
        let a = version(e, vec![v1.version_id], "a");
        let b = version(e, vec![v1.version_id], "b");
        let c = version(e, vec![a.version_id], "c");
        let view = materialise([v1, a, b.clone(), c.clone()]);
        assert_eq!(view[0].state, EntryState::Conflict(vec![b, c]));
    }

    #[test]
    fn entered_in_error_stays_visible_as_the_current_version() {
        let e = EntryId::new();
        let v1 = version(e, vec![], "first");
        let mut eie = version(e, vec![v1.version_id], "first");
        eie.status = VersionStatus::EnteredInError {
            reason: "wrong patient".into(),
        };
        let view = materialise([v1, eie.clone()]);
        assert!(view[0].current().unwrap().is_entered_in_error());
        assert_eq!(view[0].history.len(), 2);
    }

    #[test]
    fn references_to_other_entries_do_not_hide_versions() {
        let e1 = EntryId::new();
        let e2 = EntryId::new();
        let a = version(e1, vec![], "a");
        let b = version(e2, vec![a.version_id], "b");
        let view = materialise([a.clone(), b.clone()]);
        assert_eq!(view.len(), 2);
        assert_eq!(view[0].current(), Some(&a));
        assert_eq!(view[1].current(), Some(&b));
    }
}
