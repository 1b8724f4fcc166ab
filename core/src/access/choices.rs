//! Reading the patient's choices and recorded permissions out of the
//! governance compartment. Pure.

use super::{PatientChoices, ViewBasis};
use crate::record::{CompartmentView, EntryContent, EntryVersion, PermissionScope, SharingChoice};

fn restrictiveness(c: &PatientChoices) -> (bool, u8, bool) {
    let sharing = match c.sharing {
        SharingChoice::OptOut => 2,
        SharingChoice::CoreOnly => 1,
        SharingChoice::CoreAndAdditional => 0,
    };
    (c.hidden, sharing, !c.include_sensitive)
}

/// The patient's current choices. With none recorded, the national default.
/// If two choices were recorded concurrently (a conflict not yet reviewed),
/// the most restrictive holds until someone resolves it: fail closed.
pub fn choices_from(governance: Option<&CompartmentView>) -> PatientChoices {
    let Some(view) = governance else {
        return PatientChoices::default();
    };
    let mut candidates: Vec<(i64, PatientChoices)> = Vec::new();
    for entry in &view.entries {
        let heads = entry.heads();
        let mut here: Vec<PatientChoices> = heads
            .iter()
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
            .collect();
        here.sort_by_key(restrictiveness);
        if let Some(most) = here.pop() {
            let at = heads
                .iter()
                .map(|v| v.provenance.recorded_at_ms)
                .max()
                .unwrap_or(0);
            candidates.push((at, most));
        }
    }
    // One sharing entry is normal; several only if recorded separately on
    // devices that had not yet merged: take the newest.
    candidates.sort_by_key(|(at, c)| (*at, restrictiveness(c)));
    candidates.pop().map(|(_, c)| c).unwrap_or_default()
}

/// The current sharing entry's id and heads, to supersede it.
pub fn sharing_entry(
    governance: &CompartmentView,
) -> Option<(crate::record::EntryId, Vec<crate::record::VersionId>)> {
    governance
        .entries
        .iter()
        .filter(|e| {
            e.heads()
                .iter()
                .any(|v| matches!(v.content, EntryContent::Sharing { .. }))
        })
        .max_by_key(|e| e.heads().iter().map(|v| v.provenance.recorded_at_ms).max())
        .map(|e| (e.entry_id, e.head_ids()))
}

/// Whether the patient has answered a request to view from this
/// organisation, for this encounter or for future use; the newest answer counts.
pub fn permission_from(
    governance: Option<&CompartmentView>,
    organisation: &str,
    encounter_id: &str,
) -> ViewBasis {
    let Some(view) = governance else {
        return ViewBasis::NotAsked;
    };
    let newest: Option<&EntryVersion> = view
        .entries
        .iter()
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
