//! The server joins a device's session to a document only when the device
//! asks about it (the vendored samod-core patch, vendor/README.md): two
//! tablets with different patients, both synced, and neither session is
//! subscribed to the other's documents, though the server has all of them
//! in memory. Subscribing every session to every loaded document is what
//! held the server to a few hundred tablets.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use scr_core::record::SharingChoice;

mod common;

use common::device::Device;
use common::site::{on_caseload, on_incident, site};

fn doc_ids(device: &Device) -> HashSet<String> {
    device
        .engine
        .held_documents()
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.doc_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_joins_only_the_documents_its_device_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    on_caseload(&s.srv, &s.store, 1, SharingChoice::CoreAndAdditional);
    on_incident(
        &s.srv,
        &s.store,
        2,
        SharingChoice::CoreAndAdditional,
        "INC-1",
    );
    let mut nurse = Device::nurse(&s.srv, dir.path()).await;
    let mut paramedic = Device::paramedic(&s.srv, dir.path()).await;
    nurse.online().await;
    paramedic.online().await;
    nurse.settle().await;
    paramedic.settle().await;

    let nurse_docs = doc_ids(&nurse);
    let paramedic_docs = doc_ids(&paramedic);
    assert!(!nurse_docs.is_empty() && !paramedic_docs.is_empty());
    assert!(nurse_docs.is_disjoint(&paramedic_docs));

    let (connections, _) = s.srv.repo().connected_peers();
    let subscribed: Vec<HashSet<String>> = connections
        .iter()
        .map(|c| c.docs.keys().map(|d| d.to_string()).collect())
        .collect();
    // Each device's held documents are in exactly one session's set...
    for held in [&nurse_docs, &paramedic_docs] {
        let sessions = subscribed.iter().filter(|s| held.is_subset(s)).count();
        assert_eq!(sessions, 1, "held documents joined {sessions} sessions");
    }
    // ...and no session holds a document of the other device's patient.
    for docs in &subscribed {
        assert!(
            docs.is_disjoint(&nurse_docs) || docs.is_disjoint(&paramedic_docs),
            "a session was subscribed to both tablets' patients"
        );
    }
    nurse.offline().await;
    paramedic.offline().await;
    s.srv.shutdown().await;
}
