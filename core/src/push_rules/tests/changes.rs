//! What only the operation-level check sees: changes it already holds,
//! changes it cannot judge without applying them, and two changes that
//! each look honest but together rewrite a version.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc};

use super::*;

fn raw(doc: &mut AutoCommit, since: &[automerge::ChangeHash]) -> Vec<Vec<u8>> {
    doc.get_changes(since)
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect()
}

fn judged(d: &mut Doc, changes: &[Vec<u8>]) -> Option<Result<usize, Refusal>> {
    check_changes(
        Compartment::CareEvents,
        d.doc.document(),
        changes,
        &[nurse()],
        &patient(),
        NOW,
        &PushLimits::default(),
    )
}

#[test]
fn a_change_held_already_adds_nothing() {
    let mut d = doc(Compartment::CareEvents, note("x"));
    let all = raw(&mut d.doc, &[]);
    assert_eq!(judged(&mut d, &all), Some(Ok(0)));
    // The same new change twice in one push is one change.
    let heads = d.doc.get_heads();
    let mut after = d.doc.fork();
    put(
        &mut after,
        &d.versions,
        &version(note("v"), by(&nurse(), NOW)),
    );
    let mut twice = raw(&mut after, &heads);
    twice.extend(twice.clone());
    assert_eq!(judged(&mut d, &twice), Some(Ok(1)));
}

#[test]
fn what_cannot_be_judged_alone_is_left_to_the_full_check() {
    let mut d = doc(Compartment::CareEvents, note("x"));
    let heads = d.doc.get_heads();
    let mut after = d.doc.fork();
    put(
        &mut after,
        &d.versions,
        &version(note("a"), by(&nurse(), NOW)),
    );
    after.commit();
    put(
        &mut after,
        &d.versions,
        &version(note("b"), by(&nurse(), NOW)),
    );
    let changes = raw(&mut after, &heads);
    assert_eq!(changes.len(), 2);
    // The second alone depends on a change the checker does not hold.
    assert_eq!(judged(&mut d, &changes[1..]), None);
    // Once the document holds a change waiting for that one, nothing is
    // judged alone: the next push may apply it.
    d.doc.load_incremental(&changes[1]).unwrap();
    assert_eq!(judged(&mut d, &changes[..1]), None);
    // A chunk that is not one change (a saved document, or noise).
    let mut d = doc(Compartment::CareEvents, note("x"));
    let saved = after.save();
    assert_eq!(judged(&mut d, &[saved]), None);
    assert_eq!(judged(&mut d, &[b"not a change".to_vec()]), None);
}

#[test]
fn two_honest_looking_puts_of_one_key_are_refused() {
    // Two changes, neither seeing the other, each putting the same new
    // key: merged, the version would have two values.
    let mut d = doc(Compartment::CareEvents, note("x"));
    let heads = d.doc.get_heads();
    let v = version(note("a"), by(&nurse(), NOW));
    let mut one = d.doc.fork();
    put(&mut one, &d.versions, &v);
    let mut other = d.doc.fork();
    let mut w = v.clone();
    w.content = note("b");
    put(&mut other, &d.versions, &w);
    let mut changes = raw(&mut one, &heads);
    changes.extend(raw(&mut other, &heads));
    assert_eq!(
        judged(&mut d, &changes),
        Some(Err(Refusal::MalformedVersion))
    );
    // And a new version put twice in one change's history.
    let mut again = d.doc.fork();
    put(&mut again, &d.versions, &v);
    again.commit();
    put(&mut again, &d.versions, &w);
    let changes = raw(&mut again, &heads);
    assert_eq!(judged(&mut d, &changes), Some(Err(Refusal::VersionChanged)));
    // The versions map itself is never written beside its versions.
    let mut nested = d.doc.fork();
    nested
        .put_object(&d.versions, VersionId::new().to_string(), ObjType::Map)
        .unwrap();
    let changes = raw(&mut nested, &heads);
    assert_eq!(
        judged(&mut d, &changes),
        Some(Err(Refusal::MalformedVersion))
    );
    assert!(
        d.doc
            .get(&d.versions, v.version_id.to_string())
            .unwrap()
            .is_none()
    );
}

#[test]
fn what_a_device_receives_is_checked_for_all_but_its_writer() {
    let mut d = doc(Compartment::CareEvents, note("no concerns"));
    let heads = d.doc.get_heads();
    let limits = PushLimits::default();
    let received = |d: &mut Doc, after: &mut AutoCommit| {
        let on_documents = check_received(Compartment::CareEvents, &d.doc, after, &limits);
        let changes = raw(after, &heads);
        let on_changes =
            check_received_changes(Compartment::CareEvents, d.doc.document(), &changes, &limits);
        assert_eq!(on_changes, Some(on_documents), "the two checks disagree");
        on_documents
    };
    // Someone else's new note (a GP's, say): the device cannot know their
    // grant, and does not need to.
    let mut other = d.doc.fork();
    let mut by_someone = by(&gp(), NOW);
    by_someone.author_id = "555000000777".into();
    put(&mut other, &d.versions, &version(note("seen"), by_someone));
    assert_eq!(received(&mut d, &mut other), Ok(1));
    // A rewritten version, a deleted one, a raised format, a misplaced
    // kind: refused as from a pusher.
    let existing = d.existing.clone();
    let mut rewritten = d.doc.fork();
    let mut forged = existing.clone();
    forged.content = note("REWRITTEN");
    rewritten
        .put(
            &d.versions,
            existing.version_id.to_string(),
            serde_json::to_string(&forged).unwrap(),
        )
        .unwrap();
    assert_eq!(
        received(&mut d, &mut rewritten),
        Err(Refusal::VersionChanged)
    );
    let mut deleted = d.doc.fork();
    deleted
        .delete(&d.versions, existing.version_id.to_string())
        .unwrap();
    assert_eq!(received(&mut d, &mut deleted), Err(Refusal::VersionDeleted));
    let mut bricked = d.doc.fork();
    bricked.put(automerge::ROOT, "format", 2).unwrap();
    assert_eq!(received(&mut d, &mut bricked), Err(Refusal::HeaderChanged));
    let mut misplaced = d.doc.fork();
    let sharing = EntryContent::Sharing {
        choice: SharingChoice::CoreAndAdditional,
        include_sensitive: true,
        hidden: false,
    };
    put(
        &mut misplaced,
        &d.versions,
        &version(sharing, by(&gp(), NOW)),
    );
    assert_eq!(
        received(&mut d, &mut misplaced),
        Err(Refusal::WrongCompartment)
    );
}

#[test]
fn a_device_takes_the_servers_repair_of_its_header_and_a_pusher_may_not() {
    // A document the device merged unreadable (format raised) before it
    // checked what it received.
    let mut d = doc(Compartment::CareEvents, note("x"));
    d.doc.put(automerge::ROOT, "format", 2).unwrap();
    d.doc.commit();
    let heads = d.doc.get_heads();
    let limits = PushLimits::default();
    let mut repaired = d.doc.fork();
    repaired.put(automerge::ROOT, "format", 1).unwrap();
    repaired
        .put(automerge::ROOT, "compartment", "care-events")
        .unwrap();
    let changes = raw(&mut repaired, &heads);
    assert_eq!(
        check_received(Compartment::CareEvents, &d.doc, &repaired, &limits),
        Ok(0)
    );
    assert_eq!(
        check_received_changes(Compartment::CareEvents, d.doc.document(), &changes, &limits),
        Some(Ok(0))
    );
    // From a pusher, the same is a header change; and a device takes no
    // other value there.
    assert_eq!(judged(&mut d, &changes), Some(Err(Refusal::HeaderChanged)));
    let mut moved = d.doc.fork();
    moved.put(automerge::ROOT, "compartment", "core").unwrap();
    let changes = raw(&mut moved, &heads);
    assert_eq!(
        check_received_changes(Compartment::CareEvents, d.doc.document(), &changes, &limits),
        Some(Err(Refusal::HeaderChanged))
    );
    assert_eq!(
        check_received(Compartment::CareEvents, &d.doc, &moved, &limits),
        Err(Refusal::HeaderChanged)
    );
}

#[test]
fn the_fallback_judges_every_change_not_only_the_end_state() {
    // Two changes in one chunk (or out of order) cannot be judged alone.
    // Together they put a field beside the header and delete it again, or
    // put a forged version and delete it: the end state looks untouched,
    // but every change stays in the history the server would send on.
    let mut d = doc(Compartment::CareEvents, note("x"));
    let heads = d.doc.get_heads();
    let mut after = d.doc.fork();
    after.put(automerge::ROOT, "x", "hidden").unwrap();
    after.commit();
    after.delete(automerge::ROOT, "x").unwrap();
    let changes = raw(&mut after, &heads);
    let one_chunk = vec![changes.concat()];
    assert_eq!(judged(&mut d, &one_chunk), None);
    let limits = PushLimits::default();
    let applied = |d: &mut Doc, changes: &[Vec<u8>]| {
        check_applied(
            Compartment::CareEvents,
            d.doc.document(),
            changes,
            &[nurse()],
            &patient(),
            NOW,
            &limits,
        )
    };
    assert_eq!(applied(&mut d, &one_chunk), Err(Refusal::UnknownField));
    let reversed: Vec<Vec<u8>> = changes.iter().rev().cloned().collect();
    assert_eq!(judged(&mut d, &reversed), None);
    assert_eq!(applied(&mut d, &reversed), Err(Refusal::UnknownField));
    // The end state alone would have passed.
    assert_eq!(
        check_push(
            Compartment::CareEvents,
            &d.doc,
            &after,
            &[nurse()],
            &patient(),
            NOW,
            &limits
        ),
        Ok(0)
    );
    let mut after = d.doc.fork();
    let forged = version(note("forged"), by(&gp(), NOW));
    put(&mut after, &d.versions, &forged);
    after.commit();
    after
        .delete(&d.versions, forged.version_id.to_string())
        .unwrap();
    let chunk = vec![raw(&mut after, &heads).concat()];
    assert_eq!(applied(&mut d, &chunk), Err(Refusal::VersionDeleted));
    // A push of far more operations than versions a push may add is
    // refused before its operations are read.
    let mut many = d.doc.fork();
    for i in 0..600 {
        many.put(&d.versions, format!("k{i}"), "x").unwrap();
    }
    let changes = raw(&mut many, &heads);
    assert_eq!(
        judged(&mut d, &changes),
        Some(Err(Refusal::TooManyVersions))
    );
}
