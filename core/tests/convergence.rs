//! Property: any interleaving of edits on N replicas (each with its own
//! encrypted store), merged in any order, converges to the same view, and no
//! version is ever lost.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use proptest::prelude::*;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::fixtures::{provenance, sample_entry, test_nhs_number};
use scr_core::record::{Compartment, VersionId};
use scr_core::{PatientReplica, Store};

const REPLICAS: usize = 3;
const COMPARTMENTS: [Compartment; 2] = [Compartment::Core, Compartment::CareEvents];

#[derive(Clone, Debug)]
enum Op {
    /// Add an entry; `kind` picks a core or care-event sample.
    Add { replica: usize, kind: usize },
    /// Supersede an entry, naming all its heads or only the first.
    Supersede {
        replica: usize,
        entry: prop::sample::Index,
        all_heads: bool,
    },
    EnteredInError {
        replica: usize,
        entry: prop::sample::Index,
    },
    /// Send everything `from` holds to `to` (a sync while online).
    Sync { from: usize, to: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..REPLICAS;
    prop_oneof![
        3 => (r.clone(), 0..4usize).prop_map(|(replica, kind)| Op::Add { replica, kind }),
        3 => (r.clone(), any::<prop::sample::Index>(), any::<bool>())
            .prop_map(|(replica, entry, all_heads)| Op::Supersede { replica, entry, all_heads }),
        1 => (r.clone(), any::<prop::sample::Index>())
            .prop_map(|(replica, entry)| Op::EnteredInError { replica, entry }),
        2 => (r.clone(), r).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// Core kinds (allergy, medication, adverse reaction) and an encounter summary.
fn content(kind: usize) -> scr_core::record::EntryContent {
    sample_entry([0, 1, 2, 7][kind % 4])
}

fn sync(replicas: &mut [PatientReplica], from: usize, to: usize) {
    if from == to {
        return;
    }
    let exports = replicas[from].export();
    for e in &exports {
        replicas[to].merge(e).unwrap();
    }
}

/// (compartment, entry, heads) of every live entry on a replica.
fn live_entries(
    r: &PatientReplica,
) -> Vec<(Compartment, scr_core::record::EntryId, Vec<VersionId>, bool)> {
    r.view()
        .compartments
        .iter()
        .flat_map(|c| {
            c.entries.iter().map(move |e| {
                let eie = e.heads().iter().any(|h| h.is_entered_in_error());
                (c.compartment, e.entry_id, e.head_ids(), eie)
            })
        })
        .collect()
}

fn run(ops: Vec<Op>, merge_orders: Vec<Vec<usize>>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let nhs = test_nhs_number(500);
    let stores: Vec<Store> = (0..REPLICAS)
        .map(|i| {
            let keys = StaticKeyProvider::new(SecretKey::from_bytes([i as u8 + 1; 32]));
            Store::open(dir.path().join(format!("r{i}.db")), &keys).unwrap()
        })
        .collect();
    let mut first = stores[0].create_record(&nhs, &COMPARTMENTS).unwrap();
    let seed = first.export();
    let mut replicas = vec![first];
    for store in &stores[1..] {
        replicas.push(store.import_record(&nhs, &seed).unwrap());
    }

    let mut created: HashSet<VersionId> = HashSet::new();
    for op in ops {
        match op {
            Op::Add { replica, kind } => {
                let who = provenance("u", "R0050", "X1", &format!("device-{replica}"));
                let v = replicas[replica]
                    .add_entry(content(kind), false, who, None)
                    .unwrap();
                created.insert(v.version_id);
            }
            Op::Supersede {
                replica,
                entry,
                all_heads,
            } => {
                let live = live_entries(&replicas[replica]);
                if live.is_empty() {
                    continue;
                }
                let (c, id, heads, _) = &live[entry.index(live.len())];
                let replaces = if all_heads {
                    heads.clone()
                } else {
                    vec![heads[0]]
                };
                let head = replicas[replica].view().entry(*id).unwrap().heads()[0]
                    .content
                    .clone();
                let who = provenance("u", "R0050", "X1", &format!("device-{replica}"));
                let v = replicas[replica]
                    .supersede(*c, *id, &replaces, head, who, None)
                    .unwrap();
                created.insert(v.version_id);
            }
            Op::EnteredInError { replica, entry } => {
                let live = live_entries(&replicas[replica]);
                if live.is_empty() {
                    continue;
                }
                let (c, id, heads, _) = &live[entry.index(live.len())];
                let who = provenance("u", "R0050", "X1", &format!("device-{replica}"));
                let v = replicas[replica]
                    .mark_entered_in_error(*c, *id, heads, "recorded in error", who, None)
                    .unwrap();
                created.insert(v.version_id);
            }
            Op::Sync { from, to } => sync(&mut replicas, from, to),
        }
    }

    // Everyone reconnects: each replica receives every replica's state, in
    // its own order.
    let all: Vec<_> = replicas.iter_mut().flat_map(|r| r.export()).collect();
    for (r, order) in replicas.iter_mut().zip(&merge_orders) {
        for &i in order {
            if let Some(e) = all.get(i) {
                r.merge(e).unwrap();
            }
        }
        for e in &all {
            r.merge(e).unwrap();
        }
    }

    let view = replicas[0].view();
    for r in &replicas[1..] {
        prop_assert_eq!(&r.view(), &view);
    }
    let kept: HashSet<VersionId> = view
        .compartments
        .iter()
        .flat_map(|c| c.entries.iter().flat_map(|e| e.history.iter().copied()))
        .collect();
    prop_assert_eq!(&kept, &created);
    // And what is on disk is what is in memory.
    for (store, r) in stores.iter().zip(&replicas) {
        prop_assert_eq!(store.open_record(&nhs).unwrap().view(), r.view());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_and_lose_nothing(
        ops in proptest::collection::vec(op(), 1..30),
        merge_orders in proptest::collection::vec(
            Just((0..REPLICAS * COMPARTMENTS.len()).collect::<Vec<usize>>()).prop_shuffle(),
            REPLICAS,
        ),
    ) {
        run(ops, merge_orders)?;
    }
}
