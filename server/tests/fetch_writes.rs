//! Fetching writes nothing: a fresh nurse tablet brings her whole caseload
//! in step, and the server's document store takes not one put or delete
//! (`scr_storage_writes_total`, read over `/metrics`). Before the vendored
//! samod-core change 4 (vendor/README.md), every document the server loaded
//! to send was written back as a snapshot and its chunks deleted.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::record::SharingChoice;

mod common;

use common::device::Device;
use common::site::{on_caseload, site};

async fn storage_writes(srv: &scr_server::serve::RunningServer) -> u64 {
    let text = common::http_get(srv.health_addr, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("scr_storage_writes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("scr_storage_writes_total in /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_tablet_fetching_its_caseload_makes_the_server_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    for n in 1..=4 {
        on_caseload(&s.srv, &s.store, n, SharingChoice::CoreAndAdditional);
    }
    let mut nurse = Device::nurse(&s.srv, dir.path()).await;
    // What the login wrote (the device's holdings notice) settles first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = storage_writes(&s.srv).await;

    nurse.online().await;
    let pass = nurse.settle().await;
    assert!(
        pass.documents >= 16 && pass.in_step == pass.documents,
        "the caseload's documents all fetched: {pass:?}"
    );
    let after = storage_writes(&s.srv).await;
    assert_eq!(
        after - before,
        0,
        "the store was written while {} documents were only read",
        pass.documents
    );
}

/// Text that compresses poorly (a document's columns are deflated).
fn noise_text(seed: u32, len: usize) -> String {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A caseload bigger than one fetch answer (512 KiB) comes in several
/// answers, each read across the cores while the next is asked for, and
/// arrives whole: every document fetched, none left to samod's sync, and
/// every patient's note readable on the tablet as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caseload_larger_than_one_answer_arrives_whole_in_several() {
    use scr_core::access::AccessRequest;
    use scr_server::records::{FileEntry, RecordFile, load};

    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let mut written = Vec::new();
    for n in 1..=12 {
        let note = noise_text(n, 100_000);
        let file = RecordFile {
            nhs_number: scr_core::fixtures::test_nhs_number(n),
            sharing: SharingChoice::CoreAndAdditional,
            include_sensitive: false,
            entries: vec![FileEntry {
                sensitive: false,
                content: common::device::visit(&note),
            }],
        };
        load(&s.store, &file, "test").unwrap();
        let nhs = on_caseload(&s.srv, &s.store, n, SharingChoice::CoreAndAdditional);
        written.push((nhs, note));
    }
    let mut nurse = Device::nurse(&s.srv, dir.path()).await;
    nurse.online().await;
    let pass = nurse.settle().await;
    assert!(
        pass.documents >= 12 && pass.fetched == pass.documents && pass.synced == 0,
        "every document fetched, none through samod: {pass:?}"
    );
    for (nhs, note) in &written {
        // The patient gives the nurse permission to view.
        nurse.engine.record_permission(nhs, true, true).unwrap();
        let notes = nurse.notes(nhs, AccessRequest::with_permission());
        assert_eq!(notes.len(), 1, "one note per patient on the tablet");
        assert!(notes[0] == *note, "the note arrived as written");
    }
}
