//! The engine on a device: grants verified offline, unlock and lock-out,
//! the three access tests and patient choices applied, every decision
//! audited before anything is released, and retention forgetting patients.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use scr_core::access::{AccessRequest, RequestedBasis};
use scr_core::access::{AlertReason, DenyReason};
use scr_core::audit::Outcome;
use scr_core::clock::ManualClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig, EngineError};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::grant::{
    GrantError, GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::record::{Compartment, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;
use scr_core::{CompartmentExport, NhsNumber, Store};

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

struct World {
    dir: tempfile::TempDir,
    signer: GrantSigner,
    clock: ManualClock,
    origin: Store,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let origin = Store::open(dir.path().join("origin.db"), &keys(9)).unwrap();
        Self {
            dir,
            signer: GrantSigner::from_seed([7; 32]),
            clock: ManualClock::new(T0),
            origin,
        }
    }

    /// A patient at the GP practice with core, additional and sensitive items.
    fn patient(&self, n: u32) -> (NhsNumber, Vec<CompartmentExport>) {
        let nhs = test_nhs_number(n);
        let mut rec = self.origin.create_record(&nhs, &Compartment::ALL).unwrap();
        rec.add_entry(sample_entry(0), false, gp(), None).unwrap();
        rec.add_entry(sample_entry(3), false, gp(), None).unwrap();
        rec.add_entry(sample_entry(7), false, gp(), None).unwrap();
        rec.add_entry(sample_entry(3), true, gp(), None).unwrap();
        (nhs, rec.export())
    }

    fn engine(&self, name: &str, class: DeviceClass) -> Engine {
        self.engine_at(&self.dir.path().join(format!("{name}.db")), name, class)
    }

    fn engine_at(&self, path: &Path, name: &str, class: DeviceClass) -> Engine {
        let config = EngineConfig::new(name, class, self.signer.public_key());
        Engine::open(path, &keys(1), config, Arc::new(self.clock.clone())).unwrap()
    }

    fn grant(
        &self,
        device: &str,
        principal: GrantPrincipal,
        patients: &[(NhsNumber, RelationshipKind)],
    ) -> Vec<u8> {
        self.signer.sign(&RoleProfileGrant {
            grant_id: format!("grant-{device}-{}", self.clock_now()),
            principal,
            device_id: device.into(),
            issued_at_ms: self.clock_now(),
            expires_at_ms: self.clock_now() + 12 * HOUR,
            relationships: patients
                .iter()
                .map(|(n, k)| GrantRelationship {
                    nhs_number: *n,
                    kind: k.clone(),
                })
                .collect(),
        })
    }

    fn clock_now(&self) -> i64 {
        use scr_core::clock::Clock;
        self.clock.now_ms()
    }
}

fn keys(b: u8) -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes([b; 32]))
}

fn staff(job_role: &str, org: &str, activities: &[&str], privacy_officer: bool) -> GrantPrincipal {
    GrantPrincipal::Staff {
        user_id: format!("5550000{job_role}"),
        display_name: "Test User".into(),
        job_role: job_role.into(),
        job_role_name: "Role".into(),
        organisation: org.into(),
        activities: activities.iter().map(|a| (*a).to_owned()).collect(),
        privacy_officer,
    }
}

fn paramedic() -> GrantPrincipal {
    staff("R1290", "RYA", &["B0264", "B0370", "B0168", "B0380"], false)
}
fn nurse() -> GrantPrincipal {
    staff("R0050", "RX1", &["B0264", "B0370", "B0380"], false)
}
fn gp_principal() -> GrantPrincipal {
    staff(
        "R0260",
        "A99001",
        &["B0264", "B0360", "B0370", "B0380", "B8029", "B1611"],
        false,
    )
}
fn incident(id: &str) -> RelationshipKind {
    RelationshipKind::Incident {
        incident_id: id.into(),
    }
}

fn compartments(v: &scr_core::engine::ReleasedView) -> Vec<Compartment> {
    v.view.compartments.iter().map(|c| c.compartment).collect()
}

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
            Compartment::Governance
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
            Compartment::Governance
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
            Compartment::Governance
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
            Compartment::Governance
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

/// Everything `from` holds for the patient, as exports.
fn tablet_exports(from: &Engine, nhs: &NhsNumber) -> Vec<CompartmentExport> {
    from.export_for_sync(nhs).unwrap()
}

/// Stands in for sync until the server exists.
fn merge_into(into: &Engine, nhs: &NhsNumber, from: &Engine) {
    into.merge_from_sync(nhs, &tablet_exports(from, nhs))
        .unwrap();
}

/// The record as stored, read through a second handle on the file (what
/// an attacker with the key, or a test, would see).
fn stored_view(engine: &Engine, nhs: &NhsNumber) -> scr_core::RecordView {
    Store::open(engine.path(), &keys(1))
        .unwrap()
        .open_record(nhs)
        .unwrap()
        .view()
}

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
fn the_audit_queue_releases_only_what_was_acknowledged_and_survives_restart() {
    let w = World::new();
    let (nhs, exports) = w.patient(13);
    let path = w.dir.path().join("nurse-6.db");
    {
        let tablet = w.engine_at(&path, "nurse-6", DeviceClass::NurseTablet);
        tablet
            .receive_patient(&nhs, &exports, HoldReason::Caseload)
            .unwrap();
        tablet
            .login_online(
                &w.grant("nurse-6", nurse(), &[(nhs, RelationshipKind::Caseload)]),
                "1357",
            )
            .unwrap();
        tablet.record_permission(&nhs, true, true).unwrap();
        for _ in 0..5 {
            tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
        }
    }
    let tablet = w.engine_at(&path, "nurse-6", DeviceClass::NurseTablet);
    let events = tablet.audit_queue().unwrap();
    assert_eq!(events.len(), 8);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(tablet.acknowledge_audit(3).unwrap(), 3);
    assert_eq!(tablet.verify_audit_chain().unwrap(), Ok(()));
    tablet.unlock("1357").unwrap();
    let next = tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert_eq!(
        next.audit.seq, 10,
        "an unlock (9) and this view (10): the counter never restarts"
    );
    assert_eq!(tablet.audit_queue().unwrap().first().unwrap().seq, 4);
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
