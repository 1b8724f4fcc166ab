//! Opening, viewing and writing records, each side by side with plain
//! Automerge on the same documents held in memory.
//!
//! Run: `cargo bench -p scr-core --bench record`
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::record::{Compartment, CompartmentDoc};
use scr_core::{CompartmentExport, NhsNumber, Store};

/// A store holding one record of `entries` entries spread over compartments.
fn record_with(
    entries: usize,
    dir: &tempfile::TempDir,
    n: u32,
) -> (Store, NhsNumber, Vec<CompartmentExport>) {
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([1; 32]));
    let store = Store::open(dir.path().join(format!("bench-{n}.db")), &keys).unwrap();
    let nhs = test_nhs_number(n);
    let mut rec = store.create_record(&nhs, &Compartment::ALL).unwrap();
    for i in 0..entries {
        rec.add_entry(sample_entry(i), i % 25 == 3, gp(), None)
            .unwrap();
    }
    let exports = rec.export();
    (store, nhs, exports)
}

fn open_benches(c: &mut Criterion, label: &str, entries: usize, n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (store, nhs, exports) = record_with(entries, &dir, n);
    let mut group = c.benchmark_group(format!("open_{label}_{entries}_entries"));
    if entries > 1000 {
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));
    }
    group.bench_function("encrypted_store_open_and_view", |b| {
        b.iter(|| {
            let rec = store.open_record(&nhs).unwrap();
            let view = rec.view();
            assert_eq!(view.entry_count(), entries);
            view
        })
    });
    group.bench_function("plain_automerge_load_and_view", |b| {
        b.iter(|| {
            let mut count = 0;
            for e in &exports {
                let doc = CompartmentDoc::load(e.compartment, &e.bytes).unwrap();
                count += doc.view().entries.len();
            }
            assert_eq!(count, entries);
        })
    });
    group.bench_function("plain_automerge_load_only", |b| {
        b.iter(|| {
            for e in &exports {
                automerge::Automerge::load(&e.bytes).unwrap();
            }
        })
    });
    group.finish();
}

fn open_typical(c: &mut Criterion) {
    open_benches(c, "typical", 100, 1);
}

fn open_heavy(c: &mut Criterion) {
    open_benches(c, "heavy", 5000, 2);
}

fn add_entry(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (store, nhs, exports) = record_with(100, &dir, 3);
    let mut rec = store.open_record(&nhs).unwrap();
    let mut group = c.benchmark_group("add_entry_typical_record");
    let mut i = 0;
    group.bench_function("encrypted_store_durable_commit", |b| {
        b.iter(|| {
            i += 1;
            rec.add_entry(sample_entry(i), false, gp(), None).unwrap()
        })
    });
    let core = exports
        .iter()
        .find(|e| e.compartment == Compartment::Core)
        .unwrap();
    group.bench_function("plain_automerge_in_memory_change", |b| {
        b.iter_batched_ref(
            || CompartmentDoc::load(Compartment::Core, &core.bytes).unwrap(),
            |doc| {
                let v = scr_core::record::EntryVersion::new(
                    scr_core::record::EntryId::new(),
                    vec![],
                    scr_core::record::VersionStatus::Current,
                    sample_entry(0),
                    gp(),
                );
                doc.put_version(&v).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, open_typical, open_heavy, add_entry);
criterion_main!(benches);
