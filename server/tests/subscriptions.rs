//! The server joins a device's session to a document only when the device
//! asks about it (the vendored samod-core patch, vendor/README.md): two
//! tablets with different patients, both synced, and neither session is
//! subscribed to the other's documents, though the server has all of them
//! in memory. Subscribing every session to every loaded document is what
//! held the server to a few hundred tablets. (A tablet that fetched its
//! documents through the catalogue, ADR 0016, has none joined at all: the
//! server watches them for it instead.)
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

/// The device's permissions document (its one held record's).
fn permissions_doc(device: &Device) -> String {
    device
        .engine
        .held_documents()
        .unwrap()
        .into_iter()
        .find(|(_, d)| d.compartment == scr_core::record::Compartment::Permissions)
        .map(|(_, d)| d.doc_id)
        .expect("a permissions document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_joins_only_the_documents_its_device_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let first = on_caseload(&s.srv, &s.store, 1, SharingChoice::CoreAndAdditional);
    let second = on_incident(
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
    // Each records a permission: a push, so the document goes through
    // samod and its session joins it.
    nurse.engine.record_permission(&first, true, true).unwrap();
    paramedic
        .engine
        .record_permission(&second, true, true)
        .unwrap();
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
    // Each device's held documents are in one session's set at most, and
    // what it pushed is in exactly one...
    for (device, held) in [(&nurse, &nurse_docs), (&paramedic, &paramedic_docs)] {
        for doc in held {
            let sessions = subscribed.iter().filter(|s| s.contains(doc)).count();
            assert!(sessions <= 1, "a held document joined {sessions} sessions");
        }
        let pushed = permissions_doc(device);
        let sessions = subscribed.iter().filter(|s| s.contains(&pushed)).count();
        assert_eq!(sessions, 1, "a pushed document joined {sessions} sessions");
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
