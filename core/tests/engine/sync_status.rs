//! Each held record's sync status: whether it has changes the server has
//! not confirmed, when the server last confirmed it (kept across a
//! restart), and a watch that moves whenever either may have changed.

use scr_core::fixtures::sample_entry;
use scr_core::grant::RelationshipKind;
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

use crate::support::{HOUR, World, nurse};

#[test]
fn each_record_says_whether_the_server_has_its_changes_and_when_it_confirmed_them() {
    let w = World::new();
    let (a, ea) = w.patient(30);
    let (b, eb) = w.patient(31);
    let path = w.dir.path().join("nurse-7.db");
    let tablet = w.engine_at(&path, "nurse-7", DeviceClass::NurseTablet);
    for (nhs, exports) in [(a, &ea), (b, &eb)] {
        tablet
            .receive_patient(&nhs, exports, HoldReason::Caseload)
            .unwrap();
    }
    let both = [
        (a, RelationshipKind::Caseload),
        (b, RelationshipKind::Caseload),
    ];
    tablet
        .login_online(&w.grant("nurse-7", nurse(), &both), "1357")
        .unwrap();
    let mut watch = tablet.watch_sync_statuses();
    let statuses = tablet.record_sync_statuses().unwrap();
    assert_eq!(statuses.len(), 2);
    assert!(
        statuses
            .iter()
            .all(|s| !s.unsent && s.last_confirmed_ms.is_none())
    );

    // A visit note written here: unsent, and the watch moves.
    watch.borrow_and_update();
    tablet.add_entry(&a, sample_entry(7), false, None).unwrap();
    assert!(watch.has_changed().unwrap());
    let of = |nhs| {
        tablet
            .record_sync_statuses()
            .unwrap()
            .into_iter()
            .find(|s| s.nhs_number == nhs)
            .unwrap()
    };
    assert!(of(a).unsent);
    assert!(!of(b).unsent);

    // The server confirms it an hour later.
    w.clock.advance(HOUR);
    watch.borrow_and_update();
    tablet.confirm_sent(&a).unwrap();
    tablet.persist_confirmed().unwrap();
    assert!(watch.has_changed().unwrap());
    // An hour idle locked the tablet: no list of patients until she
    // unlocks it (sync confirmed in the background meanwhile).
    assert!(tablet.record_sync_statuses().is_err());
    tablet.unlock("1357").unwrap();
    let confirmed_at = w.clock_now();
    assert!(!of(a).unsent);
    assert_eq!(of(a).last_confirmed_ms, Some(confirmed_at));
    assert_eq!(of(b).last_confirmed_ms, None);
    drop(tablet);

    // After a restart both are as they were (once unlocked: the list
    // names patients, so a locked tablet gives none).
    let tablet = w.engine_at(&path, "nurse-7", DeviceClass::NurseTablet);
    assert!(tablet.record_sync_statuses().is_err(), "locked: no list");
    tablet.unlock("1357").unwrap();
    let a_now = tablet
        .record_sync_statuses()
        .unwrap()
        .into_iter()
        .find(|s| s.nhs_number == a)
        .unwrap();
    assert!(!a_now.unsent);
    assert_eq!(a_now.last_confirmed_ms, Some(confirmed_at));

    // Forgotten: gone from the statuses, and the watch moves.
    let mut watch = tablet.watch_sync_statuses();
    watch.borrow_and_update();
    assert!(tablet.forget(&a, "left-caseload").unwrap());
    assert!(watch.has_changed().unwrap());
    let left: Vec<_> = tablet
        .record_sync_statuses()
        .unwrap()
        .into_iter()
        .map(|s| s.nhs_number)
        .collect();
    assert_eq!(left, vec![b]);
}
