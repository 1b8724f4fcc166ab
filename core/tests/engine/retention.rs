//! Retention: patients forgotten when they leave a caseload or an incident
//! closes, and records with unsent edits kept.

use scr_core::access::AccessRequest;
use scr_core::fixtures::sample_entry;
use scr_core::grant::RelationshipKind;
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

use crate::support::{HOUR, World, incident, nurse, paramedic};

#[test]
fn a_nurse_tablet_forgets_patients_who_leave_the_caseload_and_keeps_the_trail() {
    let w = World::new();
    let (a, ea) = w.patient(10);
    let (b, eb) = w.patient(11);
    let tablet = w.engine("nurse-5", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&a, &ea, HoldReason::Caseload)
        .unwrap();
    tablet
        .receive_patient(&b, &eb, HoldReason::Caseload)
        .unwrap();
    let both = [
        (a, RelationshipKind::Caseload),
        (b, RelationshipKind::Caseload),
    ];
    tablet
        .login_online(&w.grant("nurse-5", nurse(), &both), "1357")
        .unwrap();
    tablet.record_permission(&a, true, true).unwrap();
    tablet.view(&a, AccessRequest::with_permission()).unwrap();
    assert!(tablet.holds(&a).unwrap());

    // Her permission record has not reached the server: the patient is
    // kept though no longer on her caseload...
    w.clock.advance(HOUR);
    tablet
        .login_online(&w.grant("nurse-5", nurse(), &both[1..]), "1357")
        .unwrap();
    assert!(tablet.holds(&a).unwrap(), "unsent changes keep the record");
    // ...until the server has it (sync confirms), then the next login forgets.
    tablet.confirm_sent(&a).unwrap();
    w.clock.advance(HOUR);
    tablet
        .login_online(&w.grant("nurse-5", nurse(), &both[1..]), "1357")
        .unwrap();
    assert!(!tablet.holds(&a).unwrap());
    assert!(tablet.holds(&b).unwrap());
    let events = tablet.audit_queue().unwrap();
    let forget = events.iter().find(|e| e.action == "forget").unwrap();
    assert_eq!(forget.patient, Some(a));
    assert_eq!(forget.detail.as_deref(), Some("left-caseload"));
    assert!(
        events
            .iter()
            .any(|e| e.action == "view" && e.patient == Some(a))
    );
}

#[test]
fn an_ambulance_tablet_forgets_after_the_incident_window() {
    let w = World::new();
    let (nhs, exports) = w.patient(12);
    let tablet = w.engine("amb-5", DeviceClass::AmbulanceTablet);
    tablet
        .receive_patient(
            &nhs,
            &exports,
            HoldReason::Incident {
                incident_id: "INC-7".into(),
                closed_at_ms: None,
            },
        )
        .unwrap();
    tablet
        .login_online(
            &w.grant("amb-5", paramedic(), &[(nhs, incident("INC-7"))]),
            "2468",
        )
        .unwrap();
    assert_eq!(tablet.close_incident("INC-7").unwrap(), 1);
    w.clock.advance(3 * HOUR);
    assert_eq!(tablet.apply_retention().unwrap(), 0);
    w.clock.advance(HOUR);
    assert_eq!(tablet.apply_retention().unwrap(), 1);
    assert!(!tablet.holds(&nhs).unwrap());
}

#[test]
fn a_record_with_unsent_edits_survives_a_restart_and_an_empty_holdings_list() {
    let w = World::new();
    let (a, ea) = w.patient(12);
    let (b, eb) = w.patient(13);
    let path = w.dir.path().join("nurse-6.db");
    let tablet = w.engine_at(&path, "nurse-6", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&a, &ea, HoldReason::Caseload)
        .unwrap();
    tablet
        .receive_patient(&b, &eb, HoldReason::Caseload)
        .unwrap();
    let both = [
        (a, RelationshipKind::Caseload),
        (b, RelationshipKind::Caseload),
    ];
    tablet
        .login_online(&w.grant("nurse-6", nurse(), &both), "1357")
        .unwrap();
    tablet.add_entry(&a, sample_entry(7), false, None).unwrap();
    drop(tablet);

    // After a restart the server's list no longer names either patient:
    // the one with an unsent visit note is kept, the other forgotten.
    let tablet = w.engine_at(&path, "nurse-6", DeviceClass::NurseTablet);
    let outcome = tablet
        .apply_holdings(&scr_core::protocol::HoldingsList::default())
        .unwrap();
    assert_eq!(outcome.kept_unsent, 1);
    assert_eq!(outcome.forgotten, 1);
    assert!(tablet.holds(&a).unwrap());
    assert!(!tablet.holds(&b).unwrap());
}
