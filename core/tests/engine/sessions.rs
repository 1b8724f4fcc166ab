//! Signing in: grants verified offline, unlock and lock-out, idle timeout
//! and expiry.

use scr_core::access::AccessRequest;
use scr_core::engine::EngineError;
use scr_core::grant::{GrantError, GrantSigner, RelationshipKind, RoleProfileGrant};
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

use crate::support::{HOUR, MIN, T0, World, incident, nurse, paramedic};

#[test]
fn five_wrong_passcodes_lock_out_until_online_login_and_forget_patients() {
    let w = World::new();
    let (nhs, exports) = w.patient(4);
    let tablet = w.engine("amb-2", DeviceClass::AmbulanceTablet);
    tablet
        .receive_patient(
            &nhs,
            &exports,
            HoldReason::Incident {
                incident_id: "I".into(),
                closed_at_ms: None,
            },
        )
        .unwrap();
    let grant = w.grant("amb-2", paramedic(), &[(nhs, incident("I"))]);
    tablet.login_online(&grant, "2468").unwrap();
    tablet.view(&nhs, AccessRequest::emergency()).unwrap();
    tablet.lock().unwrap();
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::emergency()),
        Err(EngineError::Locked)
    ));
    for remaining in (1..5).rev() {
        assert!(
            matches!(tablet.unlock("0000"), Err(EngineError::WrongPasscode { remaining: r }) if r == remaining)
        );
    }
    assert!(matches!(tablet.unlock("0000"), Err(EngineError::LockedOut)));
    // The right passcode no longer helps, even after a restart.
    assert!(matches!(tablet.unlock("2468"), Err(EngineError::LockedOut)));
    let path = tablet.path().to_path_buf();
    drop(tablet);
    let tablet = w.engine_at(&path, "amb-2", DeviceClass::AmbulanceTablet);
    assert!(matches!(tablet.unlock("2468"), Err(EngineError::LockedOut)));
    // Lock-out forgot the patient but kept the trail.
    assert!(!tablet.holds(&nhs).unwrap());
    let events = tablet.audit_queue().unwrap();
    assert!(events.iter().any(|e| e.action == "lock-out"));
    assert!(
        events
            .iter()
            .any(|e| e.action == "forget" && e.patient == Some(nhs))
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == "view" && e.patient == Some(nhs))
    );
    assert_eq!(tablet.verify_audit_chain().unwrap(), Ok(()));
    // An online login clears the lock-out.
    tablet.login_online(&grant, "2468").unwrap();
    tablet.lock().unwrap();
    tablet.unlock("2468").unwrap();
}

#[test]
fn idle_sessions_lock_and_expired_grants_need_an_online_login() {
    let w = World::new();
    let (nhs, exports) = w.patient(5);
    let tablet = w.engine("nurse-2", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&nhs, &exports, HoldReason::Caseload)
        .unwrap();
    let grant = w.grant("nurse-2", nurse(), &[(nhs, RelationshipKind::Caseload)]);
    tablet.login_online(&grant, "1357").unwrap();
    tablet.record_permission(&nhs, true, true).unwrap();
    w.clock.advance(4 * MIN);
    assert!(tablet.view(&nhs, AccessRequest::with_permission()).is_ok());
    w.clock.advance(6 * MIN);
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Locked)
    ));
    tablet.unlock("1357").unwrap();
    assert!(tablet.view(&nhs, AccessRequest::with_permission()).is_ok());

    // The shift ends: the grant expires, offline unlock cannot revive it.
    w.clock.advance(12 * HOUR);
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Locked)
    ));
    assert!(matches!(
        tablet.unlock("1357"),
        Err(EngineError::Grant(GrantError::Expired))
    ));
    // Winding the clock back is refused, not a way back in.
    w.clock.advance(-12 * HOUR);
    assert!(matches!(
        tablet.unlock("1357"),
        Err(EngineError::ClockWoundBack)
    ));
}

/// Views every four minutes for `minutes`, the user winding the clock back
/// four minutes after each: the wall clock never moves, and no step back is
/// big enough to count as winding the clock back. Whether every view was
/// allowed.
fn wound_back(
    w: &World,
    tablet: &scr_core::engine::Engine,
    nhs: &scr_core::NhsNumber,
    minutes: i64,
) -> bool {
    (0..minutes / 4).all(|_| {
        w.clock.advance(4 * MIN);
        w.clock.advance(-4 * MIN);
        tablet.view(nhs, AccessRequest::with_permission()).is_ok()
    })
}

#[test]
fn a_clock_wound_back_a_little_at_a_time_does_not_keep_a_grant_alive() {
    let w = World::new();
    let (nhs, exports) = w.patient(6);
    let tablet = w.engine("nurse-3", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&nhs, &exports, HoldReason::Caseload)
        .unwrap();
    let grant = w.grant("nurse-3", nurse(), &[(nhs, RelationshipKind::Caseload)]);
    tablet.login_online(&grant, "1357").unwrap();
    tablet.record_permission(&nhs, true, true).unwrap();
    // The wall clock never moves, so the grant never expires by it.
    assert!(wound_back(&w, &tablet, &nhs, 6 * 60), "six hours of use");
    // The app is killed and started again: the time in use is kept.
    let path = tablet.path().to_path_buf();
    drop(tablet);
    w.clock.restart();
    let tablet = w.engine_at(&path, "nurse-3", DeviceClass::NurseTablet);
    tablet.unlock("1357").unwrap();
    assert!(
        wound_back(&w, &tablet, &nhs, 5 * 60 + 52),
        "nearly twelve hours of use"
    );
    assert!(
        !wound_back(&w, &tablet, &nhs, 12),
        "the shift is over by the time in use"
    );
    assert!(matches!(
        tablet.unlock("1357"),
        Err(EngineError::Grant(GrantError::Expired))
    ));
    // A new online login starts a new grant's time.
    let next = w.grant("nurse-3", nurse(), &[(nhs, RelationshipKind::Caseload)]);
    tablet.login_online(&next, "1357").unwrap();
    assert!(tablet.view(&nhs, AccessRequest::with_permission()).is_ok());
}

#[test]
fn a_logged_out_session_needs_an_online_login_and_the_logout_is_audited() {
    let w = World::new();
    let (nhs, exports) = w.patient(7);
    let tablet = w.engine("nurse-4", DeviceClass::NurseTablet);
    tablet
        .receive_patient(&nhs, &exports, HoldReason::Caseload)
        .unwrap();
    let grant = w.grant("nurse-4", nurse(), &[(nhs, RelationshipKind::Caseload)]);
    tablet.login_online(&grant, "1357").unwrap();
    tablet.logout().unwrap();
    assert!(matches!(
        tablet.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Locked)
    ));
    assert!(
        matches!(tablet.unlock("1357"), Err(EngineError::Locked)),
        "the passcode no longer unlocks"
    );
    let out = tablet.audit_queue().unwrap().pop().unwrap();
    assert_eq!(
        (out.action.as_str(), out.role.as_str()),
        ("logout", "R0050")
    );
    assert_ne!(out.user, "device", "under the user who logged out");
    tablet.login_online(&grant, "1357").unwrap();
    tablet.record_permission(&nhs, true, true).unwrap();
    assert!(tablet.view(&nhs, AccessRequest::with_permission()).is_ok());
}

#[test]
fn bad_grants_are_refused_with_distinct_errors_and_audited() {
    let w = World::new();
    let tablet = w.engine("amb-3", DeviceClass::AmbulanceTablet);
    let wrong_device = w.grant("amb-4", paramedic(), &[]);
    assert!(matches!(
        tablet.login_online(&wrong_device, "2468"),
        Err(EngineError::Grant(GrantError::WrongDevice))
    ));
    let forged = GrantSigner::from_seed([8; 32]).sign(&RoleProfileGrant {
        grant_id: "x".into(),
        principal: paramedic(),
        device_id: "amb-3".into(),
        issued_at_ms: T0,
        expires_at_ms: T0 + HOUR,
        relationships: vec![],
    });
    assert!(matches!(
        tablet.login_online(&forged, "2468"),
        Err(EngineError::Grant(GrantError::UnknownSigner))
    ));
    let mut tampered = w.grant("amb-3", paramedic(), &[]);
    let i = tampered.len() / 2;
    tampered[i] ^= 1;
    assert!(matches!(
        tablet.login_online(&tampered, "2468"),
        Err(EngineError::Grant(_))
    ));
    let events = tablet.audit_queue().unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "login").count(), 3);
    assert!(tablet.session().unwrap().is_none());
}

#[test]
fn asking_who_is_signed_in_does_not_keep_a_session_alive_and_locked_out_tries_are_audited() {
    let w = World::new();
    let tablet = w.engine("nurse-10", DeviceClass::NurseTablet);
    tablet
        .login_online(&w.grant("nurse-10", nurse(), &[]), "1357")
        .unwrap();
    for _ in 0..10 {
        w.clock.advance(MIN);
        assert!(tablet.session().unwrap().is_some() || w.clock_now() > T0 + 5 * MIN);
    }
    assert!(
        tablet.session().unwrap().is_none(),
        "idle for 10 minutes: locked"
    );
    for _ in 0..5 {
        let _ = tablet.unlock("0000");
    }
    assert!(matches!(tablet.unlock("1357"), Err(EngineError::LockedOut)));
    let refused = tablet
        .audit_queue()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "unlock-refused")
        .count();
    assert_eq!(refused, 1);
}
