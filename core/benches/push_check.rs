//! What the server's push check costs beside the merge it guards, side by
//! side on the same care-events document and the same incoming change (one
//! new visit note): samod's merge of the change (`merge`; with the change
//! then sealed and committed to the store, as the server's storage adapter
//! does: `merge_and_store`), the check as the
//! server runs it (`push_rules::check_changes` on the change's operations
//! against the document as held: `check_on_operations`), and the check it
//! falls back to when a change cannot be judged alone (a copy of the
//! document with the change applied, then the same rules on the changes
//! that made part of it: `push_rules::check_applied`, `fallback_applied`).
//!
//! Run: `cargo bench -p scr-core --bench push_check`
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use scr_core::Store;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, test_nhs_number};
use scr_core::grant::{GrantPrincipal, GrantRelationship, RelationshipKind, RoleProfileGrant};
use scr_core::push_rules::{PushLimits, check_applied, check_changes, check_push};
use scr_core::record::{
    Compartment, EntryContent, EntryId, EntryVersion, Provenance, VersionStatus,
};

fn note(i: usize) -> EntryContent {
    EntryContent::EncounterSummary {
        setting: "home visit".into(),
        occurred_at: "2026-12-03".into(),
        note: format!("visit {i}: dressing changed, wound healing well"),
    }
}

fn bench_with(c: &mut Criterion, notes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([1; 32]));
    let store = Store::open(dir.path().join("bench.db"), &keys).unwrap();
    let nhs = test_nhs_number(1);
    let mut rec = store
        .create_record(&nhs, &[Compartment::CareEvents])
        .unwrap();
    for i in 0..notes {
        rec.add_entry(note(i), false, gp(), None).unwrap();
    }
    let export = rec.export().pop().unwrap();
    let (doc_id, bytes) = (export.doc_id, export.bytes);
    let held = Automerge::load(&bytes).unwrap();
    let now = scr_core::clock::now_ms();
    let grant = RoleProfileGrant {
        grant_id: "g".into(),
        principal: GrantPrincipal::Staff {
            user_id: "555000000102".into(),
            display_name: "Jo".into(),
            job_role: "R0050".into(),
            job_role_name: "Nurse".into(),
            organisation: "RX1".into(),
            activities: vec!["B0264".into(), "B0370".into()],
            privacy_officer: false,
        },
        device_id: "tablet".into(),
        issued_at_ms: now - 3_600_000,
        expires_at_ms: now + 3_600_000,
        relationships: vec![GrantRelationship {
            nhs_number: nhs,
            kind: RelationshipKind::Caseload,
        }],
    };
    let (author_id, role, organisation) = grant.actor();
    let version = EntryVersion::new(
        EntryId::new(),
        vec![],
        VersionStatus::Current,
        note(notes),
        Provenance {
            author_id,
            role,
            organisation,
            device: "tablet".into(),
            recorded_at_ms: now,
        },
    );
    let mut device = held.fork();
    let vs = device.get(ROOT, "versions").unwrap().unwrap().1;
    let mut tx = device.transaction();
    tx.put(
        &vs,
        version.version_id.to_string(),
        serde_json::to_string(&version).unwrap(),
    )
    .unwrap();
    tx.commit();
    let change = device.get_last_local_change().unwrap().raw_bytes().to_vec();
    let mut after = held.clone();
    after.load_incremental(&change).unwrap();
    let grants = [grant];
    let limits = PushLimits::default();
    assert_eq!(
        check_push(
            Compartment::CareEvents,
            &held,
            &after,
            &grants,
            &nhs,
            now,
            &limits
        ),
        Ok(1)
    );

    let mut group = c.benchmark_group(format!("push_of_one_note_to_{notes}_notes"));
    group.bench_function("merge", |b| {
        b.iter_batched(
            || held.clone(),
            |mut doc| doc.load_incremental(&change).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // What the server's samod does with it: the merge, then the change
    // sealed and committed to SQLite (its storage adapter), one per push.
    let hash = device.get_last_local_change().unwrap().hash().to_string();
    let key =
        scr_core::store::ChunkKey::from_parts([doc_id.as_str(), "incremental", hash.as_str()])
            .unwrap();
    group.bench_function("merge_and_store", |b| {
        b.iter_batched(
            || held.clone(),
            |mut doc| {
                doc.load_incremental(&change).unwrap();
                store.put_chunk(&key, &change).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    let changes = [change.clone()];
    assert_eq!(
        check_changes(
            Compartment::CareEvents,
            &held,
            &changes,
            &grants,
            &nhs,
            now,
            &limits
        ),
        Some(Ok(1))
    );
    group.bench_function("check_on_operations", |b| {
        b.iter(|| {
            check_changes(
                Compartment::CareEvents,
                &held,
                &changes,
                &grants,
                &nhs,
                now,
                &limits,
            )
        })
    });
    group.bench_function("fallback_applied", |b| {
        b.iter(|| {
            check_applied(
                Compartment::CareEvents,
                &held,
                &changes,
                &grants,
                &nhs,
                now,
                &limits,
            )
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_with(c, 50);
    bench_with(c, 500);
}

criterion_group!(push_check, benches);
criterion_main!(push_check);
