//! The encrypted store end to end: records persist, reopen, merge, and stay
//! unreadable without the key; damage is reported, never misread.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use scr_core::Store;
use scr_core::crypto::{PassphraseKeyProvider, SecretKey, StaticKeyProvider};
use scr_core::fixtures::{self, gp, sample_entry, test_nhs_number};
use scr_core::record::{Code, Compartment, EntryContent, EntryState, Severity};
use scr_core::store::StoreError;

fn key(byte: u8) -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes([byte; 32]))
}

fn open(path: &Path) -> Store {
    Store::open(path, &key(1)).unwrap()
}

fn penicillin() -> EntryContent {
    EntryContent::Allergy {
        substance: Code::snomed("764146007", "Penicillin"),
        reaction: Some("Anaphylaxis".into()),
        severity: Some(Severity::Severe),
    }
}

#[test]
fn a_record_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let nhs = test_nhs_number(1);
    let (entry, version) = {
        let store = open(&path);
        let mut rec = store.create_record(&nhs, &Compartment::ALL).unwrap();
        rec.add_entry(fixtures::demographics(nhs), false, gp(), None)
            .unwrap();
        let v = rec.add_entry(penicillin(), false, gp(), None).unwrap();
        for i in 0..40 {
            rec.add_entry(sample_entry(i), false, gp(), None).unwrap();
        }
        (v.entry_id, v)
    };
    let store = open(&path);
    let rec = store.open_record(&nhs).unwrap();
    let view = rec.view();
    assert_eq!(view.entry_count(), 42);
    assert_eq!(view.entry(entry).unwrap().current(), Some(&version));
    assert_eq!(rec.compartments(), Compartment::ALL.to_vec());
}

#[test]
fn supersede_and_entered_in_error_keep_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("d.db"));
    let nhs = test_nhs_number(2);
    let mut rec = store.create_record(&nhs, &Compartment::ALL).unwrap();
    let v1 = rec.add_entry(penicillin(), false, gp(), None).unwrap();
    let corrected = EntryContent::Allergy {
        substance: Code::snomed("764146007", "Penicillin"),
        reaction: Some("Urticaria".into()),
        severity: Some(Severity::Moderate),
    };
    let v2 = rec
        .supersede(
            Compartment::Core,
            v1.entry_id,
            &[v1.version_id],
            corrected,
            gp(),
            None,
        )
        .unwrap();
    assert_eq!(v2.replaces, vec![v1.version_id]);
    // Naming a version that is no longer current is refused.
    let stale = rec.supersede(
        Compartment::Core,
        v1.entry_id,
        &[v1.version_id],
        penicillin(),
        gp(),
        None,
    );
    assert!(matches!(stale, Err(StoreError::InvalidEdit(_))));
    // A kind change is refused.
    let wrong_kind = rec.supersede(
        Compartment::Core,
        v1.entry_id,
        &[v2.version_id],
        sample_entry(1),
        gp(),
        None,
    );
    assert!(matches!(wrong_kind, Err(StoreError::InvalidEdit(_))));
    let eie = rec
        .mark_entered_in_error(
            Compartment::Core,
            v1.entry_id,
            &[v2.version_id],
            "wrong patient",
            gp(),
            None,
        )
        .unwrap();
    assert!(eie.is_entered_in_error());
    assert_eq!(eie.content, v2.content);
    let reopened = store.open_record(&nhs).unwrap();
    let e = reopened.view().entry(v1.entry_id).cloned().unwrap();
    assert_eq!(
        e.history,
        vec![v1.version_id, v2.version_id, eie.version_id]
    );
    assert_eq!(e.current(), Some(&eie));
    assert!(matches!(
        rec.mark_entered_in_error(
            Compartment::Core,
            v1.entry_id,
            &[eie.version_id],
            "  ",
            gp(),
            None,
        ),
        Err(StoreError::InvalidEdit(_))
    ));
}

#[test]
fn sensitive_items_are_held_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("d.db"));
    let nhs = test_nhs_number(3);
    let mut rec = store.create_record(&nhs, &Compartment::ALL).unwrap();
    let v = rec.add_entry(sample_entry(3), true, gp(), None).unwrap();
    let view = rec.view();
    assert!(
        view.compartment(Compartment::Sensitive)
            .unwrap()
            .entry(v.entry_id)
            .is_some()
    );
    assert!(
        view.compartment(Compartment::Additional)
            .unwrap()
            .entry(v.entry_id)
            .is_none()
    );
    assert!(matches!(
        rec.add_entry(fixtures::demographics(nhs), true, gp(), None),
        Err(StoreError::InvalidEdit(_))
    ));
}

#[test]
fn two_devices_edit_offline_and_merge_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let nhs = test_nhs_number(4);
    let gp_store = open(&dir.path().join("gp.db"));
    let nurse_store = Store::open(dir.path().join("nurse.db"), &key(2)).unwrap();
    let mut gp_rec = gp_store.create_record(&nhs, &Compartment::ALL).unwrap();
    let allergy = gp_rec.add_entry(penicillin(), false, gp(), None).unwrap();
    let mut nurse_rec = nurse_store.import_record(&nhs, &gp_rec.export()).unwrap();

    // Offline on both sides: each supersedes the same allergy, and the nurse
    // adds a visit summary.
    let nurse = fixtures::provenance("555000000002", "R0050", "B99002", "nurse-tablet");
    let from_gp = gp_rec
        .supersede(
            Compartment::Core,
            allergy.entry_id,
            &[allergy.version_id],
            sample_entry(0),
            gp(),
            None,
        )
        .unwrap();
    let from_nurse = nurse_rec
        .supersede(
            Compartment::Core,
            allergy.entry_id,
            &[allergy.version_id],
            penicillin(),
            nurse.clone(),
            None,
        )
        .unwrap();
    let visit = nurse_rec
        .add_entry(sample_entry(7), false, nurse.clone(), None)
        .unwrap();

    for e in nurse_rec.export() {
        gp_rec.merge(&e).unwrap();
    }
    for e in gp_rec.export() {
        nurse_rec.merge(&e).unwrap();
    }
    assert_eq!(gp_rec.view(), nurse_rec.view());
    let entry = gp_rec.view().entry(allergy.entry_id).cloned().unwrap();
    let mut both = vec![from_gp.clone(), from_nurse.clone()];
    both.sort_by_key(|v| v.version_id);
    assert_eq!(entry.state, EntryState::Conflict(both));
    assert!(gp_rec.view().entry(visit.entry_id).is_some());

    // A version naming both candidates resolves the conflict, everywhere.
    let resolved = gp_rec
        .supersede(
            Compartment::Core,
            allergy.entry_id,
            &[from_gp.version_id, from_nurse.version_id],
            penicillin(),
            gp(),
            None,
        )
        .unwrap();
    for e in gp_rec.export() {
        nurse_rec.merge(&e).unwrap();
    }
    let reopened = nurse_store.open_record(&nhs).unwrap();
    let entry = reopened.view().entry(allergy.entry_id).cloned().unwrap();
    assert_eq!(entry.current(), Some(&resolved));
    assert_eq!(entry.history.len(), 4);
}

#[test]
fn a_device_holding_only_core_receives_and_keeps_only_core() {
    let dir = tempfile::tempdir().unwrap();
    let nhs = test_nhs_number(5);
    let gp_store = open(&dir.path().join("gp.db"));
    let mut gp_rec = gp_store.create_record(&nhs, &Compartment::ALL).unwrap();
    gp_rec
        .add_entry(sample_entry(3), false, gp(), None)
        .unwrap();
    let core_only: Vec<_> = gp_rec
        .export()
        .into_iter()
        .filter(|e| e.compartment == Compartment::Core)
        .collect();
    let tablet = Store::open(dir.path().join("tablet.db"), &key(3)).unwrap();
    let rec = tablet.import_record(&nhs, &core_only).unwrap();
    assert_eq!(rec.compartments(), vec![Compartment::Core]);
    assert!(matches!(
        rec.view_compartment(Compartment::Additional),
        Err(StoreError::CompartmentNotHeld("additional"))
    ));
}

#[test]
fn merging_a_different_compartment_or_garbage_is_refused_without_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("d.db"));
    let nhs = test_nhs_number(6);
    let mut rec = store.create_record(&nhs, &Compartment::ALL).unwrap();
    rec.add_entry(penicillin(), false, gp(), None).unwrap();
    let before = rec.view();
    let mut exports = rec.export();
    let core_id = exports[0].doc_id.clone();
    let additional = exports
        .iter()
        .find(|e| e.compartment == Compartment::Additional)
        .unwrap()
        .clone();
    // The additional document's bytes presented as core: refused.
    let mislabelled = scr_core::CompartmentExport {
        compartment: Compartment::Core,
        doc_id: core_id,
        bytes: additional.bytes.clone(),
    };
    assert!(rec.merge(&mislabelled).is_err());
    exports[0].bytes = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3];
    assert!(rec.merge(&exports[0]).is_err());
    assert_eq!(rec.view(), before);
    assert_eq!(store.open_record(&nhs).unwrap().view(), before);
}

#[test]
fn wrong_key_is_a_typed_error_and_the_right_key_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let nhs = test_nhs_number(7);
    open(&path)
        .create_record(&nhs, &[Compartment::Core])
        .unwrap();
    assert!(matches!(
        Store::open(&path, &key(9)),
        Err(StoreError::WrongKey)
    ));
    assert!(open(&path).open_record(&nhs).is_ok());
}

#[test]
fn a_passphrase_provider_unlocks_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let salt = dir.path().join("d.salt");
    let nhs = test_nhs_number(8);
    {
        let kp = PassphraseKeyProvider::with_salt_file("a long passphrase", &salt).unwrap();
        Store::open(&path, &kp)
            .unwrap()
            .create_record(&nhs, &[Compartment::Core])
            .unwrap();
    }
    let kp = PassphraseKeyProvider::with_salt_file("a long passphrase", &salt).unwrap();
    assert!(Store::open(&path, &kp).unwrap().has_record(&nhs).unwrap());
    let wrong = PassphraseKeyProvider::with_salt_file("a long passphrasf", &salt).unwrap();
    assert!(matches!(
        Store::open(&path, &wrong),
        Err(StoreError::WrongKey)
    ));
}

#[test]
fn unknown_patient_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("d.db"));
    assert!(matches!(
        store.open_record(&test_nhs_number(10)),
        Err(StoreError::RecordNotFound)
    ));
    let nhs = test_nhs_number(11);
    store.create_record(&nhs, &[Compartment::Core]).unwrap();
    assert!(matches!(
        store.create_record(&nhs, &[Compartment::Core]),
        Err(StoreError::RecordExists)
    ));
}

#[test]
fn forgetting_a_patient_crypto_shreds_and_leaves_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let store = open(&path);
    let (a, b) = (test_nhs_number(12), test_nhs_number(13));
    let mut ra = store.create_record(&a, &Compartment::ALL).unwrap();
    ra.add_entry(penicillin(), false, gp(), None).unwrap();
    let mut rb = store.create_record(&b, &Compartment::ALL).unwrap();
    let kept = rb.add_entry(penicillin(), false, gp(), None).unwrap();
    assert!(store.forget_record(&a).unwrap());
    assert!(!store.forget_record(&a).unwrap());
    assert!(matches!(
        store.open_record(&a),
        Err(StoreError::RecordNotFound)
    ));
    assert!(
        store
            .open_record(&b)
            .unwrap()
            .view()
            .entry(kept.entry_id)
            .is_some()
    );
    // Nothing of A's remains in the tables: only B's record, documents, chunks.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT COUNT(*) FROM records"), 1);
    assert_eq!(
        count("SELECT COUNT(*) FROM documents"),
        Compartment::ALL.len() as i64
    );
}

#[test]
fn a_version_of_another_kind_under_the_sharing_entry_does_not_block_the_next_choice() {
    use scr_core::record::{
        CompartmentDoc, EntryId, EntryVersion, PermissionScope, SharingChoice, VersionStatus,
    };
    let dir = tempfile::tempdir().unwrap();
    let nhs = test_nhs_number(7);
    let origin = open(&dir.path().join("origin.db"));
    let mut exports = origin
        .create_record(&nhs, &[Compartment::Governance])
        .unwrap()
        .export();
    // Someone put a permission to view under the sharing entry's id (ahead
    // of the choice, by version id) before the patient's choice arrived.
    let entry = EntryId::new();
    let foreign = EntryVersion::new(
        entry,
        Vec::new(),
        VersionStatus::Current,
        EntryContent::PermissionToView {
            organisation: "RX1".into(),
            user_id: "555000000102".into(),
            scope: PermissionScope::Organisation,
            granted: true,
        },
        gp(),
    );
    std::thread::sleep(std::time::Duration::from_millis(2));
    let choice = |replaces, sharing| {
        EntryVersion::new(
            entry,
            replaces,
            VersionStatus::Current,
            EntryContent::Sharing {
                choice: sharing,
                include_sensitive: false,
                hidden: false,
            },
            gp(),
        )
    };
    let first = choice(Vec::new(), SharingChoice::CoreOnly);
    let mut doc = CompartmentDoc::load(Compartment::Governance, &exports[0].bytes).unwrap();
    doc.put_version(&foreign).unwrap();
    doc.put_version(&first).unwrap();
    exports[0].bytes = doc.save();
    let device = open(&dir.path().join("device.db"));
    let mut rec = device.import_record(&nhs, &exports).unwrap();
    let (at, names) =
        scr_core::access::sharing_entry(&rec.view_compartment(Compartment::Governance).unwrap())
            .unwrap();
    assert_eq!((at, names.clone()), (entry, vec![first.version_id]));
    let next = choice(names.clone(), SharingChoice::OptOut);
    rec.supersede(
        Compartment::Governance,
        entry,
        &names,
        next.content.clone(),
        gp(),
        None,
    )
    .unwrap();
    let governance = rec.view_compartment(Compartment::Governance).unwrap();
    assert_eq!(
        scr_core::access::choices_from(Some(&governance)).sharing,
        SharingChoice::OptOut
    );
}
