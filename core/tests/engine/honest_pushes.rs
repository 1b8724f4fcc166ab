//! An honest device never produces a push the server refuses: random
//! sequences of what a nurse, the patient's GP and the patient's phone do
//! through the engine (notes, corrections, retractions, permissions,
//! choices, hours offline and new logins, syncing now and then), each
//! device's changes since it last synced checked by
//! `push_rules::check_push` against a model of the server's documents,
//! with every grant the device was issued. Zero refusals.

use std::collections::HashMap;

use automerge::Automerge;
use proptest::prelude::*;
use scr_core::NhsNumber;
use scr_core::access::AccessRequest;
use scr_core::engine::Engine;
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::push_rules::{PushLimits, check_push};
use scr_core::record::{Compartment, EntryContent, EntryState, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

use crate::support::{HOUR, World, gp_principal, nurse, tablet_exports};

#[derive(Clone, Debug)]
enum Op {
    NurseNote,
    NurseCorrectsOwn,
    NurseRetractsOwn,
    NursePermission(bool),
    GpAdds(usize),
    GpCorrects,
    GpChoice(u8),
    PatientPreference,
    PatientChoice(u8),
    Offline(i64),
    Sync(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::NurseNote),
        1 => Just(Op::NurseCorrectsOwn),
        1 => Just(Op::NurseRetractsOwn),
        1 => any::<bool>().prop_map(Op::NursePermission),
        2 => (0usize..12).prop_map(Op::GpAdds),
        1 => Just(Op::GpCorrects),
        1 => (0u8..3).prop_map(Op::GpChoice),
        1 => Just(Op::PatientPreference),
        1 => (0u8..3).prop_map(Op::PatientChoice),
        1 => (1i64..15).prop_map(Op::Offline),
        2 => (0usize..3).prop_map(Op::Sync),
    ]
}

fn choice(n: u8) -> SharingChoice {
    [
        SharingChoice::CoreOnly,
        SharingChoice::CoreAndAdditional,
        SharingChoice::OptOut,
    ][n as usize % 3]
}

/// One device: its engine and every grant it was issued.
struct Device {
    name: &'static str,
    engine: Engine,
    principal: GrantPrincipal,
    relationship: Option<RelationshipKind>,
    grants: Vec<RoleProfileGrant>,
    /// Its documents as of its last sync.
    synced: HashMap<Compartment, Automerge>,
}

impl Device {
    fn log_in(&mut self, w: &World, signer: &GrantSigner, nhs: NhsNumber) {
        let now = w.clock_now();
        let grant = RoleProfileGrant {
            grant_id: format!("{}-{now}", self.name),
            principal: self.principal.clone(),
            device_id: self.name.into(),
            issued_at_ms: now,
            expires_at_ms: now + 12 * HOUR,
            relationships: self
                .relationship
                .iter()
                .map(|kind| GrantRelationship {
                    nhs_number: nhs,
                    kind: kind.clone(),
                })
                .collect(),
        };
        self.engine
            .login_online(&signer.sign(&grant), "135792")
            .unwrap();
        self.grants.push(grant);
    }

    /// Back after time away: unlocked, or logged in again once the grant
    /// has expired.
    fn resume(&mut self, w: &World, signer: &GrantSigner, nhs: NhsNumber) {
        let expired = self
            .grants
            .last()
            .is_none_or(|g| w.clock_now() >= g.expires_at_ms);
        if expired || self.engine.unlock("135792").is_err() {
            self.log_in(w, signer, nhs);
        }
    }
}

fn docs(exports: &[scr_core::CompartmentExport]) -> HashMap<Compartment, Automerge> {
    exports
        .iter()
        .map(|e| (e.compartment, Automerge::load(&e.bytes).unwrap()))
        .collect()
}

/// A device syncs: its changes since it last synced, pushed to the
/// server's documents and checked; then it merges what the server has.
fn sync(
    server: &mut HashMap<Compartment, Automerge>,
    ids: &HashMap<Compartment, String>,
    device: &mut Device,
    nhs: &NhsNumber,
    now: i64,
) -> Result<(), String> {
    for (c, after) in docs(&tablet_exports(&device.engine, nhs)) {
        let Some(was) = device.synced.get(&c) else {
            continue;
        };
        let changes = after.get_changes(&was.get_heads());
        if changes.is_empty() {
            continue;
        }
        let held = server.get(&c).unwrap();
        let mut next = held.clone();
        for change in changes {
            next.load_incremental(change.raw_bytes()).unwrap();
        }
        check_push(
            c,
            held,
            &next,
            &device.grants,
            nhs,
            now,
            &PushLimits::default(),
        )
        .map_err(|r| format!("{} pushing to {}: {r}", device.name, c.as_str()))?;
        server.insert(c, next);
    }
    let exports: Vec<scr_core::CompartmentExport> = server
        .iter_mut()
        .map(|(c, doc)| scr_core::CompartmentExport {
            compartment: *c,
            doc_id: ids[c].clone(),
            bytes: doc.save(),
        })
        .collect();
    device.engine.merge_from_sync(nhs, &exports).unwrap();
    device.synced = docs(&tablet_exports(&device.engine, nhs));
    Ok(())
}

fn own_note(
    device: &Device,
    nhs: &NhsNumber,
) -> Option<(scr_core::record::EntryId, Vec<scr_core::record::VersionId>)> {
    let view = device
        .engine
        .view(nhs, AccessRequest::with_permission())
        .ok()?;
    let care = view
        .view
        .compartments
        .iter()
        .find(|c| c.compartment == Compartment::CareEvents)?;
    care.entries
        .iter()
        .filter(|e| matches!(e.state, EntryState::Current(_)))
        .find(|e| e.heads().iter().all(|v| v.provenance.device == device.name))
        .map(|e| (e.entry_id, e.head_ids()))
}

fn note(text: &str) -> EntryContent {
    EntryContent::EncounterSummary {
        setting: "home visit".into(),
        occurred_at: "2026-12-03".into(),
        note: text.into(),
    }
}

fn run(ops: Vec<Op>) -> Result<(), String> {
    let w = World::new();
    let signer = GrantSigner::from_seed([7; 32]);
    let (nhs, exports) = w.patient(40);
    let mk = |name: &'static str, class, principal, relationship, hold| {
        let engine = w.engine(name, class);
        engine.receive_patient(&nhs, &exports, hold).unwrap();
        Device {
            name,
            engine,
            principal,
            relationship,
            grants: Vec::new(),
            synced: docs(&exports),
        }
    };
    let mut devices = [
        mk(
            "nurse-tablet",
            DeviceClass::NurseTablet,
            nurse(),
            Some(RelationshipKind::Caseload),
            HoldReason::Caseload,
        ),
        mk(
            "gp-desktop",
            DeviceClass::GpSystem,
            gp_principal(),
            Some(RelationshipKind::Registration),
            HoldReason::Origin,
        ),
        mk(
            "phone",
            DeviceClass::PatientPhone,
            GrantPrincipal::Patient { nhs_number: nhs },
            None,
            HoldReason::OwnRecord,
        ),
    ];
    for d in devices.iter_mut() {
        d.log_in(&w, &signer, nhs);
    }
    let mut server = docs(&exports);
    let ids: HashMap<Compartment, String> = exports
        .iter()
        .map(|e| (e.compartment, e.doc_id.clone()))
        .collect();
    for (i, op) in ops.into_iter().enumerate() {
        let actor = match op {
            Op::GpAdds(_) | Op::GpCorrects | Op::GpChoice(_) => 1,
            Op::PatientPreference | Op::PatientChoice(_) => 2,
            _ => 0,
        };
        if let Op::Offline(hours) = op {
            w.clock.advance(hours * HOUR);
            for d in devices.iter_mut() {
                d.resume(&w, &signer, nhs);
            }
            continue;
        }
        if let Op::Sync(who) = op {
            sync(&mut server, &ids, &mut devices[who], &nhs, w.clock_now())?;
            continue;
        }
        let d = &devices[actor];
        // Refusals by the engine itself (an opted-out record, a correction
        // it does not allow) are fine: they change nothing.
        let _ = match op {
            Op::NurseNote => d
                .engine
                .add_entry(&nhs, note(&format!("visit {i}")), false, None)
                .map(|_| ()),
            Op::NurseCorrectsOwn => match own_note(d, &nhs) {
                Some((entry, heads)) => d
                    .engine
                    .supersede(&nhs, entry, &heads, note("corrected"))
                    .map(|_| ()),
                None => Ok(()),
            },
            Op::NurseRetractsOwn => match own_note(d, &nhs) {
                Some((entry, heads)) => d
                    .engine
                    .mark_entered_in_error(&nhs, entry, &heads, "wrong patient")
                    .map(|_| ()),
                None => Ok(()),
            },
            Op::NursePermission(granted) => d.engine.record_permission(&nhs, true, granted),
            Op::GpAdds(n) => d
                .engine
                .add_entry(&nhs, scr_core::fixtures::sample_entry(n), false, None)
                .map(|_| ()),
            Op::GpCorrects => match own_note(d, &nhs) {
                Some((entry, heads)) => d
                    .engine
                    .supersede(&nhs, entry, &heads, note("GP's correction"))
                    .map(|_| ()),
                None => d
                    .engine
                    .add_entry(&nhs, note("GP's note"), false, None)
                    .map(|_| ()),
            },
            Op::GpChoice(n) => d.engine.set_patient_choices(&nhs, choice(n), false),
            Op::PatientPreference => d
                .engine
                .add_entry(
                    &nhs,
                    EntryContent::Preference {
                        preference: scr_core::record::PreferenceKind::AccessNeeds,
                        detail: "uses a wheelchair".into(),
                    },
                    false,
                    None,
                )
                .map(|_| ()),
            Op::PatientChoice(n) => d.engine.set_patient_choices(&nhs, choice(n), n == 0),
            Op::Offline(_) | Op::Sync(_) => Ok(()),
        };
    }
    // Everyone comes back online at the end.
    for d in devices.iter_mut() {
        sync(&mut server, &ids, d, &nhs, w.clock_now())?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn an_honest_device_is_never_refused(ops in prop::collection::vec(op(), 1..20)) {
        prop_assert_eq!(run(ops), Ok(()));
    }
}
