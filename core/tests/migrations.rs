//! Schema migrations: a store written by an earlier release opens, upgrades
//! to the same schema as a fresh store, and keeps every entry.
//!
//! `fixtures/store-v1.db` was written by schema 1 (regenerate only when
//! adding a new fixture version: `cargo test -p scr-core --test migrations
//! -- --ignored write_fixture_v1`, then rename).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use scr_core::Store;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::record::Compartment;
use scr_core::store::SCHEMA_VERSION;

const FIXTURE_KEY: [u8; 32] = [0x11; 32];
const FIXTURE_PATIENT: u32 = 900;
const FIXTURE_ENTRIES: usize = 12;

fn keys() -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes(FIXTURE_KEY))
}

fn schema(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT type || ' ' || name || ' ' || COALESCE(sql, '') FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    let mut rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    rows.push(format!("user_version {version}"));
    rows
}

#[test]
fn every_fixture_upgrades_to_the_fresh_schema_and_keeps_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    Store::open(&fresh, &keys()).unwrap();
    let fresh_schema = schema(&fresh);
    assert!(fresh_schema.contains(&format!("user_version {SCHEMA_VERSION}")));

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let src = entry.unwrap().path();
        if src.extension().is_none_or(|e| e != "db") {
            continue;
        }
        seen += 1;
        let copy = dir.path().join(src.file_name().unwrap());
        std::fs::copy(&src, &copy).unwrap();
        let store = Store::open(&copy, &keys()).unwrap();
        let rec = store
            .open_record(&test_nhs_number(FIXTURE_PATIENT))
            .unwrap();
        assert_eq!(
            rec.view().entry_count(),
            FIXTURE_ENTRIES,
            "{}",
            src.display()
        );
        // Written before permissions had their own compartment: layout 1,
        // until the server's upgrade (or the sync that follows it) adds it.
        assert_eq!(rec.compartments(), Compartment::LAYOUT_1.to_vec());
        let nhs = test_nhs_number(FIXTURE_PATIENT);
        assert!(
            store
                .add_compartment(&nhs, Compartment::Permissions)
                .unwrap()
                .is_some()
        );
        let rec = store.open_record(&nhs).unwrap();
        assert_eq!(rec.compartments(), Compartment::ALL.to_vec());
        assert_eq!(rec.view().entry_count(), FIXTURE_ENTRIES);
        assert_eq!(
            store
                .add_compartment(&nhs, Compartment::Permissions)
                .unwrap(),
            None,
            "added once"
        );
        drop((rec, store));
        assert_eq!(schema(&copy), fresh_schema, "{}", src.display());
    }
    assert!(seen >= 1, "no fixtures found");
}

#[test]
#[ignore = "writes a fixture file; run by hand when the schema changes"]
fn write_fixture_v1() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-new.db");
    let _ = std::fs::remove_file(&path);
    let store = Store::open(&path, &keys()).unwrap();
    let mut rec = store
        .create_record(&test_nhs_number(FIXTURE_PATIENT), &Compartment::ALL)
        .unwrap();
    for i in 0..FIXTURE_ENTRIES {
        rec.add_entry(sample_entry(i), false, gp(), None).unwrap();
    }
    store.checkpoint().unwrap();
    store.vacuum().unwrap();
}
