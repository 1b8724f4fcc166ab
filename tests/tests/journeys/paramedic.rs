//! The paramedic, often with no signal: asks the patient's permission, or
//! uses emergency access when the patient cannot consent (an alert for the
//! trust's privacy officer); finds a patient who is on no list online; and
//! cannot open, offline, a record the tablet does not hold.

use scr_core::access::{AccessRequest, RequestedBasis};
use scr_core::access::{AlertReason, DenyReason};
use scr_core::engine::EngineError;
use scr_core::fixtures::test_nhs_number;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;
use scr_core::sync::EncounterError;
use scr_server::demo::site::{ambulance_privacy_officer, paramedic, visit_note};

use crate::{BORN, SHARED, archived, holds, on_server, patient_of, site, tablet, uploaded};

fn incident() -> RelationshipKind {
    RelationshipKind::Incident {
        incident_id: "INC-9".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_patients_permission_there_is_no_alert() {
    let (_dir, site) = site().await;
    let nhs = patient_of(&site, 21, &paramedic(), incident());
    let sam = tablet(&site, "sam", DeviceClass::AmbulanceTablet, &paramedic()).await;
    holds(&sam, &nhs, &SHARED).await;
    let engine = sam.engine().unwrap();
    assert!(matches!(
        engine.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::PermissionNeeded))
    ));
    // The patient says no: still refused, and the refusal is audited.
    engine.record_permission(&nhs, false, false).unwrap();
    assert!(engine.view(&nhs, AccessRequest::with_permission()).is_err());
    // Asked again, the patient agrees.
    engine.record_permission(&nhs, false, true).unwrap();
    let seen = engine.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert!(seen.audit.alerts.is_empty());
    assert!(seen.view.compartment(Compartment::Core).is_some());

    uploaded(&sam).await;
    let trail = archived(&site, &sam, &nhs);
    let views: Vec<_> = trail.iter().filter(|e| e.action == "view").collect();
    assert!(
        views
            .iter()
            .any(|e| e.id == seen.audit.id && e.basis.as_deref() == Some("permission"))
    );
    assert!(
        trail
            .iter()
            .filter(|e| e.action == "record-permission")
            .count()
            >= 2,
        "both answers are in the trail: {trail:#?}"
    );
    assert!(
        site.alerts(&ambulance_privacy_officer())
            .unwrap()
            .is_empty()
    );
    sam.device.stop_sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_access_with_no_signal_is_audited_and_alerts_the_trust_on_reconnect() {
    let (_dir, site) = site().await;
    let nhs = patient_of(&site, 22, &paramedic(), incident());
    let sam = tablet(&site, "sam", DeviceClass::AmbulanceTablet, &paramedic()).await;
    holds(&sam, &nhs, &SHARED).await;

    // No signal.
    sam.device.stop_sync().await;
    let engine = sam.engine().unwrap();
    let seen = engine.view(&nhs, AccessRequest::emergency()).unwrap();
    let alert = seen.audit.alerts.first().expect("an alert");
    assert_eq!(alert.alert_type().code(), 2);
    assert_eq!(alert.reason(), AlertReason::Emergency);
    let handover = engine
        .add_entry(
            &nhs,
            visit_note("ambulance", "Handed over at ED."),
            false,
            None,
        )
        .unwrap();
    // Neither has reached the server yet; the trail waits on the tablet.
    let offline_events: Vec<_> = engine
        .audit_queue()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "add-entry" || e.id == seen.audit.id)
        .map(|e| e.id)
        .collect();
    assert_eq!(offline_events.len(), 2);
    assert!(
        archived(&site, &sam, &nhs)
            .iter()
            .all(|e| !offline_events.contains(&e.id))
    );
    assert!(
        site.alerts(&ambulance_privacy_officer())
            .unwrap()
            .is_empty()
    );

    // Signal back.
    sam.device.start_sync().await.unwrap();
    uploaded(&sam).await;
    let alerts = site.alerts(&ambulance_privacy_officer()).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].event.id, seen.audit.id);
    assert_eq!(alerts[0].event.patient, Some(nhs));
    assert_eq!(alerts[0].organisation, "RYA");
    let trail = archived(&site, &sam, &nhs);
    assert!(
        offline_events
            .iter()
            .all(|id| trail.iter().any(|e| &e.id == id))
    );
    // The handover note reached the server's copy of the record.
    let on_server = on_server(&site, &nhs, |r| r.entry(handover.entry_id).is_some()).await;
    assert!(
        on_server.entry(handover.entry_id).is_some(),
        "the handover is on the server"
    );
    sam.device.stop_sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_only_records_on_the_tablet_open_and_online_a_stranger_needs_the_right_date_of_birth()
 {
    let (_dir, site) = site().await;
    let listed = patient_of(&site, 23, &paramedic(), incident());
    let stranger = site
        .load_patient(24, SharingChoice::CoreAndAdditional)
        .unwrap();
    let sam = tablet(&site, "sam", DeviceClass::AmbulanceTablet, &paramedic()).await;
    holds(&sam, &listed, &SHARED).await;
    let engine = sam.engine().unwrap();
    // Not on the tablet: offline, nothing to open, whatever the basis.
    assert!(engine.view(&stranger, AccessRequest::emergency()).is_err());
    assert!(!engine.holds(&stranger).unwrap());

    // Online: the wrong date of birth, or an unknown number, reads the same.
    let emergency = AccessRequest {
        basis: RequestedBasis::Emergency,
        self_claim: Some(AlertReason::SelfClaimEmergency),
    };
    let wrong = sam
        .device
        .with_sync(async |s| s.open_encounter(&stranger, "1948-03-13", emergency).await)
        .await
        .unwrap();
    let unknown = sam
        .device
        .with_sync(async |s| {
            s.open_encounter(&test_nhs_number(25), BORN, emergency)
                .await
        })
        .await
        .unwrap();
    assert!(matches!(wrong, Err(EncounterError::NoMatch)), "{wrong:?}");
    assert!(
        matches!(unknown, Err(EncounterError::NoMatch)),
        "{unknown:?}"
    );
    assert!(!engine.holds(&stranger).unwrap());

    // The right one opens an encounter; the record arrives.
    let encounter = sam
        .device
        .with_sync(async |s| s.open_encounter(&stranger, BORN, emergency).await)
        .await
        .unwrap()
        .unwrap()
        .expect("a new encounter");
    assert!(matches!(
        engine.hold_reason(&stranger).unwrap(),
        Some(HoldReason::Encounter { .. })
    ));
    let seen = engine.view(&stranger, AccessRequest::emergency()).unwrap();
    assert!(seen.view.compartment(Compartment::Core).is_some());

    // Closed: the tablet forgets the stranger and keeps its listed patient.
    sam.device
        .with_sync(async |s| s.close_encounter(&encounter).await)
        .await
        .unwrap()
        .unwrap();
    assert!(!engine.holds(&stranger).unwrap());
    assert!(engine.holds(&listed).unwrap());
    uploaded(&sam).await;
    let trail = archived(&site, &sam, &stranger);
    assert!(
        trail
            .iter()
            .any(|e| e.action == "view" && e.basis.as_deref() == Some("emergency"))
    );
    assert!(
        trail
            .iter()
            .any(|e| e.action == "forget" && e.detail.as_deref() == Some("encounter-ended")),
        "{trail:#?}"
    );
    // The self-claimed relationship and the emergency access: two alerts.
    let alerts = site.alerts(&ambulance_privacy_officer()).unwrap();
    let codes: Vec<_> = alerts
        .iter()
        .filter(|a| a.event.patient == Some(stranger))
        .map(|a| a.alert.alert_type().code())
        .collect();
    assert!(codes.contains(&1) && codes.contains(&2), "{codes:?}");
    sam.device.stop_sync().await;
}
