//! A sync session outlives a dropped connection (ADR 0005): a tablet that
//! loses signal comes back on the same session, so every document's
//! Automerge sync state carries over and only what changed crosses the
//! network; a server that no longer knows the session (restarted) makes
//! the tablet open a fresh one, and nothing is lost either way.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use scr_core::access::AccessRequest;
use scr_core::record::SharingChoice;
use scr_core::sync::SyncState;
use scr_server::serve::RunningServer;

mod common;

use common::site::{Site, on_caseload, on_incident, site};

use common::device::{Device, visit};
use common::proxy::Proxy;

const PATIENTS: std::ops::RangeInclusive<u32> = 71..=78;

fn bytes(srv: &RunningServer) -> u64 {
    srv.metrics.traffic.received.load(Ordering::Relaxed)
        + srv.metrics.traffic.sent.load(Ordering::Relaxed)
}

async fn wait_for_state(device: &Device, what: &str, want: impl Fn(&SyncState) -> bool) {
    let mut state = device.sync.as_ref().unwrap().watch();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while !want(&state.borrow_and_update()) {
            state.changed().await.unwrap();
        }
    })
    .await;
    assert!(seen.is_ok(), "sync state never showed {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_its_session_and_a_restarted_server_gets_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let Site {
        srv,
        store,
        server_dir,
    } = site(dir.path()).await;
    for n in PATIENTS {
        on_caseload(&srv, &store, n, SharingChoice::CoreAndAdditional);
    }
    let patient = on_incident(&srv, &store, 71, SharingChoice::CoreAndAdditional, "INC-9");
    let proxy = Proxy::start(srv.sync_addr).await;
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    let mut paramedic = Device::paramedic(&srv, dir.path()).await;
    nurse.url = proxy.url();
    nurse.online().await;
    let first = nurse.sync().await;
    assert!(first.documents >= 3 * PATIENTS.count());
    assert_eq!(first.in_step, first.documents);
    let sessions = srv.metrics.sync_sessions.get();

    // The signal goes, and stays gone for a while: the app shows it is
    // reconnecting, and the nurse writes a visit summary meanwhile.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    proxy.point_at(dead_addr);
    proxy.cut();
    wait_for_state(
        &nurse,
        "reconnecting",
        |s| matches!(s, SyncState::Connecting { attempt, .. } if *attempt >= 1),
    )
    .await;
    nurse
        .engine
        .add_entry(
            &patient,
            visit("nurse: written with no signal"),
            false,
            None,
        )
        .unwrap();

    // The signal is back: the same session goes on.
    let before = bytes(&srv);
    proxy.point_at(srv.sync_addr);
    let resumed = nurse.sync().await;
    let resumed_bytes = bytes(&srv) - before;
    assert_eq!(resumed.in_step, resumed.documents);
    assert!(srv.metrics.sessions_resumed.get() >= 1);
    assert_eq!(
        srv.metrics.sync_sessions.get(),
        sessions,
        "no new session: samod's sync states carried over"
    );
    paramedic.online().await;
    paramedic.settle().await;
    assert!(
        paramedic
            .notes(&patient, AccessRequest::emergency())
            .contains(&"nurse: written with no signal".to_owned()),
        "what was written during the outage reached the server"
    );
    paramedic.offline().await;

    // Only the record written to went through samod on the resumed pass.
    assert!(
        resumed.synced > 0 && resumed.synced < resumed.documents,
        "{resumed:?}"
    );
    // For comparison: the same device on a fresh session with nothing new
    // at all. samod would rebuild its sync state for every document; the
    // catalogue (ADR 0016) finds them all in step in one exchange.
    nurse.offline().await;
    let before = bytes(&srv);
    nurse.online().await;
    let fresh = nurse.sync().await;
    let fresh_bytes = bytes(&srv) - before;
    assert_eq!(fresh.in_step, fresh.documents);
    assert_eq!(fresh.synced, 0, "no document ran samod's sync: {fresh:?}");
    assert!(
        fresh_bytes < 4 * 1024,
        "a fresh session with nothing new took {fresh_bytes} bytes (resuming with one new visit: {resumed_bytes})"
    );

    // The server restarts while the tablet is away: it no longer knows the
    // session, so the tablet opens a fresh one, and nothing is lost.
    proxy.cut();
    srv.shutdown().await;
    let srv = common::server(&server_dir).await;
    proxy.point_at(srv.sync_addr);
    nurse
        .engine
        .add_entry(
            &patient,
            visit("nurse: written across a restart"),
            false,
            None,
        )
        .unwrap();
    // (A pass may start before the tablet notices the server went; the
    // next one, on the fresh session, completes.)
    let mut after = nurse.sync().await;
    for _ in 0..2 {
        if after.in_step == after.documents {
            break;
        }
        after = nurse.sync().await;
    }
    assert_eq!(after.in_step, after.documents);
    assert_eq!(srv.metrics.sessions_resumed.get(), 0);
    assert_eq!(srv.metrics.sync_sessions.get(), 1);
    paramedic.url = format!("ws://{}/sync", srv.sync_addr);
    paramedic.online().await;
    paramedic.settle().await;
    assert!(
        paramedic
            .notes(&patient, AccessRequest::emergency())
            .contains(&"nurse: written across a restart".to_owned())
    );
    paramedic.offline().await;
    nurse.offline().await;
    srv.shutdown().await;
}
