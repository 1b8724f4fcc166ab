//! The privacy officer: reviews the alerts raised at their own trust (a
//! nurse's self-claimed relationship, a paramedic's emergency access),
//! closes each with an outcome, and every review is itself audited.

use std::time::Duration;

use scr_core::access::AlertReason;
use scr_core::access::{AccessRequest, RequestedBasis};
use scr_core::grant::RelationshipKind;
use scr_core::record::SharingChoice;
use scr_core::retention::DeviceClass;
use scr_server::archive::AlertOutcome;
use scr_server::demo::site::{
    ambulance_privacy_officer, community_privacy_officer, nurse, paramedic,
};

use crate::{BORN, SHARED, holds, patient_of, site, tablet, uploaded, with_permission};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trust_reviews_its_own_alerts_and_every_review_is_audited() {
    let (_dir, site) = site().await;
    let incident = RelationshipKind::Incident {
        incident_id: "INC-4".into(),
    };
    let sams_patient = patient_of(&site, 41, &paramedic(), incident);
    let stranger = site
        .load_patient(42, SharingChoice::CoreAndAdditional)
        .unwrap();
    let sam = tablet(&site, "sam", DeviceClass::AmbulanceTablet, &paramedic()).await;
    let jo = tablet(&site, "jo", DeviceClass::NurseTablet, &nurse()).await;
    holds(&sam, &sams_patient, &SHARED).await;

    // Sam: emergency access. Jo: a patient on no list of hers, found online
    // by claiming a relationship (alert type 1), viewed with permission.
    sam.engine()
        .unwrap()
        .view(&sams_patient, AccessRequest::emergency())
        .unwrap();
    let claimed = AccessRequest {
        basis: RequestedBasis::Permission,
        self_claim: Some(AlertReason::Other),
    };
    jo.device
        .with_sync(async |s| s.open_encounter(&stranger, BORN, claimed).await)
        .await
        .unwrap()
        .unwrap()
        .expect("an encounter");
    let je = jo.engine().unwrap();
    je.record_permission(&stranger, false, true).unwrap();
    je.view(&stranger, with_permission()).unwrap();
    uploaded(&sam).await;
    uploaded(&jo).await;

    // Each trust's officer sees its own, and only its own.
    let pat = ambulance_privacy_officer();
    let lee = community_privacy_officer();
    let rya = site.alerts(&pat).unwrap();
    let rx1 = site.alerts(&lee).unwrap();
    assert_eq!(rya.len(), 1, "{rya:#?}");
    assert_eq!(
        (rya[0].alert.alert_type().code(), rya[0].alert.reason()),
        (2, AlertReason::Emergency)
    );
    assert_eq!(rya[0].event.user, paramedic().id());
    assert_eq!(rx1.len(), 1, "{rx1:#?}");
    assert_eq!(rx1[0].alert.alert_type().code(), 1);
    assert_eq!(rx1[0].event.patient, Some(stranger));
    // A nurse is not an officer.
    assert!(site.alerts(&nurse()).is_err());
    // An officer cannot close another trust's alert.
    assert!(
        site.close_alert(&lee, rya[0].id, AlertOutcome::Justified)
            .is_err()
    );

    site.close_alert(&pat, rya[0].id, AlertOutcome::Justified)
        .unwrap();
    site.close_alert(&lee, rx1[0].id, AlertOutcome::Referred)
        .unwrap();
    assert!(site.alerts(&pat).unwrap().is_empty());
    assert!(site.alerts(&lee).unwrap().is_empty());

    // The reviews are in the archive against each patient, by the officer
    // (the server's own trail is archived within a second or so).
    for (officer, nhs) in [(&pat, sams_patient), (&lee, stranger)] {
        let mut found = false;
        for _ in 0..50 {
            let events = site.server.archive.events_about(&nhs).unwrap();
            found = ["open-alert", "close-alert"].iter().all(|action| {
                events
                    .iter()
                    .any(|a| a.event.user == officer.id() && a.event.action == *action)
            });
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(found, "{}'s review was not archived", officer.id());
    }
    sam.device.stop_sync().await;
    jo.device.stop_sync().await;
}
