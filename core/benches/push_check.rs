//! What the server's push check costs beside the merge it guards, side by
//! side on the same care-events document and the same incoming change (one
//! new visit note).
//!
//! The merge: automerge's load of the change alone (`merge`); with the
//! change then sealed and committed (`merge_and_store`); and as the server
//! merges a push (`merge_as_served`: samod-core's document actor decoding
//! the sync message, receiving it, answering it and saving what is new
//! through the sealed store), beside `compaction` (the whole document
//! saved, which samod does instead of one change in eleven).
//!
//! The check: as the server runs it (`check_as_served`:
//! `push_rules::check_parsed_at` on the change the guard already parsed,
//! `guard_parse`, for its refusal of unparseable bytes, with where the
//! document keeps its versions as read once per session); the same from the
//! raw bytes (`check_on_operations`: `check_changes`, parsing them itself);
//! and the fallback for changes that cannot be judged alone (a copy of the
//! document with the change applied, then the same rules on the changes
//! that made part of it: `fallback_applied`).
//!
//! Run: `cargo bench -p scr-core --bench push_check`
#![allow(clippy::unwrap_used)]

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use scr_core::Store;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, test_nhs_number};
use scr_core::grant::{GrantPrincipal, GrantRelationship, RelationshipKind, RoleProfileGrant};
use scr_core::push_rules::{
    PushLimits, VersionsAt, check_applied, check_changes, check_parsed_at, check_push,
};
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
    // What the server does with the push as it arrives, as samod-core's
    // document actor does it: decode the sync message, receive it (parse
    // and apply), answer it, then save what is new since the heads it last
    // saved (`OnDiskState::save_new_changes`: each new change's raw bytes,
    // sealed and committed by the storage adapter).
    let (server, server_sync, message) = in_step_then_push(&held, &change);
    let saved_heads = server.get_heads();
    group.bench_function("merge_as_served", |b| {
        b.iter_batched(
            || (server.clone(), server_sync.clone()),
            |(mut doc, mut state)| {
                let m = automerge::sync::Message::decode(&message).unwrap();
                doc.receive_sync_message(&mut state, m).unwrap();
                let reply = doc.generate_sync_message(&mut state);
                for new in doc.get_changes(&saved_heads) {
                    let hash = new.hash().to_string();
                    let key = scr_core::store::ChunkKey::from_parts([
                        doc_id.as_str(),
                        "incremental",
                        hash.as_str(),
                    ])
                    .unwrap();
                    store.put_chunk(&key, new.raw_bytes()).unwrap();
                }
                (doc, reply)
            },
            BatchSize::SmallInput,
        )
    });
    // And once a document has more than ten chunks stored, samod's next
    // save is a compaction instead: the whole document saved, sealed and
    // committed (then the chunks it covers deleted): one in every eleven
    // changes once a document is past its first ten.
    let snapshot =
        scr_core::store::ChunkKey::from_parts([doc_id.as_str(), "snapshot", "bench"]).unwrap();
    group.bench_function("compaction", |b| {
        b.iter(|| store.put_chunk(&snapshot, &server.save()).unwrap())
    });
    // The check as the server runs it: the guard parsed the change once
    // for its own refusal of unparseable bytes (`untrusted::parse_changes`,
    // `guard_parse`) and the rules read that parse.
    group.bench_function("guard_parse", |b| {
        b.iter(|| scr_core::record::untrusted::parse_changes([change.as_slice()]).unwrap())
    });
    // (and where the document keeps its versions, which the server reads
    // once per session and again only after an outside write).
    let parsed = [automerge::Change::try_from(change.as_slice()).unwrap()];
    let at = VersionsAt::read(&held).unwrap();
    group.bench_function("check_as_served", |b| {
        b.iter(|| {
            check_parsed_at(
                &at,
                Compartment::CareEvents,
                &held,
                &parsed,
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

/// The server's copy of `held` and its sync state with a device holding
/// the same, once they are in step; then the device's sync message
/// carrying `change` (as samod sends it, encoded).
fn in_step_then_push(
    held: &Automerge,
    change: &[u8],
) -> (Automerge, automerge::sync::State, Vec<u8>) {
    use automerge::sync::State;
    let (mut server, mut device) = (held.clone(), held.clone());
    let (mut on_server, mut on_device) = (State::new(), State::new());
    loop {
        let to_server = device.generate_sync_message(&mut on_device);
        let to_device = server.generate_sync_message(&mut on_server);
        if to_server.is_none() && to_device.is_none() {
            break;
        }
        if let Some(m) = to_server {
            server.receive_sync_message(&mut on_server, m).unwrap();
        }
        if let Some(m) = to_device {
            device.receive_sync_message(&mut on_device, m).unwrap();
        }
    }
    device.load_incremental(change).unwrap();
    let message = device.generate_sync_message(&mut on_device).unwrap();
    (server, on_server, message.encode())
}

fn benches(c: &mut Criterion) {
    bench_with(c, 50);
    bench_with(c, 500);
}

criterion_group!(push_check, benches);
criterion_main!(push_check);
