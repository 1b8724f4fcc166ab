//! PostgreSQL restarted under two nodes mid-traffic (issue 19): a tablet
//! keeps writing visits through node A while the database goes away and
//! comes back. Nothing the tablet saw acknowledged is lost, its trail is
//! archived once, unbroken, and node B (whose listening connection
//! dropped with the database) still brings a later visit to the tablet it
//! serves. Its own test binary: the restart would disturb other tests
//! sharing the cluster. Skipped (saying so) with `SCR_SKIP_POSTGRES=1`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use scr_core::access::AccessRequest;

mod common;
use common::device::{Device, visit};
use common::nodes::{TwoNodes, two_nodes};

/// Restarts the test cluster (`scripts/with-postgres` says where it is),
/// as its owner: fast shutdown (every connection dropped), then start.
fn restart_postgres() {
    let bin = std::env::var("SCR_TEST_POSTGRES_BIN").unwrap();
    let data = std::env::var("SCR_TEST_POSTGRES_DATA").unwrap();
    let pg_ctl = format!("{bin}/pg_ctl");
    let args = ["-D", data.as_str(), "-m", "fast", "-w", "restart"];
    let status = if is_root() {
        std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", pg_ctl.as_str()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
    } else {
        std::process::Command::new(&pg_ctl)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
    };
    assert!(status.unwrap().success(), "PostgreSQL restarted");
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_mid_traffic_loses_nothing_and_nodes_catch_up() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let TwoNodes {
        a, b, state, nhs, ..
    } = two_nodes(tmp.path(), &url, 74, "INC-R1").await;
    let mut nurse = Device::nurse(&a, tmp.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse.engine.record_permission(&nhs, true, true).unwrap();
    let mut medic = Device::paramedic(&b, tmp.path()).await;
    medic.online().await;
    medic.settle().await;
    medic.engine.record_permission(&nhs, true, true).unwrap();

    let visits = common::process::write_visits(nurse.engine.clone(), nhs);
    let key = nurse.keys.public();
    common::process::until_archived(&state.archive, &key, 5).await;
    tokio::task::spawn_blocking(restart_postgres).await.unwrap();
    // Visits go on being written while the nodes reconnect.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    common::process::assert_converged_on(
        &nurse,
        (&state.store, &state.archive),
        &nhs,
        visits,
        "PostgreSQL restarted",
    )
    .await;

    // Node B's listener came back: a visit written through node A after the
    // restart reaches the ambulance tablet on node B without it asking.
    const AFTER: &str = "written after the restart";
    nurse
        .engine
        .add_entry(&nhs, visit(AFTER), false, None)
        .unwrap();
    nurse.settle().await;
    let began = Instant::now();
    while !medic
        .notes(&nhs, AccessRequest::with_permission())
        .iter()
        .any(|n| n.contains(AFTER))
    {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the visit reached node B's tablet"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "after the restart, a visit through node A reached node B's tablet in {:?}",
        began.elapsed()
    );
    nurse.offline().await;
    medic.offline().await;
    a.shutdown().await;
    b.shutdown().await;
}
