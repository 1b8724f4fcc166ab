//! The device checks what it receives: a server whose store was tampered
//! with behind its back (a GP's visit note rewritten in place) sends the
//! change to a nurse's tablet, which refuses it before it merges: the
//! tablet keeps the note as the GP wrote it and counts the refusal.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use scr_core::fixtures::test_nhs_number;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_core::store::ChunkKey;
use scr_server::records::load;
use scr_server::users::assign;

mod common;

use common::device::{Device, record};

/// The document as stored.
fn stored(store: &scr_core::Store, doc: &str) -> Automerge {
    Automerge::load(&store.document_bytes(doc).unwrap()).unwrap()
}

fn care_events_on(device: &Device, nhs: &scr_core::NhsNumber) -> Vec<String> {
    device.notes(nhs, scr_core::access::AccessRequest::with_permission())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_refuses_a_rewritten_version_from_a_tampered_server() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    let store = common::server_store(&server_dir);
    let patient = test_nhs_number(66);
    let docs = load(
        &store,
        &record(66, SharingChoice::CoreAndAdditional),
        "test",
    )
    .unwrap();
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    assign(
        &store,
        &srv.directory,
        common::NURSE_ID,
        patient,
        RelationshipKind::Caseload,
    )
    .unwrap();
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse
        .engine
        .record_permission(&patient, true, true)
        .unwrap();
    let before = care_events_on(&nurse, &patient);
    assert!(!before.is_empty());

    // Behind the server's back: a GP's note rewritten in place.
    let (_, care) = docs
        .iter()
        .find(|(c, _)| *c == Compartment::CareEvents)
        .unwrap()
        .clone();
    let mut doc = stored(&store, &care);
    let heads = doc.get_heads();
    let versions = doc.get(ROOT, "versions").unwrap().unwrap().1;
    let key = doc.keys(&versions).next().unwrap();
    let old = doc.get(&versions, key.as_str()).unwrap().unwrap().0;
    let rewritten = old.as_str().unwrap().replace("Visit", "TAMPERED");
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(&versions, key.as_str(), rewritten.as_str())
    })
    .unwrap();
    let bad = doc.get_changes(&heads).pop().unwrap();
    let chunk =
        ChunkKey::from_parts([care.as_str(), "incremental", &bad.hash().to_string()]).unwrap();
    assert!(
        store
            .put_chunk_if_registered(&chunk, bad.raw_bytes(), false)
            .unwrap()
    );

    // The running server merges it from the store and sends it on; the
    // tablet refuses it.
    let sync = nurse.sync.as_ref().unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(20), async {
        while sync.received_refused() == 0 {
            sync.sync_now();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the tablet refused the rewritten version");
    let after = care_events_on(&nurse, &patient);
    assert_eq!(after, before, "the tablet keeps the notes as written");
    assert!(after.iter().all(|n| !n.contains("TAMPERED")));
    nurse.offline().await;
    srv.shutdown().await;
}
