//! Several nodes over one PostgreSQL (ADR 0017): a write another node must
//! see sends a notice in its own transaction, and every node listens. A
//! notice missed while a node's listening connection was down is caught up
//! from the change counters when it comes back: nothing is lost.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::retention::DeviceClass;
use scr_server::directory::Directory;
use scr_server::pg::{Pg, PgConfig, listen};

mod common;

fn moved_within(rx: &mut tokio::sync::watch::Receiver<u64>, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if rx.has_changed().unwrap_or(false) {
            rx.mark_unchanged();
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn enrolled_and_revoked(directory: &Directory, key: u8) {
    let token = directory
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, i64::MAX)
        .unwrap();
    directory.enroll(&[key; 32], &token, 0, |_| true).unwrap();
    directory.revoke(&[key; 32]).unwrap();
}

#[test]
fn another_nodes_revocation_is_heard_within_a_second() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let node_a = common::postgres::connect(&url);
    let changes = listen::listen(&node_a, &PgConfig::new(&url));
    let mut heard = changes.watch();
    // Listening before the write (the listener connects in the background).
    std::thread::sleep(Duration::from_millis(500));
    heard.mark_unchanged();
    let node_b = Directory::on_postgres(common::postgres::connect(&url));
    enrolled_and_revoked(&node_b, 1);
    assert!(
        moved_within(&mut heard, Duration::from_secs(1)),
        "node A never heard node B's revocation"
    );
    assert!(changes.notices() >= 1);
}

#[test]
fn a_notice_missed_while_listening_was_cut_is_caught_up() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    // Node A connects as a role of its own, which the test can shut out.
    let mut raw = [0u8; 4];
    getrandom::fill(&mut raw).unwrap();
    let role: String = std::iter::once("node_a_".to_owned())
        .chain(raw.iter().map(|b| format!("{b:02x}")))
        .collect();
    common::postgres::admin(&url, &format!("CREATE ROLE {role} LOGIN SUPERUSER"));
    let url_a = url.replacen("postgres@", &format!("{role}@"), 1);
    let node_a: Pg = common::postgres::connect(&url_a);
    let changes = listen::listen(&node_a, &PgConfig::new(&url_a));
    let mut heard = changes.watch();
    std::thread::sleep(Duration::from_millis(500));
    heard.mark_unchanged();

    // Its connections cut, and it cannot come back yet.
    common::postgres::admin(
        &url,
        &format!(
            "ALTER ROLE {role} NOLOGIN;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';"
        ),
    );
    let reconnects = changes.reconnects();
    let node_b = Directory::on_postgres(common::postgres::connect(&url));
    enrolled_and_revoked(&node_b, 2);
    // Its notice went out while node A could not hear it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while changes.reconnects() < reconnects + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never retried"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let notices = changes.notices();
    heard.mark_unchanged();

    common::postgres::admin(&url, &format!("ALTER ROLE {role} LOGIN"));
    assert!(
        moved_within(&mut heard, Duration::from_secs(10)),
        "node A came back and never learned of the revocation it missed"
    );
    assert_eq!(changes.notices(), notices, "no notice: it was caught up");
    assert!(changes.caught_up() >= 1);
}
