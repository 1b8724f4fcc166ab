//! Opening a record from the encrypted store against loading the same
//! documents with plain Automerge from memory, measured interleaved (one of
//! each per round) so that drift on a noisy machine hits both sides alike.
//! Prints p50 and p90 of each side and the ratio of the p50s.
//!
//! Run: `cargo bench -p scr-core --bench open_ratio`
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use scr_core::Store;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::record::{Compartment, CompartmentDoc};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(label: &str, entries: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([1; 32]));
    let store = Store::open(dir.path().join("r.db"), &keys).unwrap();
    let nhs = test_nhs_number(7);
    let mut rec = store.create_record(&nhs, &Compartment::ALL).unwrap();
    for i in 0..entries {
        rec.add_entry(sample_entry(i), i % 25 == 3, gp(), None)
            .unwrap();
    }
    let exports = rec.export();
    drop(rec);

    let (mut ours, mut plain) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        let t = Instant::now();
        let view = store.open_record(&nhs).unwrap().view();
        ours.push(t.elapsed());
        assert_eq!(view.entry_count(), entries);

        let t = Instant::now();
        let mut n = 0;
        for e in &exports {
            n += CompartmentDoc::load(e.compartment, &e.bytes)
                .unwrap()
                .view()
                .entries
                .len();
        }
        plain.push(t.elapsed());
        assert_eq!(n, entries);
    }
    ours.sort();
    plain.sort();
    let (o50, p50) = (percentile(&ours, 0.5), percentile(&plain, 0.5));
    println!(
        "{label:<26} encrypted open+view p50 {:>8.3} ms p90 {:>8.3} ms | plain automerge load+view p50 {:>8.3} ms p90 {:>8.3} ms | ratio {:.2}x",
        o50.as_secs_f64() * 1e3,
        percentile(&ours, 0.9).as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        percentile(&plain, 0.9).as_secs_f64() * 1e3,
        o50.as_secs_f64() / p50.as_secs_f64(),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        println!("smoke run under `cargo test` (unoptimised build): figures are not measurements");
    }
    run("typical (100 entries)", 100, if quick { 3 } else { 400 });
    if !quick {
        run("heavy (5,000 entries)", 5000, 60);
    }
}
