//! Access beyond the cached set, over real sockets: a paramedic finds a
//! patient who is on none of their incidents by NHS number and date of
//! birth. A wrong date, an unknown number, no relationship claimed, or a
//! patient who opted out are refused, each audited. Emergency access with a
//! self-claimed relationship opens an encounter: the record arrives, the
//! paramedic's privacy officer has both alerts, the patient's access log
//! names the paramedic, a note written during the encounter reaches the
//! server, and closing the encounter makes the tablet forget the patient.
//! A nurse who finds a patient with permission records it before viewing.
//! Offline, only what is already on the device can be opened.
#![allow(clippy::unwrap_used)]

use scr_core::NhsNumber;
use scr_core::access::{AccessRequest, RequestedBasis};
use scr_core::access::{AlertReason, AlertType, DenyReason};
use scr_core::engine::EngineError;
use scr_core::fixtures::{demographics, sample_entry, test_nhs_number};
use scr_core::protocol::{ENCOUNTER_FORMAT, EncounterBasis, EncounterRequest};
use scr_core::record::{Compartment, SharingChoice};
use scr_core::store::HoldReason;
use scr_core::sync::{EncounterError, request_encounter};
use scr_server::records::{FileEntry, RecordFile, load};

mod common;

use common::device::{Device, PARAMEDIC_ID, visit};
use common::site::{Site, site};

const BORN: &str = "1948-03-12";

/// Test patient `n`, with demographics, on nobody's list.
fn load_unlisted(store: &scr_core::Store, n: u32, sharing: SharingChoice) -> NhsNumber {
    let nhs = test_nhs_number(n);
    let entries = [demographics(nhs), sample_entry(0), sample_entry(3)]
        .into_iter()
        .map(|content| FileEntry {
            sensitive: false,
            content,
        })
        .collect();
    let file = RecordFile {
        nhs_number: nhs,
        sharing,
        include_sensitive: false,
        entries,
    };
    load(store, &file, "test").unwrap();
    nhs
}

fn emergency_claiming() -> AccessRequest {
    AccessRequest {
        basis: RequestedBasis::Emergency,
        self_claim: Some(AlertReason::SelfClaimEmergency),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paramedic_finds_a_patient_online_in_an_emergency_and_forgets_them_when_the_encounter_closes()
 {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = load_unlisted(&store, 61, SharingChoice::CoreAndAdditional);
    let opted_out = load_unlisted(&store, 62, SharingChoice::OptOut);

    let mut paramedic = Device::paramedic(&srv, dir.path()).await;
    paramedic.online().await;
    paramedic.sync().await;
    assert!(!paramedic.engine.holds(&patient).unwrap());
    let sync = paramedic.sync.as_ref().unwrap();

    // Refusals, each with its own typed error.
    let wrong_date = sync
        .open_encounter(&patient, "1948-03-13", emergency_claiming())
        .await;
    assert!(
        matches!(wrong_date, Err(EncounterError::NoMatch)),
        "{wrong_date:?}"
    );
    let unknown = sync
        .open_encounter(&test_nhs_number(63), BORN, emergency_claiming())
        .await;
    assert!(
        matches!(unknown, Err(EncounterError::NoMatch)),
        "{unknown:?}"
    );
    let unclaimed = sync
        .open_encounter(&patient, BORN, AccessRequest::emergency())
        .await;
    assert!(
        matches!(
            unclaimed,
            Err(EncounterError::Denied(DenyReason::NoRelationship))
        ),
        "{unclaimed:?}"
    );
    let withdrawn = sync
        .open_encounter(&opted_out, BORN, emergency_claiming())
        .await;
    assert!(
        matches!(
            withdrawn,
            Err(EncounterError::Denied(DenyReason::RecordUnavailable))
        ),
        "{withdrawn:?}"
    );
    assert!(!paramedic.engine.holds(&patient).unwrap());
    assert!(!paramedic.engine.holds(&opted_out).unwrap());

    // Emergency access, claiming a relationship: the encounter opens and
    // the record arrives.
    let encounter = sync
        .open_encounter(&patient, BORN, emergency_claiming())
        .await
        .unwrap()
        .expect("a new encounter");
    let reason = paramedic.engine.hold_reason(&patient).unwrap();
    assert!(
        matches!(&reason, Some(HoldReason::Encounter { encounter_id, .. }) if *encounter_id == encounter)
    );
    let released = paramedic
        .engine
        .view(&patient, AccessRequest::emergency())
        .unwrap();
    assert!(
        released
            .view
            .compartment(Compartment::Core)
            .is_some_and(|c| !c.entries.is_empty()),
        "the core record arrived"
    );
    // Inside the encounter she looks again; her tablet uploads its trail.
    paramedic
        .engine
        .view(&patient, AccessRequest::emergency())
        .unwrap();
    let me = scr_core::channel::hex_key(&paramedic.keys.public());
    let archived_views = || {
        srv.archive
            .events_about(&patient)
            .unwrap()
            .into_iter()
            .filter(|a| a.event.device == me && a.event.action == "view")
            .count()
    };
    for _ in 0..20 {
        if archived_views() >= 2 {
            break;
        }
        paramedic.sync().await;
    }
    assert_eq!(archived_views(), 2, "both views reached the archive");

    // The paramedic's privacy officer has both alerts, each once for the
    // encounter and the views inside it; the patient's log names the
    // paramedic and the basis.
    let alerts = srv.archive.alerts("RYA", false).unwrap();
    let emergency_alerts = alerts
        .iter()
        .filter(|a| a.event.patient == Some(patient))
        .filter(|a| {
            (a.alert.alert_type(), a.alert.reason())
                == (AlertType::AccessAlert, AlertReason::Emergency)
        })
        .count();
    assert_eq!(
        emergency_alerts, 1,
        "one alert for one encounter: {alerts:?}"
    );
    let about: Vec<_> = alerts
        .iter()
        .filter(|a| a.event.patient == Some(patient) && a.event.action == "open-encounter")
        .map(|a| (a.alert.alert_type(), a.alert.reason()))
        .collect();
    assert!(
        about.contains(&(
            AlertType::SelfClaimedRelationship,
            AlertReason::SelfClaimEmergency
        )),
        "{about:?}"
    );
    assert!(
        about.contains(&(AlertType::AccessAlert, AlertReason::Emergency)),
        "{about:?}"
    );
    let opened = srv
        .archive
        .events_about(&patient)
        .unwrap()
        .into_iter()
        .map(|a| a.event)
        .find(|e| {
            e.action == "open-encounter"
                && e.user == PARAMEDIC_ID
                && e.outcome == scr_core::audit::Outcome::Permit
        })
        .expect("the encounter is in the archive");
    assert_eq!(
        opened.basis.as_deref(),
        Some("self-claimed-relationship+emergency")
    );
    assert_eq!(opened.organisation, "RYA");
    // Each refusal is in the server's trail too.
    let trail = store.queued_audit_events().unwrap();
    let refusals = trail
        .iter()
        .filter(|e| e.user == PARAMEDIC_ID)
        .filter(|e| {
            e.action == "find-patient"
                || (e.action == "open-encounter"
                    && matches!(e.outcome, scr_core::audit::Outcome::Deny { .. }))
        })
        .count();
    assert_eq!(refusals, 4, "wrong date, unknown, unclaimed, opted out");

    // A note written during the encounter reaches the server before the
    // share ends; then the tablet forgets the patient.
    paramedic
        .engine
        .add_entry(&patient, visit("found collapsed; GCS 14"), false, None)
        .unwrap();
    sync.close_encounter(&encounter).await.unwrap();
    assert!(!paramedic.engine.holds(&patient).unwrap(), "forgotten");
    let on_server = store
        .view_of_compartment(&patient, Compartment::CareEvents)
        .unwrap()
        .unwrap();
    assert_eq!(on_server.entries.len(), 1, "the note reached the server");
    // Asked again, the tablet does not hold it (and audits the attempt,
    // with why).
    assert!(matches!(
        paramedic.engine.view(&patient, AccessRequest::emergency()),
        Err(EngineError::NotHeld)
    ));
    let last = paramedic.engine.audit_queue().unwrap().pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.patient, last.outcome),
        (
            "view",
            Some(patient),
            scr_core::audit::Outcome::Deny {
                reason: DenyReason::NoRelationship
            }
        )
    );
    // The next sync does not bring it back, and a closed encounter cannot
    // be closed again.
    paramedic.sync().await;
    paramedic.sync().await;
    assert!(!paramedic.engine.holds(&patient).unwrap());
    let sync = paramedic.sync.as_ref().unwrap();
    assert!(matches!(
        sync.close_encounter(&encounter).await,
        Err(EncounterError::Server(_))
    ));
    let forget = paramedic
        .engine
        .audit_queue()
        .unwrap()
        .into_iter()
        .chain(
            srv.archive
                .events_about(&patient)
                .unwrap()
                .into_iter()
                .map(|a| a.event),
        )
        .any(|e| e.action == "forget" && e.detail.as_deref() == Some("encounter-ended"));
    assert!(forget, "the forgetting is audited");

    // Offline: nothing to ask, so only what is on the device opens.
    let url = format!("ws://{}/sync", "127.0.0.1:9");
    let offline = request_encounter(
        &url,
        &paramedic.keys,
        &srv.server_key,
        &EncounterRequest::Open {
            format: ENCOUNTER_FORMAT,
            nhs_number: patient,
            date_of_birth: BORN.into(),
            basis: EncounterBasis::Emergency,
            self_claim: Some(AlertReason::SelfClaimEmergency),
        },
    )
    .await;
    assert!(matches!(offline, Err(EncounterError::Offline(_))));
    paramedic.offline().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurse_who_finds_a_patient_with_permission_records_it_before_viewing() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = load_unlisted(&store, 64, SharingChoice::CoreOnly);
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.sync().await;
    let sync = nurse.sync.as_ref().unwrap();
    let claimed = AccessRequest {
        basis: RequestedBasis::Permission,
        self_claim: Some(AlertReason::Other),
    };
    let encounter = sync
        .open_encounter(&patient, BORN, claimed)
        .await
        .unwrap()
        .expect("a new encounter");
    // Permission is asked on the device, and recorded, before the view.
    assert!(matches!(
        nurse
            .engine
            .view(&patient, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::PermissionNeeded))
    ));
    nurse
        .engine
        .record_permission(&patient, false, true)
        .unwrap();
    let released = nurse
        .engine
        .view(&patient, AccessRequest::with_permission())
        .unwrap();
    assert!(released.view.compartment(Compartment::Core).is_some());
    // Only a self-claim alert: permission was given.
    let alerts = srv.archive.alerts("RX1", false).unwrap();
    let kinds: Vec<_> = alerts
        .iter()
        .filter(|a| a.event.patient == Some(patient))
        .map(|a| a.alert.alert_type())
        .collect();
    assert_eq!(kinds, [AlertType::SelfClaimedRelationship]);
    // A second find while the encounter is open needs no new one.
    assert_eq!(
        sync.open_encounter(&patient, BORN, claimed).await.unwrap(),
        None
    );
    sync.close_encounter(&encounter).await.unwrap();
    assert!(!nurse.engine.holds(&patient).unwrap());
    // The recorded permission reached the record on the server.
    let permissions = store
        .view_of_compartment(&patient, Compartment::Permissions)
        .unwrap()
        .unwrap();
    assert!(
        permissions
            .entries
            .iter()
            .flat_map(|e| e.heads())
            .any(|v| matches!(
                v.content,
                scr_core::record::EntryContent::PermissionToView { granted: true, .. }
            ))
    );
    nurse.offline().await;
    srv.shutdown().await;
}
