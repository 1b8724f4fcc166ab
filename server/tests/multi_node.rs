//! Several `scr-server` nodes over one PostgreSQL (issue 19, ADR 0017):
//! each node serves its own devices over real sockets, and what one node
//! (or an admin command beside it) writes reaches the devices of another
//! without any of them asking: the nodes hear each other's writes.
//! Skipped (saying so) with `SCR_SKIP_POSTGRES=1`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use scr_core::access::AccessRequest;
use scr_core::fixtures::test_nhs_number;
use scr_core::record::{Compartment, SharingChoice};

mod common;
use common::device::{Device, visit};
use common::nodes::{TwoNodes, beside, node, second_dir, two_nodes};
use common::site::on_caseload;

/// Waits until `done`, without asking the device to sync: only what the
/// server tells it brings the change. How long it took. At most 20 s: far
/// more than it takes on a loaded machine (a fraction of a second), and
/// far less than the minute after which a node remakes every decision
/// and tells every device anyway (what happens without the notices).
async fn until(what: &str, done: impl Fn() -> bool) -> Duration {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_on_one_node_gets_a_push_through_another_and_an_admin_choice_made_on_it() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Users and the patient, written through node A and beside node B: one
    // directory and one store.
    let TwoNodes {
        a,
        b,
        dir_b,
        state: beside_b,
        nhs,
        ..
    } = two_nodes(tmp.path(), &url, 72, "INC-M1").await;
    assert_eq!(
        a.server_key, b.server_key,
        "one identity: devices pin one key"
    );
    assert_eq!(nhs, test_nhs_number(72));

    // The nurse's tablet on node A, the ambulance tablet on node B (each
    // enrolled and logged in there).
    let mut nurse = Device::nurse(&a, tmp.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse.engine.record_permission(&nhs, true, true).unwrap();
    let mut medic = Device::paramedic(&b, tmp.path()).await;
    medic.online().await;
    medic.settle().await;
    medic.engine.record_permission(&nhs, true, true).unwrap();
    const PUSHED: &str = "seen on scene, through node B";

    // A push through node B reaches the tablet on node A by itself. The
    // second is timed: the first's writes (the paramedic's actor recorded,
    // a login's grant) make every node remake its decisions and tell every
    // device, which would bring a push along without its own notice.
    let reached = |note: &'static str| {
        let nurse = &nurse;
        move || {
            nurse
                .notes(&nhs, AccessRequest::with_permission())
                .iter()
                .any(|n| n.contains(note))
        }
    };
    assert!(!reached(PUSHED)(), "not written yet");
    medic
        .engine
        .add_entry(&nhs, visit("first, through node B"), false, None)
        .unwrap();
    medic.settle().await;
    until("the first push reached A", reached("first, through node B")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    medic
        .engine
        .add_entry(&nhs, visit(PUSHED), false, None)
        .unwrap();
    let pass = medic.settle().await;
    assert_eq!(pass.in_step, pass.documents, "node B took the push");
    let pushed = until(
        "the push through B reached the tablet on A",
        reached(PUSHED),
    )
    .await;
    eprintln!("a push through node B reached the tablet on node A in {pushed:?}");

    // The patient chooses core only, recorded by `scr-server admin
    // set-choice --store` on node B's machine: the tablet on node A forgets
    // what it may no longer hold.
    let (d, operator) = (dir_b.to_str().unwrap(), common::admin::OPERATOR);
    let added = common::admin::run(
        &["admin", "add-operator", "--data-dir", d, "--store", &url]
            .into_iter()
            .chain(["--operator-id", operator, "--name", "Olu Operator"])
            .collect::<Vec<_>>(),
        &format!("{}\n", common::admin::OPERATOR_PASSCODE),
    );
    assert!(added.status.success(), "{}", common::admin::text(&added));
    let chosen = common::admin::run(
        &["admin", "set-choice", "--data-dir", d, "--store", &url]
            .into_iter()
            .chain(["--choice", "core-only", "--operator", operator])
            .collect::<Vec<_>>(),
        &format!("{}\n{}\n", common::admin::OPERATOR_PASSCODE, nhs.digits()),
    );
    assert!(chosen.status.success(), "{}", common::admin::text(&chosen));
    let chose = until("the choice made on B reached the tablet on A", || {
        !nurse.compartments(&nhs).contains(&Compartment::CareEvents)
    })
    .await;
    eprintln!("a choice made on node B's machine reached the tablet on node A in {chose:?}");
    assert!(!nurse.compartments(&nhs).contains(&Compartment::Additional));
    assert!(nurse.compartments(&nhs).contains(&Compartment::Core));

    // Node B's trail and node A's are one archive: the nurse's upload
    // through A and the paramedic's through B are both in it.
    for d in [&nurse, &medic] {
        let pass = d.settle().await;
        assert!(!pass.audit_failed);
    }
    let key = |d: &Device| d.keys.public();
    assert!(beside_b.archive.counts_of(&key(&nurse)).unwrap().0 > 0);
    assert!(a.archive.counts_of(&key(&medic)).unwrap().0 > 0);

    nurse.offline().await;
    medic.offline().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_half_uploaded_to_a_killed_node_is_finished_on_another_each_event_once() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("node-a"), tmp.path().join("node-b"));
    // Set up through a node in this process, then serve from two
    // `scr-server serve --store` processes.
    let setup = node(&dir_a, &url).await;
    let state = beside(&dir_a, &url);
    setup
        .directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    let nhs = on_caseload(&setup, &state.store, 73, SharingChoice::CoreAndAdditional);
    let mut tablet = Device::nurse(&setup, tmp.path()).await;
    setup.shutdown().await;
    second_dir(&dir_a, &dir_b);
    let mut node_a = common::process::serve_with(&dir_a, Some(&url));
    let mut node_b = common::process::serve_with(&dir_b, Some(&url));
    let proxy = common::proxy::Proxy::start(node_a.addr).await;
    tablet.url = proxy.url();
    tablet.online().await;
    tablet.settle().await;
    tablet.engine.record_permission(&nhs, true, true).unwrap();

    // Visits (each audited) every 40 ms; node A archives part of the trail.
    let visits = common::process::write_visits(tablet.engine.clone(), nhs);
    let key = tablet.keys.public();
    common::process::until_archived(&state.archive, &key, 5).await;
    // Killed mid-traffic: no goodbye, no flush.
    node_a.child.kill().unwrap();
    node_a.child.wait().unwrap();
    let archived_by_a = state.archive.counts_of(&key).unwrap().0;
    // Visits go on being written with no node to take them: part of the
    // trail is still to upload (the last upload may have taken all there
    // was at the instant of the kill).
    let began = Instant::now();
    while tablet.engine.audit_queue_len().unwrap() == 0 {
        assert!(began.elapsed() < Duration::from_secs(10), "visits queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = tablet.engine.audit_queue_len().unwrap();
    // The load balancer sends the tablet to node B.
    proxy.point_at(node_b.addr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    common::process::assert_converged_on(
        &tablet,
        (&state.store, &state.archive),
        &nhs,
        visits,
        "node A killed, the rest through node B",
    )
    .await;
    assert!(
        state.archive.counts_of(&key).unwrap().0 > archived_by_a,
        "node B archived the rest"
    );
    eprintln!(
        "{archived_by_a} events archived through node A before it was killed, {queued} queued"
    );
    tablet.offline().await;
    node_b.child.kill().unwrap();
    node_b.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_racing_through_two_nodes_for_one_token_enroll_exactly_one() {
    use scr_core::channel::{self, Hello, Purpose, StaticKeypair};
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let TwoNodes { a, b, .. } = two_nodes(tmp.path(), &url, 74, "INC-M3").await;
    let nodes = [&a, &b];
    for round in 0..4 {
        let token = a
            .directory
            .create_enrollment_token(
                "RX1",
                scr_core::retention::DeviceClass::NurseTablet,
                scr_core::clock::now_ms() + 60_000,
            )
            .unwrap();
        // Six devices (three on each node) speak the protocol at once, each
        // presenting the one token in its hello.
        let keys: Vec<Arc<StaticKeypair>> = (0..6)
            .map(|_| Arc::new(StaticKeypair::generate().unwrap()))
            .collect();
        let start = Arc::new(tokio::sync::Barrier::new(keys.len()));
        let tries: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let node = nodes[i % 2];
                let (addr, server_key) = (node.sync_addr, node.server_key);
                let (k, token, start) = (k.clone(), token.clone(), start.clone());
                tokio::spawn(async move {
                    let ws = common::ws(addr).await;
                    let hello = Hello::new(Purpose::Sync, Some(&token)).encode();
                    start.wait().await;
                    channel::connect(ws, &k, &server_key, &hello).await.is_ok()
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tries {
            admitted += usize::from(t.await.unwrap());
        }
        // Each node asked about every device: one directory.
        let enrolled = |node: &scr_server::serve::RunningServer| {
            keys.iter()
                .filter(|k| node.directory.device(&k.public()).unwrap().is_some())
                .count()
        };
        assert_eq!(enrolled(&a), 1, "round {round}: one device enrolled");
        assert_eq!(enrolled(&b), 1, "round {round}: as node B sees it");
        assert!(
            admitted <= 1,
            "round {round}: {admitted} handshakes admitted"
        );
        eprintln!("round {round}: {admitted} admitted");
    }
    a.shutdown().await;
    b.shutdown().await;
}
