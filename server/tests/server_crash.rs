//! The server killed at random: `scr-server serve` runs as a child process
//! while a nurse's tablet writes visit notes (each audited) and syncs them
//! and its audit trail through a proxy. The server is killed with SIGKILL
//! mid-traffic, again and again, and restarted on the same data directory.
//! After every restart the server starts, and every audit event the tablet
//! had been told was stored is in the archive. At the end the tablet, which
//! was never restarted, converges: every visit it wrote is in the server's
//! store, and its whole trail is archived once, in one unbroken chain.
//!
//! `SCR_SERVER_KILLS=N` sets the number of kills (CI: 4); `SCR_CRASH_SEED`
//! replays a run's kill times.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

mod common;
use common::fault_proxy::Rng;
use common::process::{
    TabletOnServer, archive, assert_converged, serve, tablet_on_server, write_visits,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_random_loses_no_acknowledged_event_and_the_tablet_converges() {
    let kills: u64 = std::env::var("SCR_SERVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("SCR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5e7e_c2a5);
    eprintln!("server crash loop: SCR_SERVER_KILLS={kills} SCR_CRASH_SEED={seed}");

    let TabletOnServer {
        mut tablet,
        nhs,
        server_dir,
        mut server,
        proxy,
        dir: _dir,
    } = tablet_on_server(91).await;

    // Visits written every 40 ms, each version id kept once acknowledged.
    let visits = write_visits(tablet.engine.clone(), nhs);

    let mut rng = Rng::new(seed);
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1_500))).await;
        let released = tablet.audit_released_up_to();
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        proxy.cut();
        // Restarted on the same directory: it must start, and hold every
        // event it had acknowledged.
        server = serve(&server_dir);
        proxy.point_at(server.addr);
        let (archived_to, _) = archive(&server_dir).chain(&tablet.keys.public()).unwrap();
        if let Some(released) = released {
            assert!(
                archived_to >= released,
                "kill {kill}: the tablet released events up to {released}, \
                 the archive holds up to {archived_to} (seed {seed})"
            );
        }
    }
    // The tablet's sync carried on by itself; once it settles, the server
    // holds everything.
    assert_converged(
        &tablet,
        &server_dir,
        &nhs,
        visits,
        &format!("seed {seed}, {kills} kills"),
    )
    .await;
    tablet.offline().await;
    let _ = server.child.kill();
    let _ = server.child.wait();
}
