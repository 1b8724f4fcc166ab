//! The three access tests and patient choices: what staff and the patient
//! see, and every decision audited.

use scr_core::access::{AccessRequest, AlertReason, DenyReason, RequestedBasis};
use scr_core::audit::Outcome;
use scr_core::engine::EngineError;
use scr_core::fixtures::sample_entry;
use scr_core::grant::{GrantPrincipal, RelationshipKind};
use scr_core::record::{Compartment, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

use crate::support::{
    World, compartments, gp_principal, incident, merge_into, nurse, paramedic, staff,
    tablet_exports,
};

#[test]
fn a_paramedic_asks_permission_or_uses_emergency_access_and_every_decision_is_audited() {
    let w = World::new();
    let (nhs, exports) = w.patient(1);
    let (stranger, stranger_exports) = w.patient(2);
    let tablet = w.engine("amb-31", DeviceClass::AmbulanceTablet);
    let incident_hold = HoldReason::Incident {
        incident_id: "INC-1".into(),
        closed_at_ms: None,
    };
    tablet
        .receive_patient(&nhs, &exports, incident_hold.clone())
        .unwrap();
    tablet
        .receive_patient(&stranger, &stranger_exports, incident_hold)
        .unwrap();

    // Locked: no data at all.
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Locked)
    ));

    let grant = w.grant("amb-31", paramedic(), &[(nhs, incident("INC-1"))]);
    tablet.login_online(&grant, "2468").unwrap();

    // Nothing recorded yet: ask first.
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::PermissionNeeded))
    ));
    tablet.record_permission(&nhs, false, true).unwrap();
    let seen = tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert_eq!(
        compartments(&seen),
        vec![
            Compartment::Core,
            Compartment::PatientEntered,
            Compartment::Governance,
            Compartment::Permissions
        ]
    );
    assert!(seen.withheld.contains(&Compartment::Sensitive));
    assert_eq!(seen.audit.outcome, Outcome::Permit);
    assert!(seen.audit.alerts.is_empty());

    // A patient not on the incident, unconscious: self-claim and emergency.
    assert!(matches!(
        tablet.view(&stranger, AccessRequest::emergency()),
        Err(EngineError::Denied(DenyReason::NoRelationship))
    ));
    let urgent = AccessRequest {
        basis: RequestedBasis::Emergency,
        self_claim: Some(AlertReason::SelfClaimEmergency),
    };
    let seen = tablet.view(&stranger, urgent).unwrap();
    let alerts: Vec<(u8, u8)> = seen
        .audit
        .alerts
        .iter()
        .map(|a| (a.alert_type().code(), a.reason().code()))
        .collect();
    assert_eq!(alerts, vec![(1, 4), (2, 5)]);
    assert_eq!(
        seen.audit.basis.as_deref(),
        Some("self-claimed-relationship+emergency")
    );

    // The queue holds every decision, permits and denials, in one chain.
    let events = tablet.audit_queue().unwrap();
    let views: Vec<&str> = events
        .iter()
        .filter(|e| e.action == "view")
        .map(|e| match e.outcome {
            Outcome::Permit => "permit",
            Outcome::Deny { .. } => "deny",
            Outcome::Recorded => "recorded",
        })
        .collect();
    assert_eq!(views, vec!["deny", "permit", "deny", "permit"]);
    assert_eq!(tablet.verify_audit_chain().unwrap(), Ok(()));
}

#[test]
fn patient_choices_decide_what_staff_see() {
    let w = World::new();
    let (nhs, exports) = w.patient(3);
    let tablet = w.engine("nurse-7", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&nhs, &exports, HoldReason::Caseload)
        .unwrap();
    let grant = w.grant("nurse-7", nurse(), &[(nhs, RelationshipKind::Caseload)]);
    tablet.login_online(&grant, "1357").unwrap();
    tablet.record_permission(&nhs, true, true).unwrap();

    let seen = tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert_eq!(
        compartments(&seen),
        vec![
            Compartment::Core,
            Compartment::PatientEntered,
            Compartment::Governance,
            Compartment::Permissions
        ]
    );

    // The GP records core + additional for the patient, on the GP's device.
    let gp_desk = w.engine("gp-desk", DeviceClass::GpSystem);
    gp_desk
        .receive_patient(&nhs, &tablet_exports(&tablet, &nhs), HoldReason::Caseload)
        .unwrap();
    gp_desk
        .login_online(
            &w.grant(
                "gp-desk",
                gp_principal(),
                &[(nhs, RelationshipKind::Registration)],
            ),
            "9999",
        )
        .unwrap();
    gp_desk
        .set_patient_choices(&nhs, SharingChoice::CoreAndAdditional, true)
        .unwrap();
    merge_into(&tablet, &nhs, &gp_desk);
    let seen = tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert_eq!(
        compartments(&seen),
        vec![
            Compartment::Core,
            Compartment::Additional,
            Compartment::CareEvents,
            Compartment::PatientEntered,
            Compartment::Governance,
            Compartment::Permissions
        ],
        "no B1611: sensitive stays withheld even when included"
    );

    // Opt-out hides the record: unavailable, not empty.
    gp_desk
        .set_patient_choices(&nhs, SharingChoice::OptOut, false)
        .unwrap();
    merge_into(&tablet, &nhs, &gp_desk);
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::emergency()),
        Err(EngineError::Denied(DenyReason::RecordUnavailable))
    ));

    // Only a privacy officer unhides, citing the request and investigation.
    assert!(matches!(
        gp_desk.unhide(&nhs, "WR-1", "INV-1"),
        Err(EngineError::Denied(DenyReason::NotPrivacyOfficer))
    ));
    let po = w.engine("po-desk", DeviceClass::GpSystem);
    po.receive_patient(&nhs, &tablet_exports(&gp_desk, &nhs), HoldReason::Origin)
        .unwrap();
    po.login_online(
        &w.grant("po-desk", staff("R8003", "RX1", &["B0264"], true), &[]),
        "0000",
    )
    .unwrap();
    assert!(matches!(
        po.unhide(&nhs, "WR-1", " "),
        Err(EngineError::Denied(DenyReason::MissingReferences))
    ));
    po.unhide(&nhs, "WR-2026-114", "INV-88").unwrap();
    merge_into(&tablet, &nhs, &po);
    let seen = tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert_eq!(
        compartments(&seen),
        vec![
            Compartment::Core,
            Compartment::PatientEntered,
            Compartment::Governance,
            Compartment::Permissions
        ]
    );
    let unhide = po
        .audit_queue()
        .unwrap()
        .into_iter()
        .find(|e| e.action == "unhide" && e.outcome == Outcome::Permit)
        .unwrap();
    assert_eq!(
        unhide.detail.as_deref(),
        Some("request WR-2026-114; investigation INV-88")
    );
}

#[test]
fn without_the_governance_compartment_staff_see_nothing() {
    let w = World::new();
    let (nhs, exports) = w.patient(20);
    let core_only: Vec<_> = exports
        .into_iter()
        .filter(|e| e.compartment == Compartment::Core)
        .collect();
    let tablet = w.engine("amb-9", DeviceClass::AmbulanceTablet);
    tablet
        .receive_patient(
            &nhs,
            &core_only,
            HoldReason::Incident {
                incident_id: "I".into(),
                closed_at_ms: None,
            },
        )
        .unwrap();
    tablet
        .login_online(
            &w.grant("amb-9", paramedic(), &[(nhs, incident("I"))]),
            "2468",
        )
        .unwrap();
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::emergency()),
        Err(EngineError::Denied(DenyReason::RecordUnavailable))
    ));
}

#[test]
fn the_patient_sees_everything_writes_preferences_and_reads_who_looked() {
    let w = World::new();
    let (nhs, exports) = w.patient(8);
    let (other, other_exports) = w.patient(9);
    let phone = w.engine("phone-1", DeviceClass::PatientPhone);
    phone
        .receive_patient(&nhs, &exports, HoldReason::OwnRecord)
        .unwrap();
    phone
        .receive_patient(&other, &other_exports, HoldReason::Unspecified)
        .unwrap();
    phone
        .login_online(
            &w.grant("phone-1", GrantPrincipal::Patient { nhs_number: nhs }, &[]),
            "8642",
        )
        .unwrap();
    let seen = phone.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert_eq!(compartments(&seen), Compartment::ALL.to_vec());
    assert!(matches!(
        phone.view(&other, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::NotAllowed))
    ));
    phone.add_entry(&nhs, sample_entry(9), false, None).unwrap();
    assert!(matches!(
        phone.add_entry(&nhs, sample_entry(0), false, None),
        Err(EngineError::Denied(DenyReason::NotAllowed))
    ));
    phone
        .set_patient_choices(&nhs, SharingChoice::CoreOnly, false)
        .unwrap();
    let trail = phone.audit_trail(&nhs).unwrap();
    assert!(trail.iter().all(|e| e.patient == Some(nhs)));
    assert!(trail.iter().any(|e| e.action == "view"));
    assert!(matches!(
        phone.audit_trail(&other),
        Err(EngineError::Denied(DenyReason::NotAllowed))
    ));
}
