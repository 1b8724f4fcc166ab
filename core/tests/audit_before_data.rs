//! Property: no sequence of engine calls returns record data without a
//! committed audit record for exactly that release. Checked through a
//! second, independent connection to the store file.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use scr_core::Store;
use scr_core::access::AlertReason;
use scr_core::access::{AccessRequest, RequestedBasis};
use scr_core::audit::Outcome;
use scr_core::clock::ManualClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig, EngineError};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::record::Compartment;
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

#[derive(Clone, Debug)]
enum Op {
    View {
        patient: usize,
        basis: u8,
        self_claim: bool,
    },
    RecordPermission {
        patient: usize,
        granted: bool,
    },
    AddVisit {
        patient: usize,
    },
    Lock,
    Unlock {
        right: bool,
    },
    Login,
    Wait {
        minutes: i64,
    },
    Forget {
        patient: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..3u8, any::<bool>()).prop_map(|(patient, basis, self_claim)| Op::View { patient, basis, self_claim }),
        2 => (0..2usize, any::<bool>()).prop_map(|(patient, granted)| Op::RecordPermission { patient, granted }),
        2 => (0..2usize).prop_map(|patient| Op::AddVisit { patient }),
        1 => Just(Op::Lock),
        2 => any::<bool>().prop_map(|right| Op::Unlock { right }),
        1 => Just(Op::Login),
        1 => (1..8i64).prop_map(|minutes| Op::Wait { minutes }),
        1 => (0..2usize).prop_map(|patient| Op::Forget { patient }),
    ]
}

fn keys() -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes([1; 32]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn data_is_released_only_after_its_audit_record_commits(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_800_000_000_000);
        let signer = GrantSigner::from_seed([7; 32]);
        let origin = Store::open(dir.path().join("origin.db"), &keys()).unwrap();
        let patients = [test_nhs_number(1), test_nhs_number(2)];
        let path = dir.path().join("tablet.db");
        let config = EngineConfig::new("amb-1", DeviceClass::AmbulanceTablet, signer.public_key());
        let engine = Engine::open(&path, &keys(), config, Arc::new(clock.clone())).unwrap();
        for nhs in &patients {
            let mut rec = origin.create_record(nhs, &Compartment::ALL).unwrap();
            rec.add_entry(sample_entry(0), false, gp(), None).unwrap();
            engine.receive_patient(nhs, &rec.export(), HoldReason::Incident { incident_id: "I".into(), closed_at_ms: None }).unwrap();
        }
        let grant = || {
            use scr_core::clock::Clock;
            signer.sign(&RoleProfileGrant {
                grant_id: "g".into(),
                principal: GrantPrincipal::Staff {
                    user_id: "u".into(), display_name: "d".into(), job_role: "R1290".into(), job_role_name: "Paramedic".into(),
                    organisation: "RYA".into(),
                    activities: ["B0264", "B0370", "B0168", "B0380"].map(String::from).to_vec(),
                    privacy_officer: false,
                },
                device_id: "amb-1".into(),
                issued_at_ms: clock.now_ms(),
                expires_at_ms: clock.now_ms() + 12 * 3_600_000,
                // Only the first patient is on the incident.
                relationships: vec![GrantRelationship { nhs_number: patients[0], kind: RelationshipKind::Incident { incident_id: "I".into() } }],
            })
        };
        engine.login_online(&grant(), "2468").unwrap();
        let observer = Store::open(&path, &keys()).unwrap();
        let mut unlocked = true;

        for op in ops {
            match op {
                Op::View { patient, basis, self_claim } => {
                    let basis = match basis {
                        0 => RequestedBasis::Permission,
                        1 => RequestedBasis::Emergency,
                        _ => RequestedBasis::LegalOverride(AlertReason::CourtOrder),
                    };
                    let access = AccessRequest { basis, self_claim: self_claim.then_some(AlertReason::SelfClaimEmergency) };
                    match engine.view(&patients[patient], access) {
                        Ok(released) => {
                            prop_assert!(unlocked);
                            let committed = observer.queued_audit_events().unwrap();
                            let event = committed.iter().find(|e| e.seq == released.audit.seq);
                            prop_assert!(event.is_some(), "released without a committed audit record");
                            let event = event.unwrap();
                            prop_assert_eq!(event, &released.audit);
                            prop_assert_eq!(event.outcome, Outcome::Permit);
                            prop_assert_eq!(event.patient, Some(patients[patient]));
                            let shown: Vec<Compartment> = released.view.compartments.iter().map(|c| c.compartment).collect();
                            prop_assert!(shown.iter().all(|c| event.compartments.contains(c)));
                        }
                        Err(EngineError::Locked) => unlocked = false,
                        Err(_) => {}
                    }
                }
                Op::RecordPermission { patient, granted } => { let _ = engine.record_permission(&patients[patient], false, granted); }
                Op::AddVisit { patient } => { let _ = engine.add_entry(&patients[patient], sample_entry(7), false, None); }
                Op::Lock => { engine.lock().unwrap(); unlocked = false; }
                Op::Unlock { right } => {
                    unlocked = engine.unlock(if right { "2468" } else { "0000" }).is_ok();
                }
                Op::Login => { unlocked = engine.login_online(&grant(), "2468").is_ok(); }
                Op::Wait { minutes } => clock.advance(minutes * 60_000),
                Op::Forget { patient } => { engine.forget(&patients[patient], "test").unwrap(); }
            }
        }
        prop_assert_eq!(observer.verify_audit_chain().unwrap(), Ok(()));
    }
}
