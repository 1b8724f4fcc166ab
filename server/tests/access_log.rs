//! "Who has looked at my record", over real sockets: a paramedic opens a
//! patient's record in an emergency with no signal; within one sync of the
//! paramedic reconnecting, the patient's phone shows who it was, when, in
//! which role and organisation and on what basis, together with what the
//! phone itself has not uploaded yet; nobody else may read that log.
#![allow(clippy::unwrap_used)]

use scr_core::access::AccessRequest;
use scr_core::fixtures::test_nhs_number;
use scr_core::protocol::LoginRequest;
use scr_core::record::SharingChoice;
use scr_core::sync::{AccessLogError, fetch_access_log};

mod common;

use common::site::{Site, on_incident, site};

use common::device::{Device, PARAMEDIC_ID};

use scr_core::audit::{AuditDraft, AuditEvent, GENESIS_HASH, Outcome};
use scr_core::channel::{StaticKeypair, hex_key};
use scr_core::protocol::{AUDIT_UPLOAD_FORMAT, AuditUpload, Backlog};
use scr_core::retention::DeviceClass;

use common::officer;

fn login_of(user_id: &str, card: &str, passcode: &str) -> LoginRequest {
    LoginRequest {
        user_id: user_id.into(),
        card_serial: card.into(),
        passcode: passcode.into(),
    }
}

/// RX1's privacy officer, added, logged in on a tablet of RX1.
async fn rx1_officer_tablet(srv: &scr_server::serve::RunningServer) -> StaticKeypair {
    srv.directory
        .add_user(&officer("555000000903", "RX1"), "pat-2468")
        .unwrap();
    common::raw_device(
        srv,
        "RX1",
        DeviceClass::NurseTablet,
        Some(&login_of("555000000903", "CARD-555000000903", "pat-2468")),
    )
    .await
}

/// A device's true view of `nhs` by its logged-in user, uploaded: what its
/// grant vouches for.
async fn upload_view(
    srv: &scr_server::serve::RunningServer,
    keys: &StaticKeypair,
    actor: (&str, &str, &str),
    nhs: scr_core::NhsNumber,
) -> AuditEvent {
    let draft = AuditDraft {
        user: actor.0.into(),
        role: actor.1.into(),
        organisation: actor.2.into(),
        patient: Some(nhs),
        action: "view".into(),
        compartments: Vec::new(),
        entries: Vec::new(),
        outcome: Outcome::Permit,
        basis: Some("permission".into()),
        alerts: Vec::new(),
        detail: None,
    };
    let event = AuditEvent::from_draft(
        draft,
        &hex_key(&keys.public()),
        1,
        GENESIS_HASH.into(),
        scr_core::clock::now_ms(),
    );
    let upload = AuditUpload {
        format: AUDIT_UPLOAD_FORMAT,
        events: vec![event.clone()],
        backlog: Backlog::default(),
    };
    let url = format!("ws://{}/sync", srv.sync_addr);
    let ack = scr_core::sync::send_audit_batch(&url, keys, &srv.server_key, &upload)
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.flagged), (1, 0));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_sees_the_paramedics_emergency_view_after_one_sync_and_nobody_else_may_look() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = on_incident(&srv, &store, 84, SharingChoice::CoreAndAdditional, "INC-12");

    // A wrong passcode on the patient's phone is refused like any other.
    let mut phone = Device::patient(&srv, &store, dir.path(), patient, "tulip-2468").await;
    let refused = scr_core::sync::login(
        common::ws(srv.sync_addr).await,
        &phone.keys,
        &srv.server_key,
        &LoginRequest {
            user_id: "patient".into(),
            card_serial: String::new(),
            passcode: "wrong-passcode".into(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        refused,
        scr_core::protocol::LoginResponse::Refused { .. }
    ));
    phone.online().await;
    phone.settle().await;
    assert!(phone.engine.holds(&patient).unwrap(), "her own record");

    let mut paramedic = Device::paramedic(&srv, dir.path()).await;
    paramedic.online().await;
    paramedic.settle().await;
    paramedic.offline().await;
    // No signal, the patient unconscious: emergency access.
    paramedic
        .engine
        .view(&patient, AccessRequest::emergency())
        .unwrap();

    // She looks at her own record on her phone (not yet uploaded).
    phone
        .engine
        .view(&patient, AccessRequest::with_permission())
        .unwrap();
    let log = phone
        .sync
        .as_ref()
        .unwrap()
        .access_log(&patient)
        .await
        .unwrap();
    assert!(
        !log.iter().any(|e| e.user == PARAMEDIC_ID),
        "the paramedic is still offline"
    );
    assert!(
        log.iter()
            .any(|e| e.user == "patient" && e.action == "view" && e.outcome == "permitted"),
        "her own view, from her phone's queue: {log:?}"
    );

    // The paramedic reconnects: one sync.
    paramedic.online().await;
    paramedic.settle().await;
    let log = phone
        .sync
        .as_ref()
        .unwrap()
        .access_log(&patient)
        .await
        .unwrap();
    let seen: Vec<_> = log.iter().filter(|e| e.user == PARAMEDIC_ID).collect();
    assert!(!seen.is_empty(), "{log:?}");
    let view = seen.iter().find(|e| e.action == "view").unwrap();
    assert_eq!(view.user_name.as_deref(), Some("Sam Paramedic"));
    assert_eq!(view.organisation, "RYA");
    assert_eq!(view.role, "R1290");
    assert_eq!(view.basis.as_deref(), Some("emergency"));
    assert_eq!(view.outcome, "permitted");
    let mut ids: Vec<&str> = log.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), log.len(), "each event once");
    assert!(log.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    // Nobody else may read it: not the paramedic, and not the patient's
    // phone about somebody else.
    let url = format!("ws://{}/sync", srv.sync_addr);
    let theirs = fetch_access_log(&url, &paramedic.keys, &srv.server_key, &patient).await;
    assert!(matches!(theirs, Err(AccessLogError::Refused(_))));
    let other = fetch_access_log(&url, &phone.keys, &srv.server_key, &test_nhs_number(85)).await;
    assert!(matches!(other, Err(AccessLogError::Refused(_))));
    // Each read, allowed or not, is in the server's trail.
    let reads = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "read-access-log")
        .count();
    assert!(reads >= 4, "{reads}");
    paramedic.offline().await;
    phone.offline().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_officer_reads_the_accesses_of_her_own_organisations_staff_only() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = on_incident(&srv, &store, 88, SharingChoice::CoreAndAdditional, "INC-88");
    common::site::on_caseload(&srv, &store, 88, SharingChoice::CoreAndAdditional);
    for (id, org) in [("555000000902", "RYA"), ("555000000903", "RX1")] {
        srv.directory
            .add_user(&officer(id, org), "pat-2468")
            .unwrap();
    }
    let nurse = common::raw_device(
        &srv,
        "RX1",
        DeviceClass::NurseTablet,
        Some(&common::nurse_login()),
    )
    .await;
    let paramedic = common::raw_device(
        &srv,
        "RYA",
        DeviceClass::AmbulanceTablet,
        Some(&login_of(PARAMEDIC_ID, "CARD-0203", "sam-1357")),
    )
    .await;
    let by_nurse = upload_view(&srv, &nurse, (common::NURSE_ID, "R0050", "RX1"), patient).await;
    let by_paramedic = upload_view(&srv, &paramedic, (PARAMEDIC_ID, "R1290", "RYA"), patient).await;

    let url = format!("ws://{}/sync", srv.sync_addr);
    let read = async |keys: &StaticKeypair| -> Vec<String> {
        let log = fetch_access_log(&url, keys, &srv.server_key, &patient)
            .await
            .unwrap();
        log.into_iter().map(|e| e.id).collect()
    };
    let rx1 = common::raw_device(
        &srv,
        "RX1",
        DeviceClass::NurseTablet,
        Some(&login_of("555000000903", "CARD-555000000903", "pat-2468")),
    )
    .await;
    let seen = read(&rx1).await;
    assert!(seen.contains(&by_nurse.id), "her own staff's access");
    assert!(
        !seen.contains(&by_paramedic.id),
        "another organisation's access is not hers to review"
    );
    let rya = common::raw_device(
        &srv,
        "RYA",
        DeviceClass::AmbulanceTablet,
        Some(&login_of("555000000902", "CARD-555000000902", "pat-2468")),
    )
    .await;
    let seen = read(&rya).await;
    assert!(seen.contains(&by_paramedic.id) && !seen.contains(&by_nurse.id));
    // The patient reads every access.
    let phone = Device::patient(&srv, &store, dir.path(), patient, "tulip-2468").await;
    let seen = read(&phone.keys).await;
    assert!(seen.contains(&by_paramedic.id) && seen.contains(&by_nurse.id));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_officers_expired_grant_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lifetime = std::time::Duration::from_secs(4);
    let srv = scr_server::serve::start(scr_server::serve::ServeConfig {
        grant_lifetime: lifetime,
        ..scr_server::serve::ServeConfig::on_loopback(dir.path())
    })
    .await
    .unwrap();
    let patient = test_nhs_number(89);
    let url = format!("ws://{}/sync", srv.sync_addr);
    let keys = rx1_officer_tablet(&srv).await;
    let logged_in = std::time::Instant::now();
    let fresh = fetch_access_log(&url, &keys, &srv.server_key, &patient).await;
    if logged_in.elapsed() < lifetime {
        assert!(fresh.is_ok(), "while her grant lasts: {fresh:?}");
    }
    tokio::time::sleep(
        lifetime.saturating_sub(logged_in.elapsed()) + std::time::Duration::from_millis(200),
    )
    .await;
    let expired = fetch_access_log(&url, &keys, &srv.server_key, &patient).await;
    assert!(
        matches!(&expired, Err(AccessLogError::Refused(r)) if r.contains("logged in")),
        "{expired:?}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_officer_who_logged_out_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = test_nhs_number(90);
    let url = format!("ws://{}/sync", srv.sync_addr);
    let keys = rx1_officer_tablet(&srv).await;
    assert!(
        fetch_access_log(&url, &keys, &srv.server_key, &patient)
            .await
            .is_ok()
    );
    scr_core::sync::retire_grant(&url, &keys, &srv.server_key)
        .await
        .unwrap();
    let after = fetch_access_log(&url, &keys, &srv.server_key, &patient).await;
    assert!(
        matches!(&after, Err(AccessLogError::Refused(r)) if r.contains("logged in")),
        "{after:?}"
    );
    let logout = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .find(|e| e.action == "logout")
        .expect("the logout is in the server's trail");
    assert_eq!(logout.user, "555000000903");
    srv.shutdown().await;
}
