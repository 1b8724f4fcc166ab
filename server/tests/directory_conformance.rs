//! The directory's storage interface (ADR 0017), one suite run against both
//! stores: the embedded SQLite file and PostgreSQL (a fresh database on the
//! cluster `scripts/with-postgres` starts). Each store must keep the same
//! promises: a token enrolls one device once, across nodes too; a revoked
//! device never comes back; failed logins are counted atomically; what
//! another node must see moves the change marker.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};

use scr_core::retention::DeviceClass;
use scr_server::directory::{Directory, DirectoryError};
use scr_server::users::NewUser;

mod common;

/// Two handles on one store, as two nodes (or a node and an admin command)
/// hold them. `None`: PostgreSQL skipped.
type Nodes = (Directory, Directory, tempfile::TempDir);

fn sqlite() -> Option<Nodes> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.db");
    Some((
        Directory::open(&path).unwrap(),
        Directory::open(&path).unwrap(),
        dir,
    ))
}

fn postgres() -> Option<Nodes> {
    let url = common::postgres::fresh_database()?;
    Some((
        Directory::on_postgres(common::postgres::connect(&url)),
        Directory::on_postgres(common::postgres::connect(&url)),
        tempfile::tempdir().unwrap(),
    ))
}

/// Each promise, as a function of the two handles; run for both stores.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { if let Some(n) = super::sqlite() { super::$name(n) } })*
        }
        mod on_postgres {
            $(#[test] fn $name() { if let Some(n) = super::postgres() { super::$name(n) } })*
        }
    };
}

conformance!(
    a_token_enrolls_one_device_once,
    two_nodes_racing_for_one_token_enroll_exactly_one,
    an_unaudited_enrollment_is_not_made_and_the_token_survives,
    a_revoked_device_never_comes_back,
    users_are_kept_revoked_and_read_back,
    failed_logins_are_capped_per_user_and_device,
    operators_are_locked_after_failures_and_unlocked_when_added_again,
    another_nodes_enrollment_moves_the_change_marker,
);

const NOW: i64 = 1_000_000;

fn nurse(user_id: &str) -> NewUser {
    NewUser {
        user_id: user_id.into(),
        display_name: "Jo Nurse".into(),
        organisation: "RX1".into(),
        job_role: "R0050".into(),
        job_role_name: "Community Nurse".into(),
        activities: vec!["B0264".into(), "B0370".into()],
        privacy_officer: false,
        card_serial: "CARD-0001".into(),
    }
}

fn a_token_enrolls_one_device_once((a, b, _): Nodes) {
    let token = a
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, NOW + 60_000)
        .unwrap();
    let device = b.enroll(&[1; 32], &token, NOW, |_| true).unwrap();
    assert_eq!(
        (device.organisation.as_str(), device.device_class),
        ("RX1", DeviceClass::NurseTablet)
    );
    assert!(a.is_active(&[1; 32]), "seen by the other handle");
    assert_eq!(
        a.token_used_by(&[1; 32]).unwrap(),
        Some(*blake3::hash(token.as_bytes()).as_bytes())
    );
    assert!(matches!(
        a.enroll(&[2; 32], &token, NOW, |_| true),
        Err(DirectoryError::BadToken)
    ));
    let late = a
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, NOW + 10)
        .unwrap();
    assert!(matches!(
        b.enroll(&[3; 32], &late, NOW + 10, |_| true),
        Err(DirectoryError::BadToken)
    ));
    assert!(matches!(
        a.enroll(&[4; 32], "made-up", NOW, |_| true),
        Err(DirectoryError::BadToken)
    ));
    assert!(matches!(
        a.create_enrollment_token("not an ods code", DeviceClass::NurseTablet, NOW),
        Err(DirectoryError::BadOrganisation)
    ));
    assert_eq!(a.active_device_keys().unwrap(), vec![[1; 32]]);
}

fn two_nodes_racing_for_one_token_enroll_exactly_one((a, b, _): Nodes) {
    for round in 0..8u8 {
        let token = a
            .create_enrollment_token("RYA", DeviceClass::AmbulanceTablet, NOW + 60_000)
            .unwrap();
        let start = Arc::new(Barrier::new(2));
        let won = std::thread::scope(|s| {
            let racers: Vec<_> = [(&a, 100u8), (&b, 200u8)]
                .into_iter()
                .map(|(node, k)| {
                    let (start, token) = (start.clone(), token.clone());
                    s.spawn(move || {
                        start.wait();
                        node.enroll(&[k.wrapping_add(round); 32], &token, NOW, |_| true)
                            .is_ok()
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap_or(false))
                .filter(|won| *won)
                .count()
        });
        assert_eq!(
            won, 1,
            "round {round}: {won} devices enrolled with one token"
        );
    }
    assert_eq!(a.active_device_count().unwrap(), 8);
}

fn an_unaudited_enrollment_is_not_made_and_the_token_survives((a, b, _): Nodes) {
    let token = a
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, NOW + 60_000)
        .unwrap();
    assert!(matches!(
        a.enroll(&[7; 32], &token, NOW, |_| false),
        Err(DirectoryError::NotAudited)
    ));
    assert!(!b.is_active(&[7; 32]), "not enrolled");
    let mut audited = None;
    b.enroll(&[7; 32], &token, NOW, |d| {
        audited = Some(d.organisation.clone());
        true
    })
    .unwrap();
    assert_eq!(audited.as_deref(), Some("RX1"));
    assert!(a.is_active(&[7; 32]));
}

fn a_revoked_device_never_comes_back((a, b, _): Nodes) {
    let token = a
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, NOW + 60_000)
        .unwrap();
    a.enroll(&[9; 32], &token, NOW, |_| true).unwrap();
    assert!(b.revoke(&[9; 32]).unwrap());
    assert!(!a.is_active(&[9; 32]));
    let first = a.device_revoked_at(&[9; 32]).unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(a.revoke(&[9; 32]).unwrap());
    assert_eq!(
        b.device_revoked_at(&[9; 32]).unwrap(),
        Some(first),
        "the first revocation time is kept"
    );
    assert!(!a.revoke(&[10; 32]).unwrap(), "unknown");
    let again = a
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, NOW + 60_000)
        .unwrap();
    assert!(matches!(
        b.enroll(&[9; 32], &again, NOW, |_| true),
        Err(DirectoryError::BadToken)
    ));
    assert_eq!(a.active_device_count().unwrap(), 0);
}

fn users_are_kept_revoked_and_read_back((a, b, _): Nodes) {
    a.add_user(&nurse("555000000102"), "jo-2468").unwrap();
    assert!(!b.user_revoked("555000000102"));
    assert!(!b.user_revoked("555000000999"), "unknown is not revoked");
    assert!(b.revoke_user("555000000102").unwrap());
    assert!(!a.revoke_user("555000000102").unwrap(), "already revoked");
    assert!(a.user_revoked("555000000102"));
    let at = b
        .users_revoked_at(&["555000000102", "555000000999"])
        .unwrap();
    assert_eq!(at.len(), 1);
    assert!(at["555000000102"] > 0);
    // The user as stored: what a login and the access log read.
    assert_eq!(
        scr_server::users::display_name(&b, "555000000102").as_deref(),
        Some("Jo Nurse")
    );
}

fn failed_logins_are_capped_per_user_and_device((a, b, _): Nodes) {
    a.add_user(&nurse("555000000103"), "jo-2468").unwrap();
    // A privacy officer's own check at the command line counts as one
    // device: five wrong passcodes lock it, and the right one then fails.
    for _ in 0..scr_server::login::MAX_FAILED_LOGINS {
        assert!(a.authenticate_staff("555000000103", "wrong").is_err());
    }
    assert!(
        b.authenticate_staff("555000000103", "jo-2468").is_err(),
        "locked on the other handle too"
    );
    // Adding the user again lifts it.
    b.add_user(&nurse("555000000103"), "jo-2468").unwrap();
    a.authenticate_staff("555000000103", "jo-2468").unwrap();
}

fn operators_are_locked_after_failures_and_unlocked_when_added_again((a, b, _): Nodes) {
    assert_eq!(a.operator_count().unwrap(), 0);
    a.add_operator("ops.kim", "Kim Ops", "kim-passcode-1")
        .unwrap();
    assert_eq!(b.operator_count().unwrap(), 1);
    b.authenticate_operator("ops.kim", "kim-passcode-1")
        .unwrap();
    for _ in 0..scr_server::login::MAX_FAILED_LOGINS {
        assert!(
            a.authenticate_operator("ops.kim", "wrong-passcode")
                .is_err()
        );
    }
    assert!(
        b.authenticate_operator("ops.kim", "kim-passcode-1")
            .is_err()
    );
    assert!(a.authenticate_operator("nobody", "kim-passcode-1").is_err());
    b.add_operator("ops.kim", "Kim Ops", "kim-passcode-1")
        .unwrap();
    a.authenticate_operator("ops.kim", "kim-passcode-1")
        .unwrap();
}

fn another_nodes_enrollment_moves_the_change_marker((a, b, _): Nodes) {
    let before = a.data_version().unwrap();
    let token = b
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, NOW + 60_000)
        .unwrap();
    b.enroll(&[11; 32], &token, NOW, |_| true).unwrap();
    assert_ne!(a.data_version().unwrap(), before, "an enrollment elsewhere");
    let before = a.data_version().unwrap();
    b.revoke(&[11; 32]).unwrap();
    assert_ne!(a.data_version().unwrap(), before, "a revocation elsewhere");
}
