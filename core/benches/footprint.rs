//! Bytes on disk for records against Automerge's own `save()` of the same
//! documents. Prints a table; not a timing benchmark.
//!
//! Run: `cargo bench -p scr-core --bench footprint`
#![allow(clippy::unwrap_used)]

use scr_core::Store;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::record::Compartment;

fn measure(label: &str, records: u32, entries: usize) {
    let dir = tempfile::tempdir().unwrap();
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([1; 32]));
    let store = Store::open(dir.path().join("f.db"), &keys).unwrap();
    let mut saved = 0usize;
    for r in 0..records {
        let mut rec = store
            .create_record(&test_nhs_number(r), &Compartment::ALL)
            .unwrap();
        for i in 0..entries {
            rec.add_entry(sample_entry(i), i % 25 == 3, gp(), None)
                .unwrap();
        }
        saved += rec.export().iter().map(|e| e.bytes.len()).sum::<usize>();
    }
    store.checkpoint().unwrap();
    let on_disk = store.bytes_on_disk().unwrap();
    let before_vacuum = on_disk;
    store.vacuum().unwrap();
    let on_disk = store.bytes_on_disk().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("f.db")).unwrap();
    let payload: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(length(sealed)), 0) FROM chunks",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if std::env::var_os("FOOTPRINT_DETAIL").is_some() {
        let mut stmt = conn
            .prepare("SELECT name, SUM(pgsize), SUM(payload), SUM(unused), SUM(ncell) FROM dbstat GROUP BY name ORDER BY 2 DESC")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .unwrap();
        for row in rows {
            eprintln!("    {:?}", row.unwrap());
        }
    }
    if saved == 0 {
        println!("{label:<38} file {on_disk:>9} B: seven b-trees of one 16 KB page each");
        return;
    }
    println!(
        "{label:<38} save() {saved:>9} B | sealed chunks {payload:>9} B ({:.2}x) | file {before_vacuum:>9} B ({:.2}x), after vacuum {on_disk:>9} B ({:.2}x)",
        payload as f64 / saved as f64,
        before_vacuum as f64 / saved as f64,
        on_disk as f64 / saved as f64,
    );
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` it runs one small case.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        measure("1 record x 100 entries", 1, 100);
        return;
    }
    measure("empty store (fixed cost)", 0, 0);
    measure("1 record x 100 entries", 1, 100);
    measure("1 record x 5,000 entries", 1, 5000);
    measure("150 records x 100 entries (caseload)", 150, 100);
}
