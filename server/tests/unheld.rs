//! A member of staff asks for a record their tablet does not hold: the
//! tablet says why when it knows, and every attempt leaves one audit event
//! (over real sockets, through the device as the apps use it).
//! - A patient on the nurse's caseload who opted out: "record unavailable"
//!   (the server's holdings list names the patient as withdrawn, and sends
//!   none of the record), for a view and for a write.
//! - A patient she has no relationship with: not held (the app may open an
//!   encounter online), audited as "no legitimate relationship".
//! - A clerk whose role lacks the view activity: "your role does not
//!   include this activity".
#![allow(clippy::unwrap_used)]

use scr_core::access::{AccessRequest, DenyReason};
use scr_core::audit::{AuditEvent, Outcome};
use scr_core::engine::EngineError;
use scr_core::fixtures::test_nhs_number;
use scr_core::protocol::LoginRequest;
use scr_core::record::SharingChoice;
use scr_core::retention::DeviceClass;
use scr_server::users::NewUser;

mod common;

use common::device::{Device, visit};
use common::site::{Site, on_caseload, site};

/// The newest event in the device's queue.
fn last_event(device: &Device) -> AuditEvent {
    device.engine.audit_queue().unwrap().pop().unwrap()
}

fn refused(reason: DenyReason) -> Outcome {
    Outcome::Deny { reason }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_patient_withdrew_is_unavailable_and_each_refusal_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let opted_out = on_caseload(&srv, &store, 71, SharingChoice::OptOut);
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    assert!(
        !nurse.engine.holds(&opted_out).unwrap(),
        "nothing of it sent"
    );

    let before = nurse.engine.audit_queue_len().unwrap();
    let viewed = nurse
        .engine
        .view(&opted_out, AccessRequest::with_permission());
    assert!(
        matches!(
            viewed,
            Err(EngineError::Denied(DenyReason::RecordUnavailable))
        ),
        "{viewed:?}"
    );
    let e = last_event(&nurse);
    assert_eq!(
        (e.action.as_str(), e.patient, e.outcome, e.user.as_str()),
        (
            "view",
            Some(opted_out),
            refused(DenyReason::RecordUnavailable),
            common::NURSE_ID
        )
    );
    let wrote = nurse
        .engine
        .add_entry(&opted_out, visit("visited"), false, None);
    assert!(
        matches!(
            wrote,
            Err(EngineError::Denied(DenyReason::RecordUnavailable))
        ),
        "{wrote:?}"
    );
    assert_eq!(last_event(&nurse).action, "add-entry");
    // A patient she has no relationship with.
    let stranger = test_nhs_number(72);
    assert!(matches!(
        nurse
            .engine
            .view(&stranger, AccessRequest::with_permission()),
        Err(EngineError::NotHeld)
    ));
    let e = last_event(&nurse);
    assert_eq!(
        (e.patient, e.outcome),
        (Some(stranger), refused(DenyReason::NoRelationship))
    );
    assert_eq!(
        nurse.engine.audit_queue_len().unwrap(),
        before + 3,
        "one event each attempt"
    );
    nurse.offline().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_without_the_view_activity_is_told_so_and_the_attempt_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let clerk = NewUser {
        user_id: "555000000111".into(),
        display_name: "Chris Clerk".into(),
        organisation: "RX1".into(),
        job_role: "R8001".into(),
        job_role_name: "Clerk".into(),
        activities: vec!["B0264".into()],
        privacy_officer: false,
        card_serial: "CARD-0111".into(),
    };
    srv.directory.add_user(&clerk, "chris-2468").unwrap();
    let patient = on_caseload(&srv, &store, 73, SharingChoice::CoreOnly);
    scr_server::users::assign(
        &store,
        &srv.directory,
        "555000000111",
        patient,
        scr_core::grant::RelationshipKind::Caseload,
    )
    .unwrap();
    let login = LoginRequest {
        user_id: "555000000111".into(),
        card_serial: "CARD-0111".into(),
        passcode: "chris-2468".into(),
    };
    let mut tablet = Device::enroll(
        &srv,
        dir.path(),
        "clerk",
        ("RX1", DeviceClass::NurseTablet),
        login,
    )
    .await;
    tablet.online().await;
    tablet.settle().await;
    let viewed = tablet
        .engine
        .view(&patient, AccessRequest::with_permission());
    assert!(
        matches!(
            viewed,
            Err(EngineError::Denied(DenyReason::MissingActivity))
        ),
        "{viewed:?}"
    );
    let e = last_event(&tablet);
    assert_eq!(
        (e.action.as_str(), e.patient, e.outcome),
        ("view", Some(patient), refused(DenyReason::MissingActivity))
    );
    tablet.offline().await;
    srv.shutdown().await;
}
