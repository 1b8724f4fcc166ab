//! The same rules, read from the pushed changes' own operations instead of
//! from a copy of the document with them applied: what the server runs on
//! the way in, because its cost is the change's size, not the document's.
//!
//! An honest push is a set of changes whose every operation puts a new
//! text value under a new key of the `versions` map, overwriting nothing
//! (no predecessor). Anything else is refused by kind: an operation on the
//! root is a header change or a field beside it, a delete under `versions`
//! deletes a version, a put with a predecessor or on a key the document
//! holds rewrites one, a nested object or a non-text value is a malformed
//! version, an operation on any other object is outside the layout. The
//! new versions then go through the same per-version rules as
//! `check_push`, looking the versions they replace up in the document as
//! held or in the push itself.
//!
//! When the changes cannot be judged on their own (one depends on a change
//! the checker does not hold, the document holds changes waiting for one,
//! or a chunk is not a single change), this answers `None` and the caller
//! runs `check_applied`: the changes applied to a copy, then every change
//! that made part of the document judged the same way, which sees what
//! applying them would really do.

use std::collections::{HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, Change, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue, Value};

use super::{PushLimits, Refusal, VERSIONS, Writer, new_version, present, restores_header};
use crate::NhsNumber;
use crate::grant::RoleProfileGrant;
use crate::record::Compartment;

/// Checks the raw `changes` of one push against `held`, the document as
/// the checker holds it, as `check_push` would: how many versions they
/// add, or why they are refused; `None` when they cannot be judged without
/// applying them (see the module's note).
pub fn check_changes(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    grants: &[RoleProfileGrant],
    patient: &NhsNumber,
    received_at_ms: i64,
    limits: &PushLimits,
) -> Option<Result<usize, Refusal>> {
    let parsed = parse_each(changes)?;
    check_parsed_at(
        &VersionsAt::read(held)?,
        compartment,
        held,
        &parsed,
        grants,
        patient,
        received_at_ms,
        limits,
    )
}

/// Where a document keeps its versions (the root's `versions` map, as a
/// change names it), read once. Nothing a device pushes can move it (the
/// check refuses any operation on the root); only the server's own writes
/// can (a record created, a document repaired), so a checker that learns
/// of those may keep it between pushes instead of reading it each time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionsAt(Option<VersionsMap>);

impl VersionsAt {
    /// `None` when the root's `versions` is anything but one map (only
    /// applying a push can judge it then).
    pub fn read(held: &Automerge) -> Option<Self> {
        versions_map(held).map(Self)
    }
}

/// [`check_changes`] on changes already parsed (as the guard that reads a
/// sync message first has them: one parse of each change serves both),
/// with the document's versions map as read before (`at`), which must
/// still be the document's.
#[allow(clippy::too_many_arguments)]
pub fn check_parsed_at(
    at: &VersionsAt,
    compartment: Compartment,
    held: &Automerge,
    changes: &[Change],
    grants: &[RoleProfileGrant],
    patient: &NhsNumber,
    received_at_ms: i64,
    limits: &PushLimits,
) -> Option<Result<usize, Refusal>> {
    let writer = Writer {
        pusher: Some((grants, patient, received_at_ms)),
        limits,
    };
    on_changes(compartment, held, at, changes, &writer)
}

/// What a device checks of the changes it receives, as
/// [`super::check_received`] does on documents (everything but who wrote
/// them); `None` when they cannot be judged alone.
pub fn check_received_changes(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    limits: &PushLimits,
) -> Option<Result<usize, Refusal>> {
    check_received_parsed(compartment, held, &parse_each(changes)?, limits)
}

/// [`check_received_changes`] on changes already parsed.
pub fn check_received_parsed(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Change],
    limits: &PushLimits,
) -> Option<Result<usize, Refusal>> {
    let writer = Writer {
        pusher: None,
        limits,
    };
    on_changes(
        compartment,
        held,
        &VersionsAt::read(held)?,
        changes,
        &writer,
    )
}

/// Each chunk parsed as one change; `None` if one is not.
fn parse_each(changes: &[Vec<u8>]) -> Option<Vec<Change>> {
    changes
        .iter()
        .map(|bytes| Change::try_from(bytes.as_slice()).ok())
        .collect()
}

fn on_changes(
    compartment: Compartment,
    held: &Automerge,
    at: &VersionsAt,
    changes: &[Change],
    writer: &Writer<'_>,
) -> Option<Result<usize, Refusal>> {
    if !held.get_missing_deps(&[]).is_empty() {
        // Changes are waiting for a dependency: the next push may apply
        // them, and only applying shows what they do then.
        return None;
    }
    let versions = &at.0;
    let mut taken: HashSet<ChangeHash> = HashSet::new();
    let mut added = Added::default();
    for change in changes {
        let hash = change.hash();
        if taken.contains(&hash) {
            continue;
        }
        // One look-up for the change and what it depends on: which of them
        // the document lacks.
        let asked: Vec<ChangeHash> = std::iter::once(hash)
            .chain(change.deps().iter().copied())
            .collect();
        let lacking = held.get_missing_deps(&asked);
        if !lacking.contains(&hash) {
            // Held already: merging it again changes nothing.
            continue;
        }
        let unknown_dep = change
            .deps()
            .iter()
            .any(|dep| !taken.contains(dep) && lacking.contains(dep));
        if unknown_dep {
            return None;
        }
        taken.insert(hash);
        let restore = writer.pusher.is_none().then_some(compartment);
        if let Err(refusal) = operations(
            change,
            held,
            versions.as_ref(),
            restore,
            writer.limits,
            &mut added,
        ) {
            return Some(Err(refusal));
        }
    }
    Some(judge(
        compartment,
        held,
        versions.as_ref(),
        added.versions,
        writer,
    ))
}

/// The fallback, for changes that cannot be judged alone: applied to a
/// copy of `held`, then every change that applying them made part of the
/// document (waiting ones included, once their dependencies came) judged
/// on its operations exactly as [`check_changes`] judges them. Changes
/// still waiting for a dependency are judged when it comes.
#[allow(clippy::too_many_arguments)]
pub fn check_applied(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    grants: &[RoleProfileGrant],
    patient: &NhsNumber,
    received_at_ms: i64,
    limits: &PushLimits,
) -> Result<usize, Refusal> {
    let writer = Writer {
        pusher: Some((grants, patient, received_at_ms)),
        limits,
    };
    on_applied(compartment, held, changes, &writer)
}

/// [`check_applied`] for what a device receives.
pub fn check_received_applied(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    limits: &PushLimits,
) -> Result<usize, Refusal> {
    let writer = Writer {
        pusher: None,
        limits,
    };
    on_applied(compartment, held, changes, &writer)
}

fn on_applied(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    writer: &Writer<'_>,
) -> Result<usize, Refusal> {
    // A root `versions` that is not one map: nothing may be added to it.
    let versions = versions_map(held).ok_or(Refusal::HeaderChanged)?;
    let mut after = held.clone();
    for chunk in changes {
        after
            .load_incremental(chunk)
            .map_err(|_| Refusal::MalformedVersion)?;
    }
    let restore = writer.pusher.is_none().then_some(compartment);
    let mut added = Added::default();
    for change in after.get_changes(&held.get_heads()) {
        operations(
            &change,
            held,
            versions.as_ref(),
            restore,
            writer.limits,
            &mut added,
        )?;
    }
    judge(compartment, held, versions.as_ref(), added.versions, writer)
}

/// Which changes of a refused push are refused on their own: each change
/// judged by its own operations and versions (the versions it replaces
/// looked up in the document and in the whole push), whatever it depends
/// on. A change refused only because it builds on a refused one is not
/// named: blame lands on what was wrong, not on what followed it. A chunk
/// that is not one change is named by `None` with its index.
#[allow(clippy::too_many_arguments)]
pub fn refused_changes(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    grants: &[RoleProfileGrant],
    patient: &NhsNumber,
    received_at_ms: i64,
    limits: &PushLimits,
) -> Vec<(usize, Option<ChangeHash>, Refusal)> {
    let writer = Writer {
        pusher: Some((grants, patient, received_at_ms)),
        limits,
    };
    let Some(versions) = versions_map(held) else {
        return vec![(0, None, Refusal::HeaderChanged)];
    };
    let parsed: Vec<Option<Change>> = changes
        .iter()
        .map(|b| Change::try_from(b.as_slice()).ok())
        .collect();
    // Every version the push adds, for the versions one replaces.
    let mut everything = Added::default();
    let unbounded = PushLimits {
        max_new_versions: usize::MAX,
        ..*limits
    };
    for change in parsed.iter().flatten() {
        let mut own = Added::default();
        if operations(change, held, versions.as_ref(), None, &unbounded, &mut own).is_ok() {
            for (k, v) in own.versions {
                if everything.keys.insert(k.clone()) {
                    everything.versions.push((k, v));
                }
            }
        }
    }
    let mut refused = Vec::new();
    for (i, change) in parsed.iter().enumerate() {
        let Some(change) = change else {
            refused.push((i, None, Refusal::MalformedVersion));
            continue;
        };
        if held.get_missing_deps(&[change.hash()]).is_empty() {
            continue;
        }
        let mut own = Added::default();
        let verdict =
            operations(change, held, versions.as_ref(), None, limits, &mut own).and_then(|()| {
                judge_with(
                    compartment,
                    held,
                    versions.as_ref(),
                    own.versions,
                    &everything,
                    &writer,
                )
            });
        if let Err(refusal) = verdict {
            refused.push((i, Some(change.hash()), refusal));
        }
    }
    refused
}

/// The new versions a push adds, in order, and their keys.
#[derive(Default)]
struct Added {
    versions: Vec<(String, String)>,
    keys: HashSet<String>,
}

/// The held versions map's id as a change names it (counter and actor),
/// with its document id; `Some(None)` when there is none; `None` when the
/// root's `versions` is anything but one map (only applying can tell).
fn versions_map(held: &Automerge) -> Option<Option<VersionsMap>> {
    match held.get_all(ROOT, VERSIONS).ok()?.as_slice() {
        [] => Some(None),
        [(Value::Object(ObjType::Map), id)] => match id {
            automerge::ObjId::Id(counter, actor, _) => {
                Some(Some((*counter, actor.clone(), id.clone())))
            }
            automerge::ObjId::Root => None,
        },
        _ => None,
    }
}

type VersionsMap = (u64, automerge::ActorId, automerge::ObjId);

/// Every operation of one change, judged on its own; the new versions'
/// keys and texts are added to `added` (no more than a push may add:
/// every operation of an honest push adds one).
fn operations(
    change: &Change,
    held: &Automerge,
    versions: Option<&VersionsMap>,
    restore: Option<Compartment>,
    limits: &PushLimits,
    added: &mut Added,
) -> Result<(), Refusal> {
    if added.versions.len().saturating_add(change.len()) > limits.max_new_versions {
        return Err(Refusal::TooManyVersions);
    }
    let expanded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| change.decode()))
        .map_err(|_| Refusal::MalformedVersion)?;
    for op in expanded.operations {
        let under_versions = match (&op.obj, versions) {
            (ObjectId::Root, _) => {
                // What a device receives may put the header back (a
                // server's repair); nothing else on the root, from anyone.
                if let (Some(c), Key::Map(k), OpType::Put(v), false) =
                    (restore, &op.key, &op.action, op.insert)
                    && restores_header(c, k, v)
                {
                    continue;
                }
                return Err(match &op.key {
                    Key::Map(k) if ["format", "compartment", VERSIONS].contains(&k.as_str()) => {
                        Refusal::HeaderChanged
                    }
                    _ => Refusal::UnknownField,
                });
            }
            (ObjectId::Id(id), Some((counter, actor, _))) => {
                id.counter() == *counter && id.actor() == actor
            }
            (ObjectId::Id(_), None) => false,
        };
        let (Some((_, _, map)), true, Key::Map(key)) = (versions, under_versions, &op.key) else {
            return Err(Refusal::UnknownField);
        };
        let held_already = held.get(map, key.as_str()).ok().flatten().is_some();
        match op.action {
            OpType::Delete => return Err(Refusal::VersionDeleted),
            _ if op.insert => return Err(Refusal::UnknownField),
            _ if held_already || !op.pred.is_empty() => return Err(Refusal::VersionChanged),
            // Two puts of one new key: a conflict, not one version.
            _ if added.keys.contains(key.as_str()) => {
                return Err(Refusal::MalformedVersion);
            }
            OpType::Put(ScalarValue::Str(text)) => {
                added.keys.insert(key.to_string());
                added.versions.push((key.to_string(), text.to_string()));
            }
            _ => return Err(Refusal::MalformedVersion),
        }
    }
    Ok(())
}

/// The new versions, bounded, each by the per-version rules.
fn judge(
    compartment: Compartment,
    held: &Automerge,
    versions: Option<&VersionsMap>,
    added: Vec<(String, String)>,
    writer: &Writer<'_>,
) -> Result<usize, Refusal> {
    judge_with(
        compartment,
        held,
        versions,
        added,
        &Added::default(),
        writer,
    )
}

/// [`judge`], looking the versions a new one replaces up in the document,
/// in `added` and in `also`.
fn judge_with(
    compartment: Compartment,
    held: &Automerge,
    versions: Option<&VersionsMap>,
    added: Vec<(String, String)>,
    also: &Added,
    writer: &Writer<'_>,
) -> Result<usize, Refusal> {
    if added.len() > writer.limits.max_new_versions {
        return Err(Refusal::TooManyVersions);
    }
    let Some((_, _, map)) = versions else {
        return Ok(0);
    };
    let pushed: HashMap<&str, &str> = also
        .versions
        .iter()
        .chain(&added)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let lookup = |id: &str| match pushed.get(id) {
        Some(json) => serde_json::from_str(json).ok(),
        None => present(held, map, id),
    };
    for (key, json) in &added {
        new_version(compartment, key, json, &lookup, writer)?;
    }
    Ok(added.len())
}
