//! A device the server refuses is told, and loses nothing: a nurse's
//! tablet whose clock runs two hours fast writes a visit note the server
//! refuses (recorded in the future). Her next pass says so ("refused by
//! the server" with the rule), the note stays on the tablet and off the
//! server, and the refusal is flagged once however many passes offer it
//! again. Then the tablet rebuilds the document from what the server
//! took: the refused note kept aside (shown, never sent again), the honest
//! note she wrote after it (which waited on it) merged.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use std::time::Duration;

use scr_core::access::AccessRequest;
use scr_core::clock::ManualClock;
use scr_core::engine::Rebuild;
use scr_core::fixtures::test_nhs_number;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_server::records::load;
use scr_server::users::assign;

mod common;

use common::device::{Device, record, visit};

/// A server holding patient `n` on the nurse's caseload, the nurse a user.
async fn nurse_caseload(
    dir: &tempfile::TempDir,
    n: u32,
) -> (
    scr_server::serve::RunningServer,
    scr_core::Store,
    scr_core::NhsNumber,
) {
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    let store = common::server_store(&server_dir);
    let patient = test_nhs_number(n);
    load(&store, &record(n, SharingChoice::CoreAndAdditional), "test").unwrap();
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
    (srv, store, patient)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_is_shown_on_the_device_and_kept_there() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, store, patient) = nurse_caseload(&dir, 64).await;
    let fast = ManualClock::new(scr_core::clock::now_ms() + 2 * 3_600_000);
    let mut nurse = Device::enroll_with_clock(
        &srv,
        dir.path(),
        "nurse",
        ("RX1", scr_core::retention::DeviceClass::NurseTablet),
        common::nurse_login(),
        Arc::new(fast),
    )
    .await;
    nurse.online().await;
    nurse.settle().await;
    assert!(nurse.engine.holds(&patient).unwrap());
    assert_eq!(nurse.sync().await.refused, 0);

    nurse
        .engine
        .add_entry(
            &patient,
            visit("visit: compression bandage fitted"),
            false,
            None,
        )
        .unwrap();
    let mut told = None;
    for _ in 0..10 {
        let summary = nurse.sync().await;
        if summary.refused > 0 {
            told = Some(summary);
            break;
        }
    }
    let summary = told.expect("the device is told of the refusal");
    assert_eq!(summary.refused, 1);
    assert!(
        summary.in_step < summary.documents,
        "the refused document is not in step"
    );
    let refusals = nurse.sync.as_ref().unwrap().server_refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].compartment, Compartment::CareEvents);
    assert!(
        refusals[0].reason.contains("in the future"),
        "{}",
        refusals[0].reason
    );

    // Kept on the tablet, not on the server, and flagged once however many
    // passes offer it again.
    nurse.sync().await;
    nurse.sync().await;
    let on_tablet = nurse
        .engine
        .export_for_sync(&patient)
        .unwrap()
        .into_iter()
        .find(|e| e.compartment == Compartment::CareEvents)
        .unwrap();
    let on_tablet = automerge::Automerge::load(&on_tablet.bytes).unwrap();
    assert!(
        common::notes_of(&on_tablet)
            .iter()
            .any(|n| n.contains("compression bandage"))
    );
    assert_eq!(srv.metrics.changes_refused.get(), 1);
    let server_doc = store
        .documents_of_record(&patient)
        .unwrap()
        .into_iter()
        .find(|d| d.compartment == Compartment::CareEvents)
        .unwrap();
    let held = srv
        .repo()
        .find(server_doc.doc_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .with_document(|d| common::notes_of(d));
    assert!(held.iter().all(|n| !n.contains("compression bandage")));
    nurse.offline().await;
    srv.shutdown().await;
}

/// The notes of the care events document as the server's samod holds it.
async fn server_notes(
    srv: &scr_server::serve::RunningServer,
    store: &scr_core::Store,
    patient: &scr_core::NhsNumber,
) -> Vec<String> {
    let doc = store
        .documents_of_record(patient)
        .unwrap()
        .into_iter()
        .find(|d| d.compartment == Compartment::CareEvents)
        .unwrap();
    srv.repo()
        .find(doc.doc_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .with_document(|d| common::notes_of(d))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refusal_the_document_is_rebuilt_and_the_honest_note_after_it_merges() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, store, patient) = nurse_caseload(&dir, 65).await;
    // Six minutes fast: beyond the server's five minutes of skew.
    let clock = Arc::new(ManualClock::new(scr_core::clock::now_ms() + 6 * 60_000));
    let mut nurse = Device::enroll_with_clock(
        &srv,
        dir.path(),
        "nurse",
        ("RX1", scr_core::retention::DeviceClass::NurseTablet),
        common::nurse_login(),
        clock.clone(),
    )
    .await;
    nurse.online().await;
    nurse.settle().await;
    nurse
        .engine
        .add_entry(&patient, visit("visit: dated ahead"), false, None)
        .unwrap();
    let mut refused = 0;
    for _ in 0..10 {
        refused = nurse.sync().await.refused;
        if refused > 0 {
            break;
        }
    }
    assert_eq!(refused, 1, "the device is told of the refusal");

    // Her clock put right (within the skew of what it has shown), she
    // writes the next visit: it waits on the refused note.
    clock.set(scr_core::clock::now_ms() + 2 * 60_000);
    nurse
        .engine
        .add_entry(&patient, visit("visit: honest after"), false, None)
        .unwrap();
    nurse.sync().await;
    nurse.sync().await;
    assert!(
        server_notes(&srv, &store, &patient)
            .await
            .iter()
            .all(|n| !n.contains("honest after")),
        "without the rebuild the honest note waits on the refused one"
    );
    assert!(nurse.sync.as_ref().unwrap().holds_refused().await);

    let (sync, rebuilt) = nurse.sync.take().unwrap().rebuild_refused().await.unwrap();
    nurse.sync = Some(sync);
    assert_eq!(
        rebuilt.unwrap(),
        vec![Rebuild {
            nhs_number: patient,
            compartment: Compartment::CareEvents,
            quarantined: 1,
            replayed: 1,
        }]
    );
    let merged = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let notes = server_notes(&srv, &store, &patient).await;
            if notes.iter().any(|n| n.contains("honest after")) {
                return notes;
            }
            nurse.sync().await;
        }
    })
    .await
    .expect("the honest note reached the server");
    assert!(merged.iter().all(|n| !n.contains("dated ahead")));
    let summary = nurse.settle().await;
    assert_eq!(summary.in_step, summary.documents, "in step again");
    assert!(!nurse.sync.as_ref().unwrap().holds_refused().await);
    assert_eq!(srv.metrics.changes_refused.get(), 1, "flagged once");

    // The refused note is kept aside on the tablet and shown as such; the
    // record shows the honest one.
    let kept = nurse.engine.quarantined(&patient).unwrap();
    assert_eq!(kept.len(), 1);
    assert!(matches!(
        &kept[0].version.content,
        scr_core::record::EntryContent::EncounterSummary { note, .. } if note.contains("dated ahead")
    ));
    nurse
        .engine
        .record_permission(&patient, false, true)
        .unwrap();
    let notes = nurse.notes(&patient, AccessRequest::with_permission());
    assert!(notes.iter().any(|n| n.contains("honest after")));
    assert!(notes.iter().all(|n| !n.contains("dated ahead")));
    assert!(
        nurse
            .trail(&srv, &patient)
            .iter()
            .any(|e| e.action == "quarantine")
    );
    nurse.offline().await;
    srv.shutdown().await;
}
