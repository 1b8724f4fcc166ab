//! The patient: sees their own record, adds a preference, chooses what is
//! shared and changes their mind, sees who looked, and hides the record.

use scr_core::access::AccessRequest;
use scr_core::engine::EngineError;
use scr_core::fixtures::sample_entry;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, EntryContent, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_server::demo::site::{nurse, visit_note};

use crate::{
    CORE_ONLY, SHARED, archived, holds, patient_of, phone, site, tablet, uploaded, with_permission,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_sees_everything_adds_a_preference_and_changes_their_mind() {
    let (_dir, site) = site().await;
    let nhs = patient_of(&site, 11, &nurse(), RelationshipKind::Caseload);
    let jo = tablet(&site, "jo", DeviceClass::NurseTablet, &nurse()).await;
    holds(&jo, &nhs, &SHARED).await;

    let me = phone(&site, nhs).await;
    holds(&me, &nhs, &Compartment::ALL).await;
    let mine = me.engine().unwrap();
    let own = mine.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert!(
        own.withheld.is_empty(),
        "withheld from the patient: {:?}",
        own.withheld
    );
    assert!(
        own.view
            .compartment(Compartment::Sensitive)
            .is_some_and(|c| !c.entries.is_empty()),
        "the patient sees their sensitive items"
    );

    // A preference: it reaches the nurse's tablet.
    let wheelchair = mine.add_entry(&nhs, sample_entry(9), false, None).unwrap();
    assert!(matches!(
        wheelchair.content,
        EntryContent::Preference { .. }
    ));
    uploaded(&me).await;
    // The patient agrees to Jo viewing, now and at future visits.
    jo.engine()
        .unwrap()
        .record_permission(&nhs, true, true)
        .unwrap();
    let seen = jo
        .sync_until(|a| {
            a.engine()
                .unwrap()
                .view(&nhs, with_permission())
                .is_ok_and(|v| v.view.entry(wheelchair.entry_id).is_some())
        })
        .await
        .unwrap();
    assert!(seen, "the preference reached the nurse's tablet");

    // Core only: the tablet forgets additional information and care events.
    mine.set_patient_choices(&nhs, SharingChoice::CoreOnly, false)
        .unwrap();
    me.sync_once().await.unwrap();
    holds(&jo, &nhs, &CORE_ONLY).await;
    let core = jo.engine().unwrap().view(&nhs, with_permission()).unwrap();
    assert!(core.view.compartment(Compartment::Additional).is_none());
    assert!(core.view.entry(wheelchair.entry_id).is_some());

    // They change their mind: the tablet receives it all again.
    mine.set_patient_choices(&nhs, SharingChoice::CoreAndAdditional, false)
        .unwrap();
    me.sync_once().await.unwrap();
    holds(&jo, &nhs, &SHARED).await;

    // The trail: both choices and the preference, on the server, once each.
    uploaded(&me).await;
    let trail = archived(&site, &me, &nhs);
    let choices = trail.iter().filter(|e| e.action == "change-choice").count();
    assert_eq!(choices, 2, "{trail:#?}");
    assert_eq!(trail.iter().filter(|e| e.action == "add-entry").count(), 1);
    jo.device.stop_sync().await;
    me.device.stop_sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_sees_who_looked_and_hiding_the_record_takes_it_off_every_tablet() {
    let (_dir, site) = site().await;
    let nhs = patient_of(&site, 12, &nurse(), RelationshipKind::Caseload);
    let jo = tablet(&site, "jo", DeviceClass::NurseTablet, &nurse()).await;
    holds(&jo, &nhs, &SHARED).await;
    let engine = jo.engine().unwrap();
    engine.record_permission(&nhs, false, true).unwrap();
    let view = engine.view(&nhs, with_permission()).unwrap();
    engine
        .add_entry(&nhs, visit_note("home", "Bloods taken."), false, None)
        .unwrap();
    uploaded(&jo).await;

    let me = phone(&site, nhs).await;
    holds(&me, &nhs, &Compartment::ALL).await;
    let log = me
        .device
        .with_sync(async |s| s.access_log(&nhs).await)
        .await
        .unwrap()
        .unwrap();
    let jo_viewed: Vec<_> = log
        .iter()
        .filter(|e| e.action == "view" && e.user_name.as_deref() == Some("Jo Nurse"))
        .collect();
    assert_eq!(jo_viewed.len(), 1, "{log:#?}");
    assert_eq!(
        jo_viewed[0].id, view.audit.id,
        "the same event, device and server"
    );
    assert_eq!(jo_viewed[0].basis.as_deref(), Some("permission"));
    assert_eq!(jo_viewed[0].organisation, "RX1");
    assert!(
        log.iter()
            .any(|e| e.action == "add-entry" && e.user_name.as_deref() == Some("Jo Nurse"))
    );

    // Hidden: no staff tablet keeps the record, and a view is refused.
    me.engine().unwrap().hide(&nhs).unwrap();
    me.sync_once().await.unwrap();
    let gone = jo.sync_until(|a| a.held(&nhs).is_empty()).await.unwrap();
    assert!(gone, "still held: {:?}", jo.held(&nhs));
    assert!(matches!(
        engine.view(&nhs, with_permission()),
        Err(EngineError::Denied(_) | EngineError::NotHeld)
    ));
    // The phone still has the whole record.
    assert_eq!(me.held(&nhs), Compartment::ALL);
    jo.device.stop_sync().await;
    me.device.stop_sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passcode_on_the_phone_is_refused() {
    let (_dir, site) = site().await;
    let nhs = site
        .load_patient(13, SharingChoice::CoreAndAdditional)
        .unwrap();
    let app = site
        .patient_phone("phone", nhs, "tulip-2468")
        .await
        .unwrap();
    let refused = app.device.login("patient", "", "tulip-0000").await;
    assert!(
        matches!(refused, Err(scr_core::device::DeviceError::Refused(_))),
        "{refused:?}"
    );
    assert!(app.device.engine().is_err(), "no engine without a login");
    app.device.login("patient", "", "tulip-2468").await.unwrap();
}
