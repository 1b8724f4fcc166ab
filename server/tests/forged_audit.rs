//! A modified app with a valid grant writes its own audit trail: what it
//! uploads is believed only as far as what the server issued to it
//! vouches for it. Over real sockets, as such an app would speak.
//! - An event naming a clinician who never logged in on the tablet, or a
//!   patient no grant of the tablet named, is stored flagged, raises no
//!   alert at any organisation, and never shows in the patient's access
//!   log; the tablet's true events beside it do.
//! - A tablet that never logged in vouches for nobody.
//! - A device cannot fill the archive without limit: past its budget its
//!   uploads are refused, and it loses nothing (it sends them later).
#![allow(clippy::unwrap_used)]

use scr_core::access::{Alert, AlertReason, AlertType};
use scr_core::audit::{AuditDraft, AuditEvent, GENESIS_HASH, Outcome};
use scr_core::channel::hex_key;
use scr_core::fixtures::test_nhs_number;
use scr_core::protocol::{AUDIT_UPLOAD_FORMAT, AuditUpload, Backlog, LoginRequest};
use scr_core::record::SharingChoice;
use scr_core::retention::DeviceClass;
use scr_core::sync::{AuditUploadError, fetch_access_log, send_audit_batch};
use scr_server::privacy::Officer;
use scr_server::users::NewUser;

mod common;

use common::device::Device;
use common::site::{Site, on_caseload, site};

const DR_INNOCENT: &str = "555000000777";

fn staff(user_id: &str, organisation: &str, role: &str, privacy_officer: bool) -> NewUser {
    NewUser {
        user_id: user_id.into(),
        display_name: format!("Staff {user_id}"),
        organisation: organisation.into(),
        job_role: role.into(),
        job_role_name: "Staff".into(),
        activities: vec!["B0264".into()],
        privacy_officer,
        card_serial: format!("CARD-{user_id}"),
    }
}

/// One event of a device's chain, as a modified app would write it.
fn forged(
    device: &str,
    (user, role, organisation): (&str, &str, &str),
    patient: u32,
    emergency: bool,
    after: Option<&AuditEvent>,
) -> AuditEvent {
    let draft = AuditDraft {
        user: user.into(),
        role: role.into(),
        organisation: organisation.into(),
        patient: Some(test_nhs_number(patient)),
        action: "view".into(),
        compartments: Vec::new(),
        entries: Vec::new(),
        outcome: Outcome::Permit,
        basis: Some(if emergency { "emergency" } else { "permission" }.into()),
        alerts: if emergency {
            vec![Alert::new(AlertType::AccessAlert, AlertReason::Emergency).unwrap()]
        } else {
            Vec::new()
        },
        detail: None,
    };
    let (seq, prev) = after.map_or((1, GENESIS_HASH.to_owned()), |e| (e.seq + 1, e.hash()));
    AuditEvent::from_draft(draft, device, seq, prev, scr_core::clock::now_ms())
}

fn batch(events: Vec<AuditEvent>) -> AuditUpload {
    AuditUpload {
        format: AUDIT_UPLOAD_FORMAT,
        events,
        backlog: Backlog::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_upload_frames_nobody_raises_no_alert_and_stays_out_of_the_patients_log() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    srv.directory
        .add_user(&staff(DR_INNOCENT, "A81002", "R0260", false), "gp-2468")
        .unwrap();
    srv.directory
        .add_user(&staff("555000000904", "A81002", "R8003", true), "po-2468")
        .unwrap();
    let patient = on_caseload(&srv, &store, 85, SharingChoice::CoreAndAdditional);
    let url = format!("ws://{}/sync", srv.sync_addr);

    // A modified app on a tablet the nurse logged in to.
    let nurse_login = common::nurse_login();
    let tablet =
        common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, Some(&nurse_login)).await;
    let me = hex_key(&tablet.public());
    let nurse = (common::NURSE_ID, "R0050", "RX1");
    let framed = forged(&me, (DR_INNOCENT, "R0260", "A81002"), 85, true, None);
    let not_hers = forged(&me, nurse, 86, false, Some(&framed));
    let true_view = forged(&me, nurse, 85, false, Some(&not_hers));
    let ack = send_audit_batch(
        &url,
        &tablet,
        &srv.server_key,
        &batch(vec![framed, not_hers, true_view.clone()]),
    )
    .await
    .unwrap();
    assert_eq!((ack.stored, ack.flagged), (3, 2), "stored, never lost");
    let flags: Vec<(String, Option<String>)> = srv
        .archive
        .events_about(&patient)
        .unwrap()
        .into_iter()
        .map(|a| (a.event.user, a.flag))
        .collect();
    assert!(flags.contains(&(DR_INNOCENT.to_owned(), Some("unvouched".to_owned()))));
    assert!(flags.contains(&(common::NURSE_ID.to_owned(), None)));

    // No alert reaches A81002's privacy officer.
    let officer = Officer::find(&srv.directory, "555000000904").unwrap();
    assert!(
        officer
            .alerts(&srv.archive, &store, true)
            .unwrap()
            .is_empty(),
        "a forged emergency raises nothing"
    );

    // The patient's phone: her log shows the nurse's true view, and no
    // Dr Innocent.
    let phone = Device::patient(&srv, &store, dir.path(), patient, "tulip-2468").await;
    let log = fetch_access_log(&phone.url, &phone.keys, &srv.server_key, &patient)
        .await
        .unwrap();
    assert!(
        log.iter().any(|e| e.id == true_view.id),
        "the true view is shown"
    );
    assert!(
        !log.iter().any(|e| e.user == DR_INNOCENT),
        "nobody framed: {log:?}"
    );

    // A tablet nobody logged in to vouches for nobody, the nurse included.
    let idle = common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, None).await;
    let claimed = forged(&hex_key(&idle.public()), nurse, 85, false, None);
    let ack = send_audit_batch(&url, &idle, &srv.server_key, &batch(vec![claimed.clone()]))
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.flagged), (1, 1));
    let log = fetch_access_log(&phone.url, &phone.keys, &srv.server_key, &patient)
        .await
        .unwrap();
    assert!(!log.iter().any(|e| e.id == claimed.id), "{log:?}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_fill_the_archive_and_loses_nothing_it_sends_past_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, .. } = site(dir.path()).await;
    let login = LoginRequest {
        user_id: common::NURSE_ID.into(),
        card_serial: "CARD-0001".into(),
        passcode: common::NURSE_PASSCODE.into(),
    };
    let tablet = common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, Some(&login)).await;
    let me = hex_key(&tablet.public());
    let url = format!("ws://{}/sync", srv.sync_addr);
    // Housekeeping the grant vouches for, as fast as the server takes it.
    let mut last: Option<AuditEvent> = None;
    let mut next_batch = |n: usize| {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let mut e = forged(&me, ("device", "", ""), 85, false, last.as_ref());
            (e.patient, e.action, e.outcome, e.basis) =
                (None, "unlock".into(), Outcome::Recorded, None);
            last = Some(e.clone());
            events.push(e);
        }
        batch(events)
    };
    let mut stored = 0u64;
    let refused = loop {
        let upload = next_batch(256);
        match send_audit_batch(&url, &tablet, &srv.server_key, &upload).await {
            Ok(ack) => stored += u64::from(ack.stored),
            Err(e) => break (e, upload),
        }
        assert!(stored <= 20_000, "the budget never ran out");
    };
    let (AuditUploadError::Refused(reason), upload) = refused else {
        panic!("{:?}", refused.0);
    };
    assert!(reason.contains("too many"), "{reason}");
    assert!(stored >= 19_000, "a day offline's worth is taken: {stored}");
    assert_eq!(
        srv.archive.counts_of(&tablet.public()).unwrap(),
        (stored, 0)
    );
    let metrics = common::http_get(srv.health_addr, "/metrics").await;
    assert!(
        metrics.contains("scr_audit_uploads_refused_total 1"),
        "{metrics}"
    );
    // Another device is not held back.
    let other = common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, None).await;
    let mut e = forged(
        &hex_key(&other.public()),
        ("device", "", ""),
        85,
        false,
        None,
    );
    (e.patient, e.action, e.outcome, e.basis) = (None, "unlock".into(), Outcome::Recorded, None);
    let ack = send_audit_batch(&url, &other, &srv.server_key, &batch(vec![e]))
        .await
        .unwrap();
    assert_eq!(ack.stored, 1);
    // The refused batch stored nothing; its events are still the device's
    // to send (the server holds none of them).
    let first = &upload.events[0];
    assert_eq!(
        srv.archive.chain(&tablet.public()).unwrap().0,
        first.seq - 1
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_users_tablet_is_told_to_wipe_itself_though_she_logged_out() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    on_caseload(&srv, &store, 85, SharingChoice::CoreAndAdditional);
    let url = format!("ws://{}/sync", srv.sync_addr);
    let tablet = common::raw_device(
        &srv,
        "RX1",
        DeviceClass::NurseTablet,
        Some(&common::nurse_login()),
    )
    .await;
    let me = hex_key(&tablet.public());
    let before = forged(&me, (common::NURSE_ID, "R0050", "RX1"), 85, false, None);
    scr_core::sync::retire_grant(&url, &tablet, &srv.server_key)
        .await
        .unwrap();
    assert!(srv.directory.revoke_user(common::NURSE_ID).unwrap());
    let ack = send_audit_batch(&url, &tablet, &srv.server_key, &batch(vec![before.clone()]))
        .await
        .unwrap();
    assert!(ack.wipe, "her records go, logged out or not");
    assert_eq!(ack.flagged, 0, "her view before the revocation is believed");
    // One dated after it (its chain intact) is not.
    let nurse = (common::NURSE_ID, "R0050", "RX1");
    let mut late = forged(&me, nurse, 85, false, Some(&before));
    late.wall_time_ms = scr_core::clock::now_ms() + 10 * 60 * 1000;
    let ack = send_audit_batch(&url, &tablet, &srv.server_key, &batch(vec![late]))
        .await
        .unwrap();
    assert_eq!(ack.flagged, 1);
    let flags: Vec<Option<String>> = srv
        .archive
        .events_about(&scr_core::fixtures::test_nhs_number(85))
        .unwrap()
        .into_iter()
        .map(|a| a.flag)
        .collect();
    assert_eq!(flags, [None, Some("after-revocation".to_owned())]);
    srv.shutdown().await;
}
