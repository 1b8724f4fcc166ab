//! A lost tablet: without its keystore's key the store opens to nothing;
//! with the key but not the passcode, guessing locks it out and it forgets
//! its patients; and once an administrator revokes it, the next time it
//! finds signal it hands over its trail and wipes itself.

use std::time::Duration;

use scr_core::device::{Device, DeviceError, DeviceSettings};
use scr_core::engine::EngineError;
use scr_core::grant::RelationshipKind;
use scr_core::retention::DeviceClass;
use scr_server::demo::site::{Keystore, nurse};

use crate::{SHARED, archived, holds, patient_of, site, tablet, with_permission};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finder_without_the_key_or_the_passcode_gets_nothing() {
    let (_dir, site) = site().await;
    let nhs = patient_of(&site, 51, &nurse(), RelationshipKind::Caseload);
    let jo = tablet(&site, "jo", DeviceClass::NurseTablet, &nurse()).await;
    holds(&jo, &nhs, &SHARED).await;
    jo.device.stop_sync().await;
    jo.engine().unwrap().lock().unwrap();
    let dir = jo.device.dir().to_owned();
    let jo = jo.reopen().unwrap();

    // Another key (the finder has the flash chip, not the keystore): no
    // data, a typed error, and the file is left as it was.
    let stolen = Device::open(
        &dir,
        &Keystore::random().unwrap(),
        DeviceSettings::new(DeviceClass::NurseTablet),
        std::sync::Arc::new(scr_core::clock::SystemClock),
    );
    assert!(
        matches!(stolen, Err(DeviceError::Store(_))),
        "{:?}",
        stolen.err()
    );

    // The right key but wrong passcodes: locked out after the limit, and
    // the caseload is forgotten.
    let engine = jo.engine().unwrap();
    let mut tries = 0;
    let locked_out = loop {
        tries += 1;
        match engine.unlock("0000") {
            Err(EngineError::WrongPasscode { .. }) => continue,
            Err(EngineError::LockedOut) => break true,
            other => panic!("unexpected: {:?}", other.err()),
        }
    };
    assert!(locked_out && tries > 1);
    assert!(!engine.holds(&nhs).unwrap(), "the caseload was forgotten");
    assert!(matches!(
        engine.unlock(nurse().passcode),
        Err(EngineError::LockedOut)
    ));
    let trail = engine.audit_queue().unwrap();
    assert!(trail.iter().any(|e| e.action == "forget"), "{trail:#?}");
    assert!(matches!(engine.verify_audit_chain(), Ok(Ok(()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tablet_hands_over_its_trail_and_wipes_itself_when_it_finds_signal() {
    let (_dir, site) = site().await;
    let nhs = patient_of(&site, 52, &nurse(), RelationshipKind::Caseload);
    let jo = tablet(&site, "jo", DeviceClass::NurseTablet, &nurse()).await;
    holds(&jo, &nhs, &SHARED).await;
    jo.device.stop_sync().await;
    // Lost after a view nobody has uploaded yet.
    let engine = jo.engine().unwrap();
    engine.record_permission(&nhs, false, true).unwrap();
    let view = engine.view(&nhs, with_permission()).unwrap();

    let key = jo.device.device_key().unwrap();
    let key: [u8; 32] = scr_core::channel::from_hex(&key)
        .unwrap()
        .try_into()
        .unwrap();
    assert!(site.server.directory.revoke(&key).unwrap());

    jo.device.start_sync().await.unwrap();
    let wiped = tokio::time::timeout(Duration::from_secs(30), async {
        while engine.holds(&nhs).unwrap() || engine.audit_queue_len().unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(wiped.is_ok(), "the revoked tablet did not wipe itself");
    let trail = archived(&site, &jo, &nhs);
    assert!(
        trail.iter().any(|e| e.id == view.audit.id),
        "the view before the loss"
    );
    assert!(
        trail
            .iter()
            .any(|e| e.action == "forget" && e.detail.as_deref() == Some("remote-wipe")),
        "{trail:#?}"
    );
    // Its user cannot log in on it again.
    assert!(
        jo.device
            .login(nurse().id(), "CARD-0102", nurse().passcode)
            .await
            .is_err()
    );
    jo.device.stop_sync().await;
}
