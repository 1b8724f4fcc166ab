//! The patient's choice is the one no later choice names: supersession,
//! never a claimed timestamp; concurrent choices, the most restrictive.

use super::*;
use crate::record::{
    CompartmentView, EntryContent, EntryId, EntryVersion, Provenance, VersionId, VersionStatus,
    materialise,
};

fn choice(
    entry: EntryId,
    replaces: Vec<VersionId>,
    sharing: SharingChoice,
    at: i64,
) -> EntryVersion {
    EntryVersion::new(
        entry,
        replaces,
        VersionStatus::Current,
        EntryContent::Sharing {
            choice: sharing,
            include_sensitive: false,
            hidden: false,
        },
        Provenance {
            author_id: "patient".into(),
            role: String::new(),
            organisation: String::new(),
            device: "phone".into(),
            recorded_at_ms: at,
        },
    )
}

fn governance(versions: &[&EntryVersion]) -> CompartmentView {
    CompartmentView {
        compartment: Governance,
        entries: materialise(versions.iter().map(|v| (*v).clone())),
        unreadable: Vec::new(),
    }
}

#[test]
fn the_choice_that_names_the_others_holds_whatever_its_time() {
    // A choice dated in the future on one device, then superseded on
    // another (whose clock is behind) in an entry of its own.
    let (a, b) = (EntryId::new(), EntryId::new());
    let early = choice(a, Vec::new(), SharingChoice::CoreAndAdditional, 900);
    let later = choice(b, vec![early.version_id], SharingChoice::CoreOnly, 100);
    let view = governance(&[&early, &later]);
    assert_eq!(choices_from(Some(&view)).sharing, SharingChoice::CoreOnly);
    // The next choice goes to the current choice's entry and names every
    // choice seen.
    let (entry, names) = sharing_entry(&view).unwrap();
    assert_eq!(entry, b);
    let mut expected = vec![early.version_id, later.version_id];
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn concurrent_choices_resolve_to_the_most_restrictive_until_one_names_both() {
    let (a, b) = (EntryId::new(), EntryId::new());
    let withheld = choice(a, Vec::new(), SharingChoice::CoreOnly, 100);
    let shared = choice(b, Vec::new(), SharingChoice::CoreAndAdditional, 900);
    let view = governance(&[&withheld, &shared]);
    assert_eq!(current_choices(&view).len(), 2);
    assert_eq!(choices_from(Some(&view)).sharing, SharingChoice::CoreOnly);
    let resolved = choice(
        a,
        vec![withheld.version_id, shared.version_id],
        SharingChoice::CoreAndAdditional,
        50,
    );
    let view = governance(&[&withheld, &shared, &resolved]);
    assert_eq!(
        choices_from(Some(&view)).sharing,
        SharingChoice::CoreAndAdditional
    );
}

#[test]
fn choices_that_name_each_other_round_hold_the_most_restrictive() {
    let (a, b) = (EntryId::new(), EntryId::new());
    let mut shared = choice(a, Vec::new(), SharingChoice::CoreAndAdditional, 100);
    let opted_out = choice(b, vec![shared.version_id], SharingChoice::OptOut, 200);
    shared.replaces = vec![opted_out.version_id];
    let view = governance(&[&shared, &opted_out]);
    assert!(current_choices(&view).is_empty());
    assert_eq!(choices_from(Some(&view)).sharing, SharingChoice::OptOut);
}
