//! The server's sealed log of every document it sent to each device,
//! compared with the device's own trail over real sockets: each patient
//! whose documents went to the nurse's tablet is one the tablet recorded
//! receiving, and no other; the log keeps what was sent after the tablet
//! forgets it. What a modified app could have read is what this log names,
//! whatever its own trail says.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use scr_core::NhsNumber;
use scr_core::record::SharingChoice;

mod common;

use common::device::Device;
use common::site::{Site, on_caseload, site};

/// The patients whose documents the server logged sending to `device`
/// (waiting for the log to name `at_least` of them).
async fn logged(
    srv: &scr_server::serve::RunningServer,
    device: &Device,
    at_least: usize,
) -> BTreeSet<NhsNumber> {
    let key = device.keys.public();
    let mut patients = BTreeSet::new();
    for _ in 0..100 {
        patients = srv
            .archive
            .sent_to(&key)
            .unwrap()
            .into_iter()
            .map(|s| s.patient)
            .collect();
        if patients.len() >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    patients
}

/// The patients the device's trail says it received.
fn received(
    srv: &scr_server::serve::RunningServer,
    device: &Device,
    candidates: &[NhsNumber],
) -> BTreeSet<NhsNumber> {
    candidates
        .iter()
        .filter(|nhs| device.trail(srv, nhs).iter().any(|e| e.action == "receive"))
        .copied()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_of_documents_sent_to_a_tablet_matches_what_its_trail_received() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let a = on_caseload(&srv, &store, 94, SharingChoice::CoreAndAdditional);
    let b = on_caseload(&srv, &store, 95, SharingChoice::CoreOnly);
    // On the paramedic's incident, not the nurse's caseload.
    let elsewhere = common::site::on_incident(&srv, &store, 96, SharingChoice::CoreOnly, "INC-96");
    let everyone = [a, b, elsewhere];
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;

    let sent = logged(&srv, &nurse, 2).await;
    assert_eq!(sent, BTreeSet::from([a, b]), "the server's log");
    assert_eq!(
        received(&srv, &nurse, &everyone),
        sent,
        "the tablet's trail agrees"
    );
    // Each logged document is one of those patients' compartments the
    // tablet holds: core-only withheld additional information.
    let documents = srv.archive.sent_to(&nurse.keys.public()).unwrap();
    for d in &documents {
        assert!(
            nurse.compartments(&d.patient).contains(&d.compartment),
            "{:?} sent but not held",
            d.compartment
        );
    }
    assert!(
        !documents
            .iter()
            .any(|d| d.patient == b && d.compartment == scr_core::record::Compartment::Additional),
        "withheld, so never sent"
    );

    // The caseload changes: the tablet forgets b; the log still says b was sent.
    scr_server::users::unassign(&store, common::NURSE_ID, b).unwrap();
    for _ in 0..50 {
        if !nurse.engine.holds(&b).unwrap() {
            break;
        }
        nurse.sync().await;
    }
    assert!(!nurse.engine.holds(&b).unwrap(), "forgotten");
    assert!(logged(&srv, &nurse, 2).await.contains(&b));
    nurse.offline().await;
    srv.shutdown().await;
}

/// What a shutdown waits for: once `flush` returns, every document noted
/// before it is in the log (the writer batches off the async runtime, so
/// without the flush a stopping server left its last moments unlogged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_returns_only_once_everything_noted_before_it_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::server_store(dir.path());
    let archive = std::sync::Arc::new(
        scr_server::archive::Archive::open(
            &dir.path().join("audit.db"),
            &scr_core::crypto::SecretKey::from_bytes([9; 32]),
        )
        .unwrap(),
    );
    let log = scr_server::sent_log::SentLog::start(store, archive.clone());
    let device = [3u8; 32];
    let patient = scr_core::fixtures::test_nhs_number(81);
    // More notes than the writer takes at once (512): the flush arrives
    // in a later batch than most of them.
    for i in 0..1000 {
        let doc = (
            format!("doc-{i}"),
            Some((patient, scr_core::record::Compartment::Core)),
        );
        log.sent(device, vec![doc]);
    }
    log.flush().await;
    assert_eq!(
        archive.sent_to(&device).unwrap().len(),
        1000,
        "every document noted before the flush is logged"
    );
}
