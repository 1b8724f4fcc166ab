//! The access decision alone, and a permitted view of a typical record
//! including the durable audit commit (WAL, synchronous=NORMAL).
//!
//! Run: `cargo bench -p scr-core --bench access`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use scr_core::Store;
use scr_core::access::AccessRequest;
use scr_core::access::{
    Action, PatientChoices, Principal, Relationship, Request, StaffRole, ViewBasis, decide,
};
use scr_core::clock::SystemClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig};
use scr_core::fixtures::{gp, now_ms, sample_entry, test_nhs_number};
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::record::{Compartment, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

fn decision(c: &mut Criterion) {
    let req = Request {
        principal: Principal::Staff(StaffRole {
            user_id: "555000000203".into(),
            job_role: "R1290".into(),
            organisation: "RYA".into(),
            activities: ["B0264", "B0370", "B0168", "B0380", "B1611"]
                .map(String::from)
                .to_vec(),
            privacy_officer: false,
        }),
        action: Action::View,
        relationship: Relationship::FromGrant,
        basis: ViewBasis::Emergency,
        choices: PatientChoices {
            sharing: SharingChoice::CoreAndAdditional,
            include_sensitive: true,
            hidden: false,
        },
    };
    c.bench_function("decide_emergency_view", |b| {
        b.iter(|| decide(black_box(&req)))
    });
}

fn permitted_view(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([1; 32]));
    let origin = Store::open(dir.path().join("origin.db"), &keys).unwrap();
    let nhs = test_nhs_number(1);
    let mut rec = origin.create_record(&nhs, &Compartment::ALL).unwrap();
    for i in 0..100 {
        rec.add_entry(sample_entry(i), i % 25 == 3, gp(), None)
            .unwrap();
    }
    let signer = GrantSigner::from_seed([7; 32]);
    let config = EngineConfig::new("nurse-1", DeviceClass::NurseTablet, signer.public_key());
    let engine = Engine::open(
        dir.path().join("tablet.db"),
        &keys,
        config,
        Arc::new(SystemClock),
    )
    .unwrap();
    engine
        .receive_patient(&nhs, &rec.export(), HoldReason::Caseload)
        .unwrap();
    let grant = signer.sign(&RoleProfileGrant {
        grant_id: "g".into(),
        principal: GrantPrincipal::Staff {
            user_id: "555000000102".into(),
            display_name: "Nurse".into(),
            job_role: "R0050".into(),
            job_role_name: "Nurse".into(),
            organisation: "RX1".into(),
            activities: ["B0264", "B0370", "B0380"].map(String::from).to_vec(),
            privacy_officer: false,
        },
        device_id: "nurse-1".into(),
        issued_at_ms: now_ms(),
        expires_at_ms: now_ms() + 12 * 3_600_000,
        relationships: vec![GrantRelationship {
            nhs_number: nhs,
            kind: RelationshipKind::Caseload,
        }],
    });
    engine.login_online(&grant, "1357").unwrap();
    engine.record_permission(&nhs, true, true).unwrap();
    let mut group = c.benchmark_group("permitted_view_typical_record");
    group.bench_function("decide_view_and_durable_audit_commit", |b| {
        b.iter(|| engine.view(&nhs, AccessRequest::with_permission()).unwrap())
    });
    group.bench_function("first_view_after_unlock_including_open", |b| {
        b.iter(|| {
            engine.reload(&nhs).unwrap();
            engine.view(&nhs, AccessRequest::with_permission()).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, decision, permitted_view);
criterion_main!(benches);
