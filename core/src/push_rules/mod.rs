//! What a push may change in a compartment document: the one check, pure,
//! that the server runs on every incoming change before anything merges it
//! (and a device may run on what it receives). It compares the document as
//! the checker holds it (`before`) with the same document with the pushed
//! changes applied (`after`), for one writer: the grants the server issued
//! to the pushing device (a version written offline under yesterday's
//! grant and pushed after this morning's login is normal).
//!
//! - The header (format, compartment, the versions map) never changes, and
//!   nothing is added beside it.
//! - Versions are only added: no existing version is changed or deleted.
//! - Each new version is readable, filed under its own id, small enough,
//!   of a kind that belongs in the compartment, authored by the writer
//!   (author, role, organisation and device from the grant, never from the
//!   message), recorded within the grant's validity and not in the future,
//!   and replaces only versions of the same entry present in the document.
//! - Who writes what: a sharing choice only by the patient or their
//!   registered GP practice's GP (or a privacy officer's unhide, which
//!   changes nothing else); a permission to view only by staff, for
//!   their own organisation; a staff member replaces another organisation's
//!   version only as the patient's GP; a patient replaces only versions in
//!   their own compartments (patient-entered, governance).
//!
//! Which compartments a device may write at all is the share policy's
//! decision (`access::decide`); this check is about what is in the change.

use std::collections::HashMap;

use automerge::{ObjType, ROOT, ReadDoc, ScalarValue, Value};

use crate::NhsNumber;
use crate::access::Principal;
use crate::grant::{CLOCK_SKEW_MS, RelationshipKind, RoleProfileGrant};
use crate::record::{Compartment, EntryContent, EntryVersion, VersionStatus};

const VERSIONS: &str = "versions";

/// Bounds on one push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushLimits {
    /// New versions one push may add to one document.
    pub max_new_versions: usize,
    /// The largest version, as stored (JSON bytes).
    pub max_version_bytes: usize,
    /// How far a version's `recorded_at` may lie ahead of the receipt, or
    /// outside its grant's validity (device clocks drift).
    pub clock_skew_ms: i64,
    /// Until when (the checker's clock) a permission to view pushed into
    /// governance, as apps of record layout 1 write it, is taken (and the
    /// server moves it to the permissions compartment); refused as in the
    /// wrong compartment after. What a device receives is never refused
    /// for it: records of layout 1 hold such entries for good.
    pub legacy_permissions_until_ms: i64,
}

/// The end of the transition for apps that record permission to view in
/// governance (ADR 0011): 1 July 2027, 00:00 UTC.
pub const LEGACY_PERMISSIONS_UNTIL_MS: i64 = 1_814_400_000_000;

impl Default for PushLimits {
    fn default() -> Self {
        Self {
            max_new_versions: 512,
            max_version_bytes: 64 * 1024,
            clock_skew_ms: CLOCK_SKEW_MS,
            legacy_permissions_until_ms: LEGACY_PERMISSIONS_UNTIL_MS,
        }
    }
}

/// Why a push is refused. Names what is wrong, never a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the document's header (format, compartment or versions map) was changed")]
    HeaderChanged,
    #[error("a field outside the compartment layout was added")]
    UnknownField,
    #[error("an existing version was changed")]
    VersionChanged,
    #[error("an existing version was deleted")]
    VersionDeleted,
    #[error("a new version is not one this build reads")]
    MalformedVersion,
    #[error("a new version is filed under another id than its own")]
    MisfiledVersion,
    #[error("the push adds more versions than one push may")]
    TooManyVersions,
    #[error("a new version is larger than a version may be")]
    VersionTooLarge,
    #[error("a new version's kind does not belong in this compartment")]
    WrongCompartment,
    #[error("a new version's author, role, organisation or device is not the writer's")]
    ForgedProvenance,
    #[error("a new version was recorded in the future or outside the writer's grant")]
    ImplausibleTime,
    #[error("a new version replaces versions that are not earlier versions of its entry here")]
    UnknownReplaces,
    #[error("a new version changes its entry's kind")]
    KindChanged,
    #[error("the writer may not write this kind of entry")]
    NotPermitted,
    #[error("a change is written under an Automerge actor id that is not the device's own")]
    ActorTaken,
}

/// Checks what `after` adds to `before`, pushed by a device the server
/// issued `grants` to, on the record of `patient`, received at
/// `received_at_ms` (the checker's clock). Each new version must be the
/// work of one of those grants, recorded while it was valid. Returns how
/// many versions the push adds.
pub fn check_push(
    compartment: Compartment,
    before: &impl ReadDoc,
    after: &impl ReadDoc,
    grants: &[RoleProfileGrant],
    patient: &NhsNumber,
    received_at_ms: i64,
    limits: &PushLimits,
) -> Result<usize, Refusal> {
    let writer = Writer {
        pusher: Some((grants, patient, received_at_ms)),
        limits,
    };
    on_documents(compartment, before, after, &writer)
}

/// What a device checks of what it receives, on the two documents: the
/// same rules but who wrote it (the server checked that; the device holds
/// no one else's grants). A server that sends a rewritten, deleted or
/// misplaced version, or a changed header, is refused as a pusher is.
pub fn check_received(
    compartment: Compartment,
    before: &impl ReadDoc,
    after: &impl ReadDoc,
    limits: &PushLimits,
) -> Result<usize, Refusal> {
    let writer = Writer {
        pusher: None,
        limits,
    };
    on_documents(compartment, before, after, &writer)
}

fn on_documents(
    compartment: Compartment,
    before: &impl ReadDoc,
    after: &impl ReadDoc,
    writer: &Writer<'_>,
) -> Result<usize, Refusal> {
    let restore = writer.pusher.is_none().then_some(compartment);
    let versions = header_unchanged(before, after, restore)?;
    let Some(versions) = versions else {
        // No versions map in either: nothing can have been added to it.
        return Ok(0);
    };
    let old = entries(before, &versions);
    let new = entries(after, &versions);
    for (key, values) in &old {
        match new.get(key) {
            None => return Err(Refusal::VersionDeleted),
            Some(now) if now != values => return Err(Refusal::VersionChanged),
            Some(_) => {}
        }
    }
    let added: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    if added.len() > writer.limits.max_new_versions {
        return Err(Refusal::TooManyVersions);
    }
    let lookup = |id: &str| present(after, &versions, id);
    for key in &added {
        let Some(json) = text_at(after, &versions, key) else {
            return Err(Refusal::MalformedVersion);
        };
        new_version(compartment, key, &json, &lookup, writer)?;
    }
    Ok(added.len())
}

/// Who pushed (the device's grants, the record's patient, the receipt
/// time), within which bounds. No pusher: what a device receives, whose
/// writers the server checked.
pub(crate) struct Writer<'a> {
    pub(crate) pusher: Option<(&'a [RoleProfileGrant], &'a NhsNumber, i64)>,
    pub(crate) limits: &'a PushLimits,
}

/// One new version, `json` filed under `key`: readable, small enough,
/// filed under its own id, and within the rules. `lookup` finds the
/// versions the document holds once the push is merged.
pub(crate) fn new_version(
    compartment: Compartment,
    key: &str,
    json: &str,
    lookup: &dyn Fn(&str) -> Option<EntryVersion>,
    writer: &Writer<'_>,
) -> Result<(), Refusal> {
    if json.len() > writer.limits.max_version_bytes {
        return Err(Refusal::VersionTooLarge);
    }
    let version: EntryVersion =
        serde_json::from_str(json).map_err(|_| Refusal::MalformedVersion)?;
    // Filed under exactly its id's text (lower-case, hyphenated), written
    // on the stack rather than allocated.
    let mut filed = [0u8; uuid::fmt::Hyphenated::LENGTH];
    if version
        .version_id
        .as_uuid()
        .hyphenated()
        .encode_lower(&mut filed)
        != key
    {
        return Err(Refusal::MisfiledVersion);
    }
    check_version(compartment, &version, lookup, writer)
}

/// The header is the same in both, and the root holds nothing else; the
/// versions map's id, if there is one. With `restore` (what a device
/// receives), format and compartment may also be put back to what
/// `restore`'s document reads as: the server's repair of a document the
/// device merged unreadable before it checked what it received.
fn header_unchanged(
    before: &impl ReadDoc,
    after: &impl ReadDoc,
    restore: Option<Compartment>,
) -> Result<Option<automerge::ObjId>, Refusal> {
    let before_keys: Vec<String> = before.keys(ROOT).collect();
    if after.keys(ROOT).any(|k| !before_keys.contains(&k)) {
        return Err(Refusal::UnknownField);
    }
    for key in ["format", "compartment", VERSIONS] {
        let was = before
            .get_all(ROOT, key)
            .map_err(|_| Refusal::HeaderChanged)?;
        let is = after
            .get_all(ROOT, key)
            .map_err(|_| Refusal::HeaderChanged)?;
        let restored = match (restore, is.as_slice()) {
            (Some(c), [(Value::Scalar(v), _)]) => restores_header(c, key, v),
            _ => false,
        };
        if was != is && !restored {
            return Err(Refusal::HeaderChanged);
        }
    }
    match after.get_all(ROOT, VERSIONS).unwrap_or_default().as_slice() {
        [] => Ok(None),
        [(Value::Object(ObjType::Map), id)] => Ok(Some(id.clone())),
        _ => Err(Refusal::HeaderChanged),
    }
}

/// Whether `value` under root `key` is what a readable `compartment`
/// document holds there (format 1, its own compartment).
pub(crate) fn restores_header(compartment: Compartment, key: &str, value: &ScalarValue) -> bool {
    match (key, value) {
        ("format", ScalarValue::Int(n)) => *n == crate::record::DOC_FORMAT,
        ("format", ScalarValue::Uint(n)) => i64::try_from(*n) == Ok(crate::record::DOC_FORMAT),
        ("compartment", ScalarValue::Str(s)) => s.as_str() == compartment.as_str(),
        _ => false,
    }
}

/// Every key of the versions map, with the ids of the operations that
/// put its values: a value changed or put again has a new id, so versions
/// compare without reading them.
fn entries(
    doc: &impl ReadDoc,
    versions: &automerge::ObjId,
) -> HashMap<String, Vec<automerge::ObjId>> {
    doc.keys(versions)
        .map(|key| {
            let ids = doc
                .get_all(versions, key.as_str())
                .unwrap_or_default()
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            (key, ids)
        })
        .collect()
}

/// The text under `key` after the push, if it is one text value.
fn text_at(doc: &impl ReadDoc, versions: &automerge::ObjId, key: &str) -> Option<String> {
    match doc.get_all(versions, key).ok()?.as_slice() {
        [(Value::Scalar(s), _)] => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The version under `id`, if it is there and readable.
pub(crate) fn present(
    doc: &impl ReadDoc,
    versions: &automerge::ObjId,
    id: &str,
) -> Option<EntryVersion> {
    serde_json::from_str(&text_at(doc, versions, id)?).ok()
}

fn check_version(
    compartment: Compartment,
    version: &EntryVersion,
    lookup: &dyn Fn(&str) -> Option<EntryVersion>,
    writer: &Writer<'_>,
) -> Result<(), Refusal> {
    let belongs = match (compartment, &version.content) {
        (Compartment::Sensitive, content) => content.may_be_sensitive(),
        (Compartment::Governance, EntryContent::PermissionToView { .. }) => match writer.pusher {
            Some((_, _, received_at_ms)) => {
                received_at_ms < writer.limits.legacy_permissions_until_ms
            }
            None => true,
        },
        (c, content) => content.home_compartment() == c,
    };
    if !belongs {
        return Err(Refusal::WrongCompartment);
    }
    let author = match writer.pusher {
        Some((grants, patient, received_at_ms)) => Some((
            authorising_grant(version, grants, received_at_ms, writer.limits)?,
            patient,
        )),
        None => None,
    };
    let mut replaced = Vec::new();
    for id in &version.replaces {
        match lookup(&id.to_string()) {
            Some(old)
                if old.version_id != version.version_id
                    && (old.entry_id == version.entry_id || both_choices(&old, version)) =>
            {
                replaced.push(old)
            }
            _ => return Err(Refusal::UnknownReplaces),
        }
    }
    let replaced: Vec<&EntryVersion> = replaced.iter().collect();
    if replaced
        .iter()
        .any(|old| old.content.kind_name() != version.content.kind_name())
    {
        return Err(Refusal::KindChanged);
    }
    match (author, writer.pusher) {
        (Some((grant, patient)), Some((grants, _, _))) => {
            // A choice is the patient's GP's to record only while they are
            // (the newest grant says so too): a choice names what it
            // supersedes, so one dated back into an old grant would hold.
            let still_gp = grants
                .iter()
                .max_by_key(|g| g.issued_at_ms)
                .is_some_and(|newest| registered_gp(newest, patient));
            if matches!(version.content, EntryContent::Sharing { .. })
                && registered_gp(grant, patient)
                && !still_gp
                && !grant.is_patient(patient)
            {
                return Err(Refusal::NotPermitted);
            }
            may_write(compartment, version, &replaced, grant, patient)
        }
        _ => Ok(()),
    }
}

/// A sharing choice names every choice its writer saw, whichever entry
/// holds it (`access::current_choices`).
fn both_choices(old: &EntryVersion, new: &EntryVersion) -> bool {
    matches!(old.content, EntryContent::Sharing { .. })
        && matches!(new.content, EntryContent::Sharing { .. })
}

/// The grant `version` was written under: one of `grants` whose author,
/// role, organisation and device it names, valid when it was recorded, and
/// recorded no later than its receipt (both within the clock skew).
fn authorising_grant<'g>(
    version: &EntryVersion,
    grants: &'g [RoleProfileGrant],
    received_at_ms: i64,
    limits: &PushLimits,
) -> Result<&'g RoleProfileGrant, Refusal> {
    let p = &version.provenance;
    let authored_by = |g: &&RoleProfileGrant| {
        let (author, role, organisation) = g.actor_ref();
        p.author_id == author
            && p.role == role
            && p.organisation == organisation
            && p.device == g.device_id
    };
    let skew = limits.clock_skew_ms;
    let valid_then = |g: &&RoleProfileGrant| {
        p.recorded_at_ms >= g.issued_at_ms.saturating_sub(skew)
            && p.recorded_at_ms <= g.expires_at_ms.saturating_add(skew)
    };
    if !grants.iter().any(|g| authored_by(&g)) {
        return Err(Refusal::ForgedProvenance);
    }
    let Some(grant) = grants.iter().filter(authored_by).find(valid_then) else {
        return Err(Refusal::ImplausibleTime);
    };
    if p.recorded_at_ms > received_at_ms.saturating_add(skew) {
        return Err(Refusal::ImplausibleTime);
    }
    Ok(grant)
}

/// Who may write what (beyond which compartments, which the share policy
/// decides).
fn may_write(
    compartment: Compartment,
    version: &EntryVersion,
    replaced: &[&EntryVersion],
    writer: &RoleProfileGrant,
    patient: &NhsNumber,
) -> Result<(), Refusal> {
    let patients_gp = registered_gp(writer, patient);
    let is_patient = writer.is_patient(patient);
    let (_, _, organisation) = writer.actor_ref();
    let unhide = privacy_officer_unhides(version, replaced, writer);
    let allowed = match &version.content {
        EntryContent::Sharing { .. } => is_patient || patients_gp || unhide,
        EntryContent::PermissionToView {
            organisation: org, ..
        } => {
            !is_patient
                && matches!(writer.principal, crate::grant::GrantPrincipal::Staff { .. })
                && *org == organisation
        }
        _ => true,
    };
    if !allowed {
        return Err(Refusal::NotPermitted);
    }
    let retracting_or_superseding =
        !replaced.is_empty() || matches!(version.status, VersionStatus::EnteredInError { .. });
    if retracting_or_superseding && !unhide {
        let own = |old: &&EntryVersion| {
            if is_patient {
                matches!(
                    compartment,
                    Compartment::PatientEntered | Compartment::Governance
                )
            } else {
                old.provenance.organisation == organisation || patients_gp
            }
        };
        if !replaced.iter().all(own) {
            return Err(Refusal::NotPermitted);
        }
        if is_patient && !own(&version) {
            return Err(Refusal::NotPermitted);
        }
    }
    Ok(())
}

/// A GP job role whose grant names the patient's registration.
fn registered_gp(grant: &RoleProfileGrant, patient: &NhsNumber) -> bool {
    grant
        .relationship_with(patient)
        .is_some_and(|r| r.kind == RelationshipKind::Registration)
        && matches!(grant.principal(), Principal::Staff(role) if role.is_gp())
}

/// A privacy officer's unhide: every replaced version is a hidden choice,
/// and the new one only lifts that (the same sensitive inclusion, the same
/// sharing, an opt-out becoming core only, as an unhide does; the
/// references are in the audit event that goes with it). Naming a version
/// that is not hidden (the patient's current choice, say) is not an unhide.
fn privacy_officer_unhides(
    version: &EntryVersion,
    replaced: &[&EntryVersion],
    writer: &RoleProfileGrant,
) -> bool {
    use crate::record::SharingChoice::{CoreOnly, OptOut};
    let EntryContent::Sharing {
        choice,
        include_sensitive,
        hidden: false,
    } = &version.content
    else {
        return false;
    };
    let officer = matches!(
        writer.principal,
        crate::grant::GrantPrincipal::Staff {
            privacy_officer: true,
            ..
        }
    );
    officer
        && !replaced.is_empty()
        && replaced.iter().all(|old| match &old.content {
            EntryContent::Sharing {
                choice: was,
                include_sensitive: sensitive_was,
                hidden: true,
            } => {
                sensitive_was == include_sensitive
                    && (was == choice || (*was == OptOut && *choice == CoreOnly))
            }
            _ => false,
        })
}

mod changes;
pub use changes::{
    VersionsAt, check_applied, check_changes, check_parsed_at, check_received_applied,
    check_received_changes, check_received_parsed, refused_changes,
};

#[cfg(test)]
mod tests;
