//! Reading the patient's choices out of the governance compartment, and
//! the permissions to view recorded in the permissions compartment (and,
//! in records of layout 1, in governance). Pure.

use std::collections::HashSet;

use super::{PatientChoices, ViewBasis};
use crate::record::{
    CompartmentView, EntryContent, EntryId, EntryVersion, PermissionScope, SharingChoice, VersionId,
};

/// How much a choice withholds: hidden first, then less shared, then
/// sensitive items withheld.
fn restrictiveness(c: &PatientChoices) -> (bool, u8, bool) {
    let sharing = match c.sharing {
        SharingChoice::OptOut => 2,
        SharingChoice::CoreOnly => 1,
        SharingChoice::CoreAndAdditional => 0,
    };
    (c.hidden, sharing, !c.include_sensitive)
}

/// The sharing versions no other sharing version names: the patient's
/// current choice, or several recorded concurrently (on devices that had
/// not merged yet). A choice supersedes every choice its writer had seen
/// by naming them in `replaces`, across entries (two devices may each have
/// started a sharing entry offline); a claimed timestamp never decides.
pub fn current_choices(governance: &CompartmentView) -> Vec<&EntryVersion> {
    let heads = sharing_heads(governance);
    let named: HashSet<VersionId> = heads
        .iter()
        .flat_map(|v| v.replaces.iter().copied())
        .collect();
    heads
        .into_iter()
        .filter(|v| !named.contains(&v.version_id))
        .collect()
}

fn sharing_heads(governance: &CompartmentView) -> Vec<&EntryVersion> {
    governance
        .entries
        .iter()
        .flat_map(|e| e.heads())
        .filter(|v| matches!(v.content, EntryContent::Sharing { .. }))
        .collect()
}

/// The patient's current choices. With none recorded, the national default.
/// If two choices were recorded concurrently (a conflict not yet reviewed),
/// the most restrictive holds until someone resolves it: fail closed.
pub fn choices_from(governance: Option<&CompartmentView>) -> PatientChoices {
    let Some(view) = governance else {
        return PatientChoices::default();
    };
    // Choices that name each other round (no honest writer makes that):
    // none is current, so the most restrictive of them all holds.
    let mut held = current_choices(view);
    if held.is_empty() {
        held = sharing_heads(view);
    }
    held.into_iter()
        .filter(|v| !v.is_entered_in_error())
        .filter_map(|v| match &v.content {
            EntryContent::Sharing {
                choice,
                include_sensitive,
                hidden,
            } => Some(PatientChoices {
                sharing: *choice,
                include_sensitive: *include_sensitive,
                hidden: *hidden,
            }),
            _ => None,
        })
        .max_by_key(restrictiveness)
        .unwrap_or_default()
}

/// Where a new choice goes and what it names: the entry of the current
/// choice (the first, by entry id, if several), replacing every sharing
/// version the writer sees as a head of its entry, whichever entry.
/// `None` when no choice was ever recorded.
pub fn sharing_entry(governance: &CompartmentView) -> Option<(EntryId, Vec<VersionId>)> {
    let entry = current_choices(governance)
        .iter()
        .map(|v| v.entry_id)
        .min()?;
    let mut names: Vec<VersionId> = sharing_heads(governance)
        .iter()
        .map(|v| v.version_id)
        .collect();
    names.sort();
    names.dedup();
    Some((entry, names))
}

/// Whether the patient has answered a request to view from this
/// organisation, for this encounter or for future use; the newest answer
/// counts (staff of that organisation recorded each, and the server holds
/// a claimed time to within minutes of receipt). `recorded`: the
/// permissions compartment, and governance for answers a record of
/// layout 1 (or an older app) keeps there.
pub fn permission_from(
    recorded: &[&CompartmentView],
    organisation: &str,
    encounter_id: &str,
) -> ViewBasis {
    let newest: Option<&EntryVersion> = recorded
        .iter()
        .flat_map(|view| view.entries.iter())
        .flat_map(|e| e.heads())
        .filter(|v| !v.is_entered_in_error())
        .filter(|v| match &v.content {
            EntryContent::PermissionToView {
                organisation: org,
                scope,
                ..
            } => {
                org == organisation
                    && match scope {
                        PermissionScope::Organisation => true,
                        PermissionScope::Encounter { encounter_id: id } => id == encounter_id,
                    }
            }
            _ => false,
        })
        .max_by_key(|v| (v.provenance.recorded_at_ms, v.version_id));
    match newest.map(|v| &v.content) {
        Some(EntryContent::PermissionToView { granted: true, .. }) => ViewBasis::PermissionRecorded,
        Some(_) => ViewBasis::Refused,
        None => ViewBasis::NotAsked,
    }
}
