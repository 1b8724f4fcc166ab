//! A community nurse's day, across separate device stores: a caseload cached
//! in the morning, visits written offline while the GP practice keeps
//! editing, everything merged in the evening with nothing lost, and a
//! patient who left the caseload forgotten.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{gp, provenance, sample_entry, test_nhs_number};
use scr_core::record::{Compartment, VersionId};
use scr_core::{NhsNumber, PatientReplica, Store};

const CASELOAD: u32 = 12;
const SHARED: [Compartment; 5] = [
    Compartment::Core,
    Compartment::Additional,
    Compartment::CareEvents,
    Compartment::PatientEntered,
    Compartment::Governance,
];

fn store(dir: &tempfile::TempDir, name: &str, key: u8) -> Store {
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([key; 32]));
    Store::open(dir.path().join(format!("{name}.db")), &keys).unwrap()
}

fn versions(r: &PatientReplica) -> HashSet<VersionId> {
    r.view()
        .compartments
        .iter()
        .flat_map(|c| c.entries.iter().flat_map(|e| e.history.clone()))
        .collect()
}

#[test]
fn a_day_of_offline_visits_merges_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let practice = store(&dir, "practice", 1);
    let tablet = store(&dir, "nurse-tablet", 2);
    let nurse = provenance("555000000102", "R0050", "RX1", "nurse-tablet-07");
    let patients: Vec<NhsNumber> = (0..CASELOAD).map(|i| test_nhs_number(1000 + i)).collect();

    // Morning: the practice holds each record; the tablet caches the caseload
    // without the sensitive compartment.
    let mut gp_recs = Vec::new();
    let mut tablet_recs = Vec::new();
    for (i, nhs) in patients.iter().enumerate() {
        let mut rec = practice.create_record(nhs, &Compartment::ALL).unwrap();
        for j in 0..8 {
            rec.add_entry(sample_entry(i + j), false, gp(), None)
                .unwrap();
        }
        rec.add_entry(sample_entry(3), true, gp(), None).unwrap();
        let shared: Vec<_> = rec
            .export()
            .into_iter()
            .filter(|e| SHARED.contains(&e.compartment))
            .collect();
        tablet_recs.push(tablet.import_record(nhs, &shared).unwrap());
        gp_recs.push(rec);
    }

    // Offline all day: ten visits; the practice edits the same records.
    let mut written = HashSet::new();
    for visit in 0..10usize {
        let p = visit % patients.len();
        let v = tablet_recs[p]
            .add_entry(sample_entry(7), false, nurse.clone(), None)
            .unwrap();
        written.insert(v.version_id);
        let g = gp_recs[p]
            .add_entry(sample_entry(1), false, gp(), None)
            .unwrap();
        written.insert(g.version_id);
    }

    // The tablet is closed and reopened (a restart mid-shift) before syncing.
    drop(tablet_recs);
    let mut tablet_recs: Vec<_> = patients
        .iter()
        .map(|n| tablet.open_record(n).unwrap())
        .collect();

    // Evening: both directions merge.
    for (t, g) in tablet_recs.iter_mut().zip(gp_recs.iter_mut()) {
        for e in t.export() {
            g.merge(&e).unwrap();
        }
        for e in g
            .export()
            .into_iter()
            .filter(|e| SHARED.contains(&e.compartment))
        {
            t.merge(&e).unwrap();
        }
    }
    for (t, g) in tablet_recs.iter().zip(&gp_recs) {
        let tv = t.view();
        let gv = g.view();
        for c in SHARED {
            assert_eq!(tv.compartment(c), gv.compartment(c));
        }
        assert!(tv.compartment(Compartment::Sensitive).is_none());
        assert_eq!(
            gv.compartment(Compartment::Sensitive)
                .unwrap()
                .entries
                .len(),
            1
        );
    }
    let everything: HashSet<VersionId> = gp_recs.iter().flat_map(versions).collect();
    assert!(written.is_subset(&everything));

    // A patient leaves the caseload: the tablet forgets them, keeps the rest.
    let leaving = patients[0];
    assert!(tablet.forget_record(&leaving).unwrap());
    assert!(tablet.open_record(&leaving).is_err());
    for nhs in &patients[1..] {
        assert!(tablet.open_record(nhs).is_ok());
    }
    assert!(practice.open_record(&leaving).is_ok());
}
