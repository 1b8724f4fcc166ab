//! The server is the guard: a nurse tablet's valid grant and a client that
//! speaks the sync protocol directly. Pushes that rewrite or delete a
//! clinical version, forge its author, date it in the future or change the
//! document's header are refused whole: the server's document stays as it
//! was, each is counted and audited (patient, compartment, reason), and an
//! honest push on the same session after them is merged.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use scr_core::record::{Compartment, EntryContent, EntryId, EntryVersion, VersionStatus};

mod common;
use common::device::{Device, visit};
use common::notes_of;
use common::pusher::Pusher;

fn note(text: &str) -> EntryContent {
    EntryContent::EncounterSummary {
        setting: "home visit".into(),
        occurred_at: "2026-12-03".into(),
        note: text.into(),
    }
}

/// Every (key, value) under `versions`, all values of each key.
fn versions(doc: &Automerge) -> Vec<(String, Vec<String>)> {
    let vs = doc.get(ROOT, "versions").unwrap().unwrap().1;
    let mut out: Vec<(String, Vec<String>)> = doc
        .keys(&vs)
        .map(|k| {
            let values = doc
                .get_all(&vs, k.as_str())
                .unwrap()
                .into_iter()
                .map(|(v, _)| v.as_str().unwrap_or("?").to_owned())
                .collect();
            (k, values)
        })
        .collect();
    out.sort();
    out
}

fn put(doc: &mut Automerge, vs: &automerge::ObjId, v: &EntryVersion) {
    let mut tx = doc.transaction();
    tx.put(
        vs,
        v.version_id.to_string(),
        serde_json::to_string(v).unwrap(),
    )
    .unwrap();
    tx.commit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_deleting_forging_and_bricking_are_refused_whole_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::new(dir.path(), 72, vec![note("seen by the GP: no concerns")]).await;
    let c = Compartment::CareEvents;
    let original = versions(&p.server_doc(c).await);
    let (key, values) = original
        .iter()
        .find(|(_, v)| v[0].contains("no concerns"))
        .unwrap()
        .clone();
    let gp_version: EntryVersion = serde_json::from_str(&values[0]).unwrap();
    let now = scr_core::clock::now_ms();

    // 1. The GP's version rewritten in place.
    let mut rewritten = gp_version.clone();
    rewritten.content = note("REWRITTEN: no concerns, discharge");
    p.push(c, |doc, vs| {
        let mut tx = doc.transaction();
        tx.put(
            &vs,
            key.as_str(),
            serde_json::to_string(&rewritten).unwrap(),
        )
        .unwrap();
        tx.commit();
    })
    .await;
    // 2. Deleted outright.
    p.push(c, |doc, vs| {
        let mut tx = doc.transaction();
        tx.delete(&vs, key.as_str()).unwrap();
        tx.commit();
    })
    .await;
    // 3. A new entry under another user's name.
    let mut framed = p.nurse_wrote(now);
    framed.author_id = "555000000999".into();
    let forged = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("x"),
        framed,
    );
    p.push(c, |doc, vs| put(doc, &vs, &forged)).await;
    // 4. Dated a day ahead, to win over whatever comes later.
    let ahead = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("x"),
        p.nurse_wrote(now + 24 * 3_600_000),
    );
    p.push(c, |doc, vs| put(doc, &vs, &ahead)).await;
    // 5. The header's format raised: nobody could read the document again.
    p.push(c, |doc, _| {
        let mut tx = doc.transaction();
        tx.put(ROOT, "format", 2).unwrap();
        tx.commit();
    })
    .await;
    // An honest visit note after them, on the same session: merged.
    let honest = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("visit: dressing changed"),
        p.nurse_wrote(now),
    );
    p.push(c, |doc, vs| put(doc, &vs, &honest)).await;
    let id = honest.version_id.to_string();
    let merged = p
        .until(c, |d| versions(d).iter().any(|(k, _)| *k == id))
        .await;
    assert!(merged, "the honest push after the refused ones is merged");

    let now_held = p.server_doc(c).await;
    let mut expected = original.clone();
    expected.push((id, vec![serde_json::to_string(&honest).unwrap()]));
    expected.sort();
    assert_eq!(
        versions(&now_held),
        expected,
        "nothing of a refused push was merged"
    );
    assert_eq!(
        now_held.get(ROOT, "format").unwrap().unwrap().0.as_i64(),
        Some(1)
    );
    assert_eq!(p.srv.metrics.changes_refused.get(), 5);
    let refusals = p.refusals();
    assert_eq!(refusals.len(), 5, "each refusal audited");
    let details: Vec<String> = refusals.iter().map(|e| e.detail.clone().unwrap()).collect();
    for e in &refusals {
        assert_eq!(e.patient, Some(p.nhs));
    }
    for reason in [
        "an existing version was changed",
        "an existing version was deleted",
        "author, role, organisation or device is not the writer's",
        "recorded in the future",
        "header",
    ] {
        assert!(
            details
                .iter()
                .any(|d| d.contains("care-events") && d.contains(reason)),
            "{reason}: {details:?}"
        );
    }
    // Nothing that names the patient or the note in the audit details.
    assert!(
        details
            .iter()
            .all(|d| !d.contains("REWRITTEN") && !d.contains(&p.nhs.digits()))
    );
    p.srv.shutdown().await;
}

/// A refused change is flagged once however often the device offers it
/// again, and the device is told: its holdings reply names the document,
/// the compartment, the rule and the change, never the patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_is_flagged_once_and_the_device_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::new(dir.path(), 73, vec![note("seen by the GP")]).await;
    let c = Compartment::CareEvents;
    let now = scr_core::clock::now_ms();
    let mut framed = p.nurse_wrote(now);
    framed.author_id = "555000000999".into();
    let forged = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("x"),
        framed,
    );
    let changes = p.push(c, |doc, vs| put(doc, &vs, &forged)).await;
    let heads: Vec<automerge::ChangeHash> = changes
        .iter()
        .map(|b| automerge::Change::try_from(b.as_slice()).unwrap().hash())
        .collect();
    for _ in 0..3 {
        p.push_changes(c, &changes, heads.clone()).await;
    }
    let honest = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("visit"),
        p.nurse_wrote(now),
    );
    p.push(c, |doc, vs| put(doc, &vs, &honest)).await;
    let id = honest.version_id.to_string();
    assert!(
        p.until(c, |d| versions(d).iter().any(|(k, _)| *k == id))
            .await
    );
    assert_eq!(p.srv.metrics.changes_refused.get(), 1, "counted once");
    assert_eq!(p.refusals().len(), 1, "audited once");

    let url = format!("ws://{}/sync", p.srv.sync_addr);
    let reply = scr_core::sync::fetch_holdings(&url, &p.keys, &p.srv.server_key)
        .await
        .unwrap();
    assert_eq!(reply.refused.len(), 1);
    let told = reply.refused[0].clone();

    // A new forged change behind the one refused before is still flagged:
    // blame lands on each change that is wrong, not on the first one.
    let mut again = p.nurse_wrote(now);
    again.role = "R0260".into();
    let forged_again = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("y"),
        again,
    );
    let before = p.server_doc(c).await;
    let mut fork = before.fork();
    let vs = fork.get(ROOT, "versions").unwrap().unwrap().1;
    put(&mut fork, &vs, &forged_again);
    let mut behind = changes.clone();
    behind.extend(
        fork.get_changes(&before.get_heads())
            .into_iter()
            .map(|ch| ch.raw_bytes().to_vec()),
    );
    p.push_changes(c, &behind, fork.get_heads()).await;
    let later = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("visit two"),
        p.nurse_wrote(now),
    );
    p.push(c, |doc, vs| put(doc, &vs, &later)).await;
    let id = later.version_id.to_string();
    assert!(
        p.until(c, |d| versions(d).iter().any(|(k, _)| *k == id))
            .await
    );
    assert_eq!(
        p.srv.metrics.changes_refused.get(),
        2,
        "the new one counted"
    );
    assert_eq!(p.refusals().len(), 2, "and audited");
    let reply = scr_core::sync::fetch_holdings(&url, &p.keys, &p.srv.server_key)
        .await
        .unwrap();
    assert_eq!(reply.refused.len(), 2);
    let told = &told;
    assert_eq!(told.document, p.doc_id(c));
    assert_eq!(told.compartment, c);
    assert!(told.reason.contains("not the writer's"), "{}", told.reason);
    assert_eq!(told.change, heads[0].to_string());
    let json = serde_json::to_string(&reply.refused).unwrap();
    assert!(!json.contains(&p.nhs.digits()) && !json.contains("555000000999"));
    p.srv.shutdown().await;
}

/// Where a document keeps its versions is read once per session, and again
/// after a write from outside (a repair) has been merged: once the server's
/// own repair has moved the versions to a new map, a push into the old one
/// is refused, however recently the session read the old map, and a push
/// into the new one merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_the_versions_map_again_after_a_repair_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::new(dir.path(), 74, vec![note("seen by the GP")]).await;
    let c = Compartment::CareEvents;
    let now = scr_core::clock::now_ms();
    let version = |text: &str, p: &Pusher| {
        EntryVersion::new(
            EntryId::new(),
            vec![],
            VersionStatus::Current,
            note(text),
            p.nurse_wrote(now),
        )
    };
    // An honest push: the session reads the map (and keeps it).
    let first = version("first visit", &p);
    p.push(c, |doc, vs| put(doc, &vs, &first)).await;
    let id = first.version_id.to_string();
    assert!(
        p.until(c, |d| versions(d).iter().any(|(k, _)| *k == id))
            .await
    );
    let old_map = p
        .server_doc(c)
        .await
        .get(ROOT, "versions")
        .unwrap()
        .unwrap()
        .1;

    // Behind the server, as `admin repair-document` writes: a new versions
    // map holding every version, put on the root.
    let doc_id = p.doc_id(c);
    let mut stored = Automerge::load(&p.store.document_bytes(&doc_id).unwrap()).unwrap();
    let heads = stored.get_heads();
    let held: Vec<(String, String)> = stored
        .keys(&old_map)
        .map(|k| {
            let v = stored.get(&old_map, k.as_str()).unwrap().unwrap().0;
            (k, v.into_string().unwrap())
        })
        .collect();
    {
        let mut tx = stored.transaction();
        let new_map = tx
            .put_object(ROOT, "versions", automerge::ObjType::Map)
            .unwrap();
        for (k, v) in &held {
            tx.put(&new_map, k.as_str(), v.as_str()).unwrap();
        }
        tx.commit();
    }
    let moved = stored.get_changes(&heads).pop().unwrap();
    let key = scr_core::store::ChunkKey::from_parts([
        doc_id.as_str(),
        "incremental",
        &moved.hash().to_string(),
    ])
    .unwrap();
    assert!(
        p.store
            .put_chunk_if_registered(&key, moved.raw_bytes(), false)
            .unwrap()
    );
    assert!(
        p.until(c, |d| d.get(ROOT, "versions").unwrap().unwrap().1
            != old_map)
            .await,
        "the running server merged the repair"
    );

    // A push into the old map: refused, whatever the session read before.
    let stale = version("into the old map", &p);
    p.push(c, |doc, _| put(doc, &old_map, &stale)).await;
    // Then an honest one into the new map: merged, after the refusal.
    let fresh = version("into the new map", &p);
    p.push(c, |doc, vs| put(doc, &vs, &fresh)).await;
    let id = fresh.version_id.to_string();
    assert!(
        p.until(c, |d| versions(d).iter().any(|(k, _)| *k == id))
            .await
    );
    let on_server = p.server_doc(c).await;
    assert!(
        on_server
            .get(&old_map, stale.version_id.to_string())
            .unwrap()
            .is_none(),
        "nothing merged into the old map"
    );
    assert_eq!(
        p.srv.metrics.changes_refused.get(),
        1,
        "refused and counted"
    );
    p.srv.shutdown().await;
}

/// A device that pushes under another device's Automerge actor id (learnt
/// from the changes the server forwards it), taking that actor's next
/// sequence number, is refused, counted and audited, and nothing of it
/// merges (without the binding it merges: checked); the other device's
/// next note merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_under_another_devices_actor_is_refused_and_that_device_keeps_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::new(dir.path(), 75, vec![note("seen by the GP")]).await;
    let c = Compartment::CareEvents;
    let mut tablet = Device::nurse(&p.srv, dir.path()).await;
    tablet.online().await;
    tablet.settle().await;
    tablet.engine.record_permission(&p.nhs, true, true).unwrap();
    let before = p.server_doc(c).await.get_heads();
    tablet
        .engine
        .add_entry(&p.nhs, visit("tablet: first visit"), false, None)
        .unwrap();
    tablet.settle().await;
    let has = |text: &'static str| move |d: &Automerge| notes_of(d).iter().any(|n| n == text);
    assert!(p.until(c, has("tablet: first visit")).await);
    let on_server = p.server_doc(c).await;
    let actor = on_server
        .get_changes(&before)
        .last()
        .unwrap()
        .actor_id()
        .clone();

    // The raw client: a version of its own, valid in every other respect,
    // under the tablet's actor.
    let mut forged = on_server.fork();
    forged.set_actor(actor);
    let vs = forged.get(ROOT, "versions").unwrap().unwrap().1;
    let own = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("under another's actor"),
        p.nurse_wrote(scr_core::clock::now_ms()),
    );
    put(&mut forged, &vs, &own);
    let changes: Vec<Vec<u8>> = forged
        .get_changes(&on_server.get_heads())
        .into_iter()
        .map(|ch| ch.raw_bytes().to_vec())
        .collect();
    p.push_changes(c, &changes, forged.get_heads()).await;
    let counted = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while p.srv.metrics.changes_refused.get() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "refused and counted");

    // The same under cover: the change under the tablet's actor deflated
    // (a compressed chunk, not a lone change) and depending on one of the
    // client's own not yet sent, so it would wait unjudged; then that one.
    let on_server = p.server_doc(c).await;
    let mut cover = on_server.fork();
    let vs = cover.get(ROOT, "versions").unwrap().unwrap().1;
    let first = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("the client's own"),
        p.nurse_wrote(scr_core::clock::now_ms()),
    );
    put(&mut cover, &vs, &first);
    let mut own = cover.get_last_local_change().unwrap().clone();
    cover.set_actor(
        on_server
            .get_changes(&before)
            .last()
            .unwrap()
            .actor_id()
            .clone(),
    );
    let hidden = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note("waited under another's actor"),
        p.nurse_wrote(scr_core::clock::now_ms()),
    );
    put(&mut cover, &vs, &hidden);
    let mut wrapped = cover.get_last_local_change().unwrap().clone();
    let deflated = wrapped.bytes().to_vec();
    assert_eq!(deflated[8], 2, "a compressed change chunk");
    p.push_changes(c, &[deflated], cover.get_heads()).await;
    p.push_changes(c, &[own.bytes().to_vec()], vec![own.hash()])
        .await;
    assert!(
        p.until(c, |d| notes_of(d).iter().any(|n| n == "the client's own"))
            .await
    );
    assert_eq!(
        p.srv.metrics.changes_refused.get(),
        2,
        "the covered change refused too"
    );

    // The tablet's own next note still merges.
    tablet
        .engine
        .add_entry(&p.nhs, visit("tablet: second visit"), false, None)
        .unwrap();
    tablet.settle().await;
    assert!(p.until(c, has("tablet: second visit")).await);
    let on_server = notes_of(&p.server_doc(c).await);
    assert!(!on_server.iter().any(|n| n == "under another's actor"));
    assert!(
        !on_server
            .iter()
            .any(|n| n == "waited under another's actor")
    );
    assert_eq!(p.refusals().len(), 2, "each audited once");
    tablet.offline().await;
    p.srv.shutdown().await;
}

/// Changes waiting for a dependency are held by samod without bound: each
/// device leaves some waiting in a document once. A change pushed without
/// the one it depends on waits; while it does, the same device's next push
/// whose changes would wait too is dropped (not refused: it broke no
/// rule); the push that brings the missing change merges both, and
/// nothing is left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_waiting_for_a_dependency_are_bounded_to_one_push() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::new(dir.path(), 76, vec![note("seen by the GP")]).await;
    let c = Compartment::CareEvents;
    let now = scr_core::clock::now_ms();
    let mut device = p.server_doc(c).await.fork();
    let vs = device.get(ROOT, "versions").unwrap().unwrap().1;
    let mut chain: Vec<(Vec<u8>, automerge::ChangeHash)> = Vec::new();
    for text in ["one", "two", "three", "four"] {
        let v = EntryVersion::new(
            EntryId::new(),
            vec![],
            VersionStatus::Current,
            note(text),
            p.nurse_wrote(now),
        );
        put(&mut device, &vs, &v);
        let change = device.get_last_local_change().unwrap();
        chain.push((change.raw_bytes().to_vec(), change.hash()));
    }
    let waiting = |d: &Automerge| d.get_missing_deps(&[]);

    // The second without the first: it waits.
    p.push_changes(c, &[chain[1].0.clone()], vec![chain[1].1])
        .await;
    assert!(p.until(c, |d| waiting(d) == vec![chain[0].1]).await);
    // The fourth without the third: dropped while the second waits.
    p.push_changes(c, &[chain[3].0.clone()], vec![chain[3].1])
        .await;
    // The first: it and the second merge.
    p.push_changes(c, &[chain[0].0.clone()], vec![chain[0].1])
        .await;
    assert!(p.until(c, |d| notes_of(d).iter().any(|n| n == "two")).await);
    let held = p.server_doc(c).await;
    let notes = notes_of(&held);
    assert!(notes.iter().any(|n| n == "one"));
    assert!(!notes.iter().any(|n| n == "four"));
    assert!(waiting(&held).is_empty(), "nothing left waiting");
    assert_eq!(
        p.srv.metrics.changes_refused.get(),
        0,
        "dropped, not refused"
    );
    p.srv.shutdown().await;
}
