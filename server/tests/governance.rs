//! The leaflet's promises across devices and server: a record hidden while
//! a nurse is offline is forgotten by her tablet when it reconnects, and
//! her views of it from before the hide still reach the audit trail; a
//! privacy officer unhides it, citing the request and the investigation,
//! and it is shared again; privacy officers review only their own
//! organisation's alerts and close them with an outcome, all audited.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::access::AccessRequest;
use scr_core::access::{AlertReason, AlertType};
use scr_core::record::SharingChoice;
use scr_server::archive::AlertOutcome;
use scr_server::privacy::{Officer, PrivacyError};
use scr_server::records::set_choice;
use scr_server::users::NewUser;

mod common;

use common::site::{Site, on_caseload, on_incident, site};

use common::device::{Device, PARAMEDIC_ID};

use common::officer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_hidden_while_the_nurse_is_offline_is_forgotten_and_her_views_still_reach_the_trail()
 {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    srv.directory
        .add_user(&officer("555000000901", "RX1"), "pat-1357")
        .unwrap();
    let patient = on_caseload(&srv, &store, 86, SharingChoice::CoreAndAdditional);
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse.offline().await;

    // Offline, she views the record twice (the patient agreed).
    nurse
        .engine
        .record_permission(&patient, true, true)
        .unwrap();
    for _ in 0..2 {
        nurse
            .engine
            .view(&patient, AccessRequest::with_permission())
            .unwrap();
    }
    // Meanwhile the patient has the record hidden.
    let hidden = set_choice(
        &store,
        &patient,
        scr_server::records::ChoiceInstruction {
            choice: SharingChoice::CoreAndAdditional,
            include_sensitive: None,
            hidden: Some(true),
            patients_own: false,
        },
        "gp-practice",
    )
    .unwrap();
    assert!(hidden.hidden);

    nurse.online().await;
    tokio::time::timeout(Duration::from_secs(45), async {
        while nurse.engine.holds(&patient).unwrap() {
            nurse.sync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the tablet forgets the hidden record");
    // Her offline views, and the forgetting, are in the server's archive.
    nurse.sync().await;
    let archived: Vec<_> = srv
        .archive
        .events_about(&patient)
        .unwrap()
        .into_iter()
        .map(|a| a.event)
        .filter(|e| e.user == common::NURSE_ID || e.action == "forget")
        .collect();
    let views = archived
        .iter()
        .filter(|e| e.action == "view" && e.basis.as_deref() == Some("permission"))
        .count();
    assert_eq!(views, 2, "{archived:?}");
    assert!(archived.iter().any(|e| e.action == "forget"));
    assert_eq!(nurse.engine.audit_queue_len().unwrap(), 0);

    // A privacy officer unhides it on a written request: the tablet holds
    // it again. Someone who is not a privacy officer cannot.
    assert!(matches!(
        Officer::find(&srv.directory, common::NURSE_ID),
        Err(PrivacyError::NotAnOfficer(_))
    ));
    let po = Officer::find(&srv.directory, "555000000901").unwrap();
    assert!(po.unhide(&store, &patient, "bad ref!", "INV-1").is_err());
    let choices = po
        .unhide(&store, &patient, "REQ-2026-0042", "INV-77")
        .unwrap();
    assert!(!choices.hidden);
    assert_eq!(choices.sharing, SharingChoice::CoreAndAdditional);
    tokio::time::timeout(Duration::from_secs(45), async {
        while !nurse.engine.holds(&patient).unwrap() {
            nurse.sync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("shared again once unhidden");
    let unhide = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .find(|e| e.action == "unhide")
        .expect("the unhide is audited");
    assert_eq!(unhide.user, "555000000901");
    assert_eq!(unhide.patient, Some(patient));
    assert!(unhide.detail.unwrap().contains("REQ-2026-0042"));
    nurse.offline().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_officers_review_their_own_organisations_alerts_and_close_them() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    for (id, org) in [("555000000902", "RYA"), ("555000000903", "RX1")] {
        srv.directory
            .add_user(&officer(id, org), "pat-2468")
            .unwrap();
    }
    let patient = on_incident(&srv, &store, 87, SharingChoice::CoreOnly, "INC-31");
    let mut paramedic = Device::paramedic(&srv, dir.path()).await;
    paramedic.online().await;
    paramedic.settle().await;
    paramedic
        .engine
        .view(&patient, AccessRequest::emergency())
        .unwrap();
    paramedic.sync().await;

    let rya = Officer::find(&srv.directory, "555000000902").unwrap();
    let rx1 = Officer::find(&srv.directory, "555000000903").unwrap();
    assert!(rx1.alerts(&srv.archive, &store, true).unwrap().is_empty());
    let open = rya.alerts(&srv.archive, &store, false).unwrap();
    assert_eq!(open.len(), 1);
    let alert = &open[0];
    assert_eq!(alert.alert.alert_type(), AlertType::AccessAlert);
    assert_eq!(alert.alert.reason(), AlertReason::Emergency);
    assert_eq!(alert.event.user, PARAMEDIC_ID);
    // Another organisation's officer cannot close it.
    assert!(matches!(
        rx1.close(&srv.archive, &store, alert.id, AlertOutcome::Justified),
        Err(PrivacyError::NoSuchAlert(_))
    ));
    rya.close(&srv.archive, &store, alert.id, AlertOutcome::Justified)
        .unwrap();
    assert!(rya.alerts(&srv.archive, &store, false).unwrap().is_empty());
    let all = rya.alerts(&srv.archive, &store, true).unwrap();
    assert_eq!(all[0].status, "justified");
    assert_eq!(all[0].closed_by.as_deref(), Some("555000000902"));
    assert!(
        rya.close(&srv.archive, &store, alert.id, AlertOutcome::Referred)
            .is_err(),
        "closed once"
    );
    let trail: Vec<String> = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.user == "555000000902")
        .map(|e| e.action)
        .collect();
    assert_eq!(trail, ["open-alert", "close-alert", "open-alert"]);
    paramedic.offline().await;
    srv.shutdown().await;
}

/// Runs `scr-server` with `args` as the test operator, `stdin` after its
/// passcode.
fn scr_server(args: &[&str], stdin: &str) -> (bool, String) {
    let d = args[args.iter().position(|a| *a == "--data-dir").unwrap() + 1];
    let out = common::admin::as_operator(d, args, stdin);
    (out.status.success(), common::admin::text(&out))
}

/// Runs `scr-server` with `args` as the officer they name, `stdin` after
/// the officer's `passcode`.
fn as_officer(args: &[&str], passcode: &str, stdin: &str) -> (bool, String) {
    let out = common::admin::as_officer(args, passcode, stdin);
    (out.status.success(), common::admin::text(&out))
}

#[test]
fn the_admin_commands_for_patients_and_privacy_officers_answer_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let nhs = scr_core::fixtures::test_nhs_number(88).digits();
    common::admin::add_user(d, "555000000904", "RX1", true, "pat-1357");
    let alerts = |officer: &str, passcode: &str| {
        as_officer(
            &["admin", "alerts", "--data-dir", d, "--officer", officer],
            passcode,
            "",
        )
    };
    // An id that is nobody's, or a wrong passcode: not authenticated.
    let (ok, out) = alerts("555000000999", "pat-1357");
    assert!(!ok && out.contains("not authenticated"), "{out}");
    let (ok, out) = alerts("555000000904", "wrong-1357");
    assert!(!ok && out.contains("not authenticated"), "{out}");
    let (ok, out) = alerts("555000000904", "pat-1357");
    assert!(ok && out.contains("no open alerts for RX1"), "{out}");
    let close = |id: &str, outcome: &str| {
        as_officer(
            &[
                "admin",
                "close-alert",
                "--data-dir",
                d,
                "--officer",
                "555000000904",
                "--id",
                id,
                "--outcome",
                outcome,
            ],
            "pat-1357",
            "",
        )
    };
    let (ok, out) = close("7", "maybe");
    assert!(!ok && out.contains("justified or referred"), "{out}");
    let (ok, out) = close("7", "justified");
    assert!(!ok && out.contains("no open alert 7"), "{out}");
    // A patient's token: the passcode they chose, on standard input.
    let token = |stdin: &str| {
        scr_server(
            &["admin", "patient-token", "--data-dir", d, "--org", "Y12345"],
            stdin,
        )
    };
    let (ok, out) = token(&format!("{nhs}\nshort\n"));
    assert!(!ok && out.contains("at least 6 characters"), "{out}");
    let (ok, out) = token("1234567890\ntulip-2468\n");
    assert!(!ok && out.contains("NHS number"), "{out}");
    let (ok, out) = token(&format!("{nhs}\ntulip-2468\n"));
    assert!(
        ok && out.contains("enrollment token for the patient's phone"),
        "{out}"
    );
    assert!(!out.contains(&nhs), "the NHS number is not echoed");
    // Unhiding a record the server does not hold is a clear error.
    let (ok, out) = as_officer(
        &[
            "admin",
            "unhide",
            "--data-dir",
            d,
            "--officer",
            "555000000904",
            "--request-ref",
            "REQ-1",
            "--investigation-ref",
            "INV-1",
        ],
        "pat-1357",
        &format!("{nhs}\n"),
    );
    assert!(!ok && out.starts_with("error:"), "{out}");
    assert!(!out.contains(&nhs), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_changes_her_choices_on_her_phone_and_the_nurses_tablet_follows() {
    use scr_core::record::Compartment::*;
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = on_caseload(&srv, &store, 89, SharingChoice::CoreAndAdditional);
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    assert_eq!(
        nurse.compartments(&patient),
        [
            Core,
            Additional,
            CareEvents,
            PatientEntered,
            Governance,
            Permissions
        ]
    );
    let mut phone = Device::patient(&srv, &store, dir.path(), patient, "tulip-2468").await;
    phone.online().await;
    phone.settle().await;

    let until = |want: &'static [scr_core::record::Compartment]| {
        let nurse = &nurse;
        async move {
            tokio::time::timeout(Duration::from_secs(45), async {
                while nurse.compartments(&patient) != want {
                    nurse.sync().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the tablet holds {:?}", nurse.compartments(&patient)));
        }
    };
    // Core only, from her phone: the tablet forgets the rest.
    phone
        .engine
        .set_patient_choices(&patient, SharingChoice::CoreOnly, false)
        .unwrap();
    phone.settle().await;
    until(&[Core, PatientEntered, Governance, Permissions]).await;
    // She changes her mind back.
    phone
        .engine
        .set_patient_choices(&patient, SharingChoice::CoreAndAdditional, false)
        .unwrap();
    phone.settle().await;
    until(&[
        Core,
        Additional,
        CareEvents,
        PatientEntered,
        Governance,
        Permissions,
    ])
    .await;
    // She opts out: the tablet forgets her record; it is not deleted.
    phone
        .engine
        .set_patient_choices(&patient, SharingChoice::OptOut, false)
        .unwrap();
    phone.settle().await;
    tokio::time::timeout(Duration::from_secs(45), async {
        while nurse.engine.holds(&patient).unwrap() {
            nurse.sync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the tablet forgets an opted-out record");
    assert!(store.open_record(&patient).is_ok(), "the record is kept");
    assert!(phone.engine.holds(&patient).unwrap(), "her own copy stays");
    nurse.offline().await;
    phone.offline().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_items_reach_a_tablet_only_while_the_patient_includes_them() {
    use scr_core::record::Compartment::*;
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    // A nurse whose role may see sensitive-flagged items (B1611).
    let specialist = NewUser {
        user_id: "555000000109".into(),
        display_name: "Lee Specialist".into(),
        card_serial: "CARD-0109".into(),
        activities: vec![
            "B0264".into(),
            "B0370".into(),
            "B0380".into(),
            "B1611".into(),
        ],
        ..common::nurse()
    };
    srv.directory.add_user(&specialist, "lee-8642").unwrap();
    let patient = scr_core::fixtures::test_nhs_number(88);
    let mut file = common::device::record(88, SharingChoice::CoreAndAdditional);
    file.entries.push(scr_server::records::FileEntry {
        sensitive: true,
        content: scr_core::fixtures::sample_entry(5),
    });
    scr_server::records::load(&store, &file, "test").unwrap();
    scr_server::users::assign(
        &store,
        &srv.directory,
        "555000000109",
        patient,
        scr_core::grant::RelationshipKind::Caseload,
    )
    .unwrap();
    let mut tablet = Device::enroll(
        &srv,
        dir.path(),
        "specialist",
        ("RX1", scr_core::retention::DeviceClass::NurseTablet),
        scr_core::protocol::LoginRequest {
            user_id: "555000000109".into(),
            card_serial: "CARD-0109".into(),
            passcode: "lee-8642".into(),
        },
    )
    .await;
    tablet.online().await;
    tablet.settle().await;
    let everything_but_sensitive = [
        Core,
        Additional,
        CareEvents,
        PatientEntered,
        Governance,
        Permissions,
    ];
    assert_eq!(tablet.compartments(&patient), everything_but_sensitive);
    let mut phone = Device::patient(&srv, &store, dir.path(), patient, "tulip-2468").await;
    phone.online().await;
    phone.settle().await;
    let until = |want: Vec<scr_core::record::Compartment>| {
        let tablet = &tablet;
        async move {
            tokio::time::timeout(Duration::from_secs(45), async {
                while tablet.compartments(&patient) != want {
                    tablet.sync().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the tablet holds {:?}", tablet.compartments(&patient)));
        }
    };
    // She includes sensitive items: the tablet receives them.
    phone
        .engine
        .set_patient_choices(&patient, SharingChoice::CoreAndAdditional, true)
        .unwrap();
    phone.settle().await;
    until(vec![
        Core,
        Additional,
        CareEvents,
        PatientEntered,
        Governance,
        Sensitive,
        Permissions,
    ])
    .await;
    // She leaves them out again: the tablet forgets them.
    phone
        .engine
        .set_patient_choices(&patient, SharingChoice::CoreAndAdditional, false)
        .unwrap();
    phone.settle().await;
    until(everything_but_sensitive.to_vec()).await;
    tablet.offline().await;
    phone.offline().await;
    srv.shutdown().await;
}
