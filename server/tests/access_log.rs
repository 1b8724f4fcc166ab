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
