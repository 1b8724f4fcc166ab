//! What an attacker with the files sees: no patient data in clear, and any
//! tampering reported as a typed error, never as wrong data or a panic.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use rusqlite::Connection;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, test_nhs_number};
use scr_core::record::{Code, Compartment, EntryContent};
use scr_core::store::StoreError;
use scr_core::{NhsNumber, Store};

fn keys() -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes([42; 32]))
}

const NAME: &str = "Zebedee Quartermaine";
const DRUG: &str = "Flucloxacillin";
const ADDRESS: &str = "Marigold Cottage";

fn write_known_record(path: &Path, nhs: NhsNumber) -> Vec<String> {
    let store = Store::open(path, &keys()).unwrap();
    let mut rec = store.create_record(&nhs, &Compartment::ALL).unwrap();
    rec.add_entry(
        EntryContent::Demographics {
            name: NAME.into(),
            date_of_birth: "1950-01-01".into(),
            address: format!("{ADDRESS}, Testtown"),
            nhs_number: nhs,
        },
        false,
        gp(),
        None,
    )
    .unwrap();
    rec.add_entry(
        EntryContent::Medication {
            medicine: Code::dmd("39732311000001104", DRUG),
            dose: "500mg four times daily".into(),
            route: "oral".into(),
            course: scr_core::record::MedicationCourse::Acute,
            last_issued: None,
        },
        false,
        gp(),
        None,
    )
    .unwrap();
    rec.export().into_iter().map(|e| e.doc_id).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_identifier_or_clinical_text_in_clear_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let nhs = test_nhs_number(77);
    let doc_ids = write_known_record(&path, nhs);
    // Look while the WAL is still populated, and again after a checkpoint.
    let mut needles: Vec<Vec<u8>> = vec![
        NAME.as_bytes().to_vec(),
        DRUG.as_bytes().to_vec(),
        ADDRESS.as_bytes().to_vec(),
        nhs.digits().into_bytes(),
        nhs.to_string().into_bytes(),
    ];
    needles.extend(doc_ids.iter().map(|d| d.as_bytes().to_vec()));
    for round in 0..2 {
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            files += 1;
            let name = entry.file_name().to_string_lossy().to_string();
            for needle in &needles {
                assert!(
                    !contains(&bytes, needle),
                    "round {round}: found a needle in {name}"
                );
                assert!(!name.contains(std::str::from_utf8(needle).unwrap()));
            }
        }
        assert!(files >= 1);
        Store::open(&path, &keys()).unwrap().checkpoint().unwrap();
    }
}

fn tamper(path: &Path, sql: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn a_flipped_byte_in_a_chunk_is_reported_as_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let nhs = test_nhs_number(78);
    write_known_record(&path, nhs);
    {
        let conn = Connection::open(&path).unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT key_ref, sealed FROM chunks")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (key_ref, mut sealed) in rows {
            let i = sealed.len() / 2;
            sealed[i] ^= 0x01;
            conn.execute(
                "UPDATE chunks SET sealed = ?1 WHERE key_ref = ?2",
                rusqlite::params![sealed, key_ref],
            )
            .unwrap();
        }
    }
    let store = Store::open(&path, &keys()).unwrap();
    assert!(matches!(
        store.open_record(&nhs),
        Err(StoreError::Tampered {
            table: "chunks",
            ..
        })
    ));
}

#[test]
fn rows_swapped_between_keys_do_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let nhs = test_nhs_number(79);
    write_known_record(&path, nhs);
    // Give every chunk of the record the sealed value of another chunk.
    tamper(
        &path,
        "UPDATE chunks SET sealed = (SELECT c2.sealed FROM chunks c2 WHERE c2.key_ref != chunks.key_ref LIMIT 1)",
    );
    let store = Store::open(&path, &keys()).unwrap();
    assert!(matches!(
        store.open_record(&nhs),
        Err(StoreError::Tampered {
            table: "chunks",
            ..
        })
    ));
}

#[test]
fn a_truncated_wrapped_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let nhs = test_nhs_number(80);
    write_known_record(&path, nhs);
    tamper(
        &path,
        "UPDATE records SET wrapped_key = substr(wrapped_key, 1, 10)",
    );
    let store = Store::open(&path, &keys()).unwrap();
    assert!(matches!(
        store.open_record(&nhs),
        Err(StoreError::Tampered {
            table: "records",
            ..
        })
    ));
}

#[test]
fn one_patients_key_does_not_open_anothers_documents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let (a, b) = (test_nhs_number(81), test_nhs_number(82));
    write_known_record(&path, a);
    {
        let store = Store::open(&path, &keys()).unwrap();
        store.create_record(&b, &Compartment::ALL).unwrap();
    }
    // Point B's record row at A's wrapped key: AAD binds it to A's row.
    tamper(
        &path,
        "UPDATE records SET wrapped_key = (SELECT wrapped_key FROM records ORDER BY record_ref LIMIT 1)",
    );
    let store = Store::open(&path, &keys()).unwrap();
    let results = [store.open_record(&a).err(), store.open_record(&b).err()];
    assert!(results.iter().any(|r| matches!(
        r,
        Some(StoreError::Tampered {
            table: "records",
            ..
        })
    )));
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    std::fs::write(&path, vec![0xA5u8; 8192]).unwrap();
    assert!(matches!(
        Store::open(&path, &keys()),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    Store::open(&path, &keys()).unwrap();
    tamper(&path, "PRAGMA user_version = 99");
    assert!(matches!(
        Store::open(&path, &keys()),
        Err(StoreError::NewerSchema { found: 99, .. })
    ));
}

#[test]
fn a_failing_key_provider_is_a_typed_error() {
    struct Broken;
    impl scr_core::crypto::KeyProvider for Broken {
        fn key_encryption_key(&self) -> Result<SecretKey, scr_core::crypto::KeyProviderError> {
            Err(scr_core::crypto::KeyProviderError::Unavailable)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::open(dir.path().join("d.db"), &Broken),
        Err(StoreError::KeyUnavailable(_))
    ));
}
