//! Writes: who may write what, who wrote it, and no write (or view) whose
//! audit cannot be recorded.

use scr_core::access::{AccessRequest, DenyReason};
use scr_core::audit::Outcome;
use scr_core::engine::EngineError;
use scr_core::fixtures::sample_entry;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

use crate::support::{World, gp_principal, incident, nurse, paramedic, stored_view};

#[test]
fn no_view_and_no_write_when_the_audit_record_cannot_be_written() {
    let w = World::new();
    let (nhs, exports) = w.patient(6);
    let tablet = w.engine("nurse-3", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&nhs, &exports, HoldReason::Caseload)
        .unwrap();
    tablet
        .login_online(
            &w.grant("nurse-3", nurse(), &[(nhs, RelationshipKind::Caseload)]),
            "1357",
        )
        .unwrap();
    tablet.record_permission(&nhs, true, true).unwrap();
    let before = stored_view(&tablet, &nhs);

    // A store fault on the audit table only (as a full disk would cause).
    let conn = rusqlite::Connection::open(tablet.path()).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER audit_fault BEFORE INSERT ON audit_queue BEGIN SELECT RAISE(ABORT, 'injected'); END",
    )
    .unwrap();
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::AuditFailed(_))
    ));
    assert!(
        tablet
            .add_entry(&nhs, sample_entry(7), false, None)
            .is_err()
    );
    assert_eq!(stored_view(&tablet, &nhs), before, "the write did not land");

    conn.execute_batch("DROP TRIGGER audit_fault").unwrap();
    assert!(tablet.view(&nhs, AccessRequest::with_permission()).is_ok());
    assert_eq!(tablet.verify_audit_chain().unwrap(), Ok(()));
}

#[test]
fn writes_follow_the_rules_and_record_who_wrote_them() {
    let w = World::new();
    let (nhs, exports) = w.patient(7);
    let tablet = w.engine("nurse-4", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&nhs, &exports, HoldReason::Caseload)
        .unwrap();
    tablet
        .login_online(
            &w.grant("nurse-4", nurse(), &[(nhs, RelationshipKind::Caseload)]),
            "1357",
        )
        .unwrap();
    let visit = tablet
        .add_entry(&nhs, sample_entry(7), false, None)
        .unwrap();
    assert_eq!(visit.provenance.organisation, "RX1");
    assert_eq!(visit.provenance.device, "nurse-4");
    assert!(matches!(
        tablet.add_entry(&nhs, sample_entry(0), false, None),
        Err(EngineError::Denied(DenyReason::NotTheGp))
    ));
    // The nurse's own organisation may mark its entry in error; not the GP's.
    tablet
        .mark_entered_in_error(&nhs, visit.entry_id, &[visit.version_id], "wrong patient")
        .unwrap();
    let gp_allergy = stored_view(&tablet, &nhs)
        .compartment(Compartment::Core)
        .unwrap()
        .entries
        .clone()
        .into_iter()
        .find(|e| {
            e.current()
                .is_some_and(|v| v.content.kind_name() == "allergy")
        })
        .unwrap();
    assert!(matches!(
        tablet.mark_entered_in_error(&nhs, gp_allergy.entry_id, &gp_allergy.head_ids(), "no"),
        Err(EngineError::Denied(DenyReason::NotTheGp))
    ));
    let events = tablet.audit_queue().unwrap();
    let add = events
        .iter()
        .find(|e| e.action == "add-entry" && e.outcome == Outcome::Permit)
        .unwrap();
    assert_eq!(add.entries, vec![visit.entry_id.to_string()]);
    assert_eq!(add.compartments, vec![Compartment::CareEvents]);
}

#[test]
fn only_the_registered_gp_writes_core_and_a_gp_cannot_unhide_by_changing_the_choice() {
    let w = World::new();
    let (nhs, exports) = w.patient(21);
    let desk = w.engine("gp-2", DeviceClass::GpSystem);
    desk.receive_patient(&nhs, &exports, HoldReason::Origin)
        .unwrap();
    // A GP at another practice, with a caseload relationship only.
    desk.login_online(
        &w.grant("gp-2", gp_principal(), &[(nhs, RelationshipKind::Caseload)]),
        "9999",
    )
    .unwrap();
    assert!(matches!(
        desk.add_entry(&nhs, sample_entry(0), false, None),
        Err(EngineError::Denied(DenyReason::NotTheGp))
    ));
    desk.login_online(
        &w.grant(
            "gp-2",
            gp_principal(),
            &[(nhs, RelationshipKind::Registration)],
        ),
        "9999",
    )
    .unwrap();
    desk.add_entry(&nhs, sample_entry(0), false, None).unwrap();
    desk.set_patient_choices(&nhs, SharingChoice::OptOut, false)
        .unwrap();
    desk.set_patient_choices(&nhs, SharingChoice::CoreOnly, false)
        .unwrap();
    // Still hidden: a GP changing the choice is not the privacy officer's unhide.
    let nurse_tablet = w.engine("nurse-9", DeviceClass::NurseTablet);
    nurse_tablet
        .receive_patient(
            &nhs,
            &desk.export_for_sync(&nhs).unwrap(),
            HoldReason::Caseload,
        )
        .unwrap();
    nurse_tablet
        .login_online(
            &w.grant("nurse-9", nurse(), &[(nhs, RelationshipKind::Caseload)]),
            "1357",
        )
        .unwrap();
    let got = nurse_tablet.view(&nhs, AccessRequest::emergency());
    assert!(
        matches!(got, Err(EngineError::Denied(DenyReason::RecordUnavailable))),
        "{got:?}"
    );
}

#[test]
fn naming_another_organisations_version_needs_that_organisations_rights() {
    let w = World::new();
    let (nhs, exports) = w.patient(22);
    let a = w.engine("nurse-a", DeviceClass::NurseTablet);
    let b = w.engine("amb-b", DeviceClass::AmbulanceTablet);
    a.receive_patient(&nhs, &exports, HoldReason::Caseload)
        .unwrap();
    a.login_online(
        &w.grant("nurse-a", nurse(), &[(nhs, RelationshipKind::Caseload)]),
        "1357",
    )
    .unwrap();
    let note = a.add_entry(&nhs, sample_entry(7), false, None).unwrap();
    b.receive_patient(
        &nhs,
        &a.export_for_sync(&nhs).unwrap(),
        HoldReason::Incident {
            incident_id: "I".into(),
            closed_at_ms: None,
        },
    )
    .unwrap();
    b.login_online(
        &w.grant("amb-b", paramedic(), &[(nhs, incident("I"))]),
        "2468",
    )
    .unwrap();
    // Concurrent corrections of the nurse's note, one from each organisation.
    assert!(matches!(
        b.supersede(&nhs, note.entry_id, &[note.version_id], sample_entry(17)),
        Err(EngineError::Denied(DenyReason::NotTheAuthor))
    ));
    assert!(matches!(
        b.mark_entered_in_error(&nhs, note.entry_id, &[note.version_id], "not ours"),
        Err(EngineError::Denied(DenyReason::NotTheAuthor))
    ));
}
