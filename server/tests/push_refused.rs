//! A device the server refuses is told, and loses nothing: a nurse's
//! tablet whose clock runs two hours fast writes a visit note the server
//! refuses (recorded in the future). Her next pass says so ("refused by
//! the server" with the rule), the note stays on the tablet and off the
//! server, and the refusal is flagged once however many passes offer it
//! again.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use scr_core::clock::ManualClock;
use scr_core::fixtures::test_nhs_number;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_server::records::load;
use scr_server::users::assign;

mod common;

use common::device::{Device, record, visit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_is_shown_on_the_device_and_kept_there() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    let store = common::server_store(&server_dir);
    let patient = test_nhs_number(64);
    load(
        &store,
        &record(64, SharingChoice::CoreAndAdditional),
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
