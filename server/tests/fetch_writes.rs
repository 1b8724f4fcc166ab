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
