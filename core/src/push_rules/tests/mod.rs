//! The push rules, attack by attack: each edit an attacker with a valid
//! grant would make to a compartment document, and the honest ones that
//! must pass.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc};

use super::*;
use crate::fixtures::test_nhs_number;
use crate::grant::{GrantPrincipal, GrantRelationship};
use crate::record::{EntryId, PermissionScope, Provenance, SharingChoice, VersionId};

const HOUR: i64 = 3_600_000;
const NOW: i64 = 100 * HOUR;

fn patient() -> NhsNumber {
    test_nhs_number(1)
}

fn staff(
    user: &str,
    job_role: &str,
    org: &str,
    device: &str,
    kind: RelationshipKind,
) -> RoleProfileGrant {
    RoleProfileGrant {
        grant_id: format!("grant-{user}"),
        principal: GrantPrincipal::Staff {
            user_id: user.into(),
            display_name: "n".into(),
            job_role: job_role.into(),
            job_role_name: "r".into(),
            organisation: org.into(),
            activities: vec!["B0264".into(), "B0370".into(), "B0380".into()],
            privacy_officer: false,
        },
        device_id: device.into(),
        issued_at_ms: NOW - 2 * HOUR,
        expires_at_ms: NOW + 10 * HOUR,
        relationships: vec![GrantRelationship {
            nhs_number: patient(),
            kind,
        }],
    }
}

fn nurse() -> RoleProfileGrant {
    staff(
        "555000000102",
        "R0050",
        "RX1",
        "nurse-tablet",
        RelationshipKind::Caseload,
    )
}

fn gp() -> RoleProfileGrant {
    staff(
        "555000000001",
        "R0260",
        "A99001",
        "gp-desktop",
        RelationshipKind::Registration,
    )
}

fn phone() -> RoleProfileGrant {
    RoleProfileGrant {
        grant_id: "grant-phone".into(),
        principal: GrantPrincipal::Patient {
            nhs_number: patient(),
        },
        device_id: "phone".into(),
        issued_at_ms: NOW - 2 * HOUR,
        expires_at_ms: NOW + 10 * HOUR,
        relationships: Vec::new(),
    }
}

fn by(grant: &RoleProfileGrant, at: i64) -> Provenance {
    let (author_id, role, organisation) = grant.actor();
    Provenance {
        author_id,
        role,
        organisation,
        device: grant.device_id.clone(),
        recorded_at_ms: at,
    }
}

fn note(text: &str) -> EntryContent {
    EntryContent::EncounterSummary {
        setting: "home visit".into(),
        occurred_at: "2026-12-03".into(),
        note: text.into(),
    }
}

fn version(content: EntryContent, provenance: Provenance) -> EntryVersion {
    EntryVersion::new(
        EntryId::new(),
        Vec::new(),
        VersionStatus::Current,
        content,
        provenance,
    )
}

/// A compartment document as the server holds it, with one version the GP
/// feed wrote.
struct Doc {
    doc: AutoCommit,
    versions: ObjId,
    existing: EntryVersion,
}

fn doc(compartment: Compartment, existing: EntryContent) -> Doc {
    let mut doc = AutoCommit::new();
    doc.put(ROOT, "format", 1).unwrap();
    doc.put(ROOT, "compartment", compartment.as_str()).unwrap();
    let versions = doc.put_object(ROOT, "versions", ObjType::Map).unwrap();
    let existing = version(existing, by(&gp(), NOW - 5 * HOUR));
    put(&mut doc, &versions, &existing);
    doc.commit();
    Doc {
        doc,
        versions,
        existing,
    }
}

fn put(doc: &mut AutoCommit, versions: &ObjId, v: &EntryVersion) {
    let json = serde_json::to_string(v).unwrap();
    doc.put(versions, v.version_id.to_string(), json).unwrap();
}

fn check(
    compartment: Compartment,
    d: &mut Doc,
    after: &mut AutoCommit,
    grants: &[RoleProfileGrant],
) -> Result<usize, Refusal> {
    both(
        compartment,
        &mut d.doc,
        after,
        grants,
        &PushLimits::default(),
    )
}

/// `check_push` on the two documents and `check_changes` on the changes
/// `after` adds, which must agree.
fn both(
    compartment: Compartment,
    before: &mut AutoCommit,
    after: &mut AutoCommit,
    grants: &[RoleProfileGrant],
    limits: &PushLimits,
) -> Result<usize, Refusal> {
    let on_documents = check_push(compartment, before, after, grants, &patient(), NOW, limits);
    let heads = before.get_heads();
    let changes: Vec<Vec<u8>> = after
        .get_changes(&heads)
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let on_changes = check_changes(
        compartment,
        before.document(),
        &changes,
        grants,
        &patient(),
        NOW,
        limits,
    );
    assert_eq!(on_changes, Some(on_documents), "the two checks disagree");
    let applied = check_applied(
        compartment,
        before.document(),
        &changes,
        grants,
        &patient(),
        NOW,
        limits,
    );
    assert_eq!(applied, on_documents, "the fallback disagrees");
    on_documents
}

/// `d` with `edit` applied to a fork, checked for `grants`.
fn pushed(
    compartment: Compartment,
    d: &mut Doc,
    grants: &[RoleProfileGrant],
    edit: impl FnOnce(&mut AutoCommit, &ObjId, &EntryVersion),
) -> Result<usize, Refusal> {
    let mut after = d.doc.fork();
    edit(&mut after, &d.versions, &d.existing);
    after.commit();
    check(compartment, d, &mut after, grants)
}

#[test]
fn an_honest_new_version_and_an_honest_supersession_pass() {
    let mut d = doc(Compartment::CareEvents, note("seen by GP"));
    let n = nurse();
    let ok = pushed(
        Compartment::CareEvents,
        &mut d,
        std::slice::from_ref(&n),
        |doc, vs, _| {
            put(doc, vs, &version(note("visit"), by(&nurse(), NOW - HOUR)));
            put(doc, vs, &version(note("second visit"), by(&nurse(), NOW)));
        },
    );
    assert_eq!(ok, Ok(2));
    // The GP supersedes the GP feed's version of the entry.
    let g = gp();
    let ok = pushed(Compartment::CareEvents, &mut d, &[g], |doc, vs, old| {
        let newer = EntryVersion::new(
            old.entry_id,
            vec![old.version_id],
            VersionStatus::Current,
            note("corrected"),
            by(&gp(), NOW),
        );
        put(doc, vs, &newer);
    });
    assert_eq!(ok, Ok(1));
    // Nothing pushed: nothing added.
    assert_eq!(
        pushed(Compartment::CareEvents, &mut d, &[n], |_, _, _| {}),
        Ok(0)
    );
}

#[test]
fn existing_versions_are_never_rewritten_or_deleted() {
    let mut d = doc(Compartment::CareEvents, note("no concerns"));
    let g = [nurse()];
    let rewritten = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, old| {
        let mut forged = old.clone();
        forged.content = note("REWRITTEN: no concerns, discharge");
        doc.put(
            vs,
            old.version_id.to_string(),
            serde_json::to_string(&forged).unwrap(),
        )
        .unwrap();
    });
    assert_eq!(rewritten, Err(Refusal::VersionChanged));
    let deleted = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, old| {
        doc.delete(vs, old.version_id.to_string()).unwrap();
    });
    assert_eq!(deleted, Err(Refusal::VersionDeleted));
}

#[test]
fn the_header_never_changes_and_nothing_is_added_beside_it() {
    let mut d = doc(
        Compartment::Governance,
        EntryContent::Sharing {
            choice: SharingChoice::CoreOnly,
            include_sensitive: false,
            hidden: false,
        },
    );
    let g = [phone()];
    let bricked = pushed(Compartment::Governance, &mut d, &g, |doc, _, _| {
        doc.put(ROOT, "format", 2).unwrap();
    });
    assert_eq!(bricked, Err(Refusal::HeaderChanged));
    let moved = pushed(Compartment::Governance, &mut d, &g, |doc, _, _| {
        doc.put(ROOT, "compartment", "core").unwrap();
    });
    assert_eq!(moved, Err(Refusal::HeaderChanged));
    let replaced = pushed(Compartment::Governance, &mut d, &g, |doc, _, _| {
        doc.put_object(ROOT, "versions", ObjType::Map).unwrap();
    });
    assert_eq!(replaced, Err(Refusal::HeaderChanged));
    let beside = pushed(Compartment::Governance, &mut d, &g, |doc, _, _| {
        doc.put(ROOT, "note", "x").unwrap();
    });
    assert_eq!(beside, Err(Refusal::UnknownField));
}

#[test]
fn a_new_version_is_the_writers_own_and_recorded_while_its_grant_held() {
    let mut d = doc(Compartment::CareEvents, note("x"));
    let n = nurse();
    let mut other = by(&n, NOW);
    other.author_id = "555000000999".into();
    let forged = pushed(
        Compartment::CareEvents,
        &mut d,
        std::slice::from_ref(&n),
        |doc, vs, _| {
            put(doc, vs, &version(note("framed"), other));
        },
    );
    assert_eq!(forged, Err(Refusal::ForgedProvenance));
    let mut elsewhere = by(&n, NOW);
    elsewhere.device = "another-tablet".into();
    let forged = pushed(
        Compartment::CareEvents,
        &mut d,
        std::slice::from_ref(&n),
        |doc, vs, _| {
            put(doc, vs, &version(note("x"), elsewhere));
        },
    );
    assert_eq!(forged, Err(Refusal::ForgedProvenance));
    let future = pushed(
        Compartment::CareEvents,
        &mut d,
        std::slice::from_ref(&n),
        |doc, vs, _| {
            put(doc, vs, &version(note("x"), by(&nurse(), NOW + HOUR)));
        },
    );
    assert_eq!(future, Err(Refusal::ImplausibleTime));
    // Written yesterday, offline, under yesterday's grant: refused with
    // only today's grant, accepted with both (the server keeps them all).
    let mut yesterday = n.clone();
    yesterday.grant_id = "yesterday".into();
    yesterday.issued_at_ms = NOW - 26 * HOUR;
    yesterday.expires_at_ms = NOW - 14 * HOUR;
    let offline = |doc: &mut AutoCommit, vs: &ObjId, _: &EntryVersion| {
        put(
            doc,
            vs,
            &version(note("offline"), by(&nurse(), NOW - 20 * HOUR)),
        );
    };
    assert_eq!(
        pushed(
            Compartment::CareEvents,
            &mut d,
            std::slice::from_ref(&n),
            offline
        ),
        Err(Refusal::ImplausibleTime)
    );
    assert_eq!(
        pushed(Compartment::CareEvents, &mut d, &[yesterday, n], offline),
        Ok(1)
    );
}

#[test]
fn a_version_belongs_to_its_compartment_its_key_and_its_entry() {
    let mut d = doc(Compartment::CareEvents, note("x"));
    let g = [nurse()];
    let allergy = EntryContent::Allergy {
        substance: crate::record::Code {
            system: "http://snomed.info/sct".into(),
            code: "764146007".into(),
            display: "Penicillin".into(),
        },
        reaction: None,
        severity: None,
    };
    let misplaced = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, _| {
        put(doc, vs, &version(allergy, by(&nurse(), NOW)));
    });
    assert_eq!(misplaced, Err(Refusal::WrongCompartment));
    let misfiled = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, _| {
        let v = version(note("x"), by(&nurse(), NOW));
        doc.put(
            vs,
            VersionId::new().to_string(),
            serde_json::to_string(&v).unwrap(),
        )
        .unwrap();
    });
    assert_eq!(misfiled, Err(Refusal::MisfiledVersion));
    let unknown = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, _| {
        let mut v = version(note("x"), by(&nurse(), NOW));
        v.replaces = vec![VersionId::new()];
        put(doc, vs, &v);
    });
    assert_eq!(unknown, Err(Refusal::UnknownReplaces));
    let other_entry = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, old| {
        let mut v = version(note("x"), by(&nurse(), NOW));
        v.replaces = vec![old.version_id];
        put(doc, vs, &v);
    });
    assert_eq!(other_entry, Err(Refusal::UnknownReplaces));
    let garbage = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, _| {
        doc.put(vs, VersionId::new().to_string(), "not a version")
            .unwrap();
    });
    assert_eq!(garbage, Err(Refusal::MalformedVersion));
    let not_text = pushed(Compartment::CareEvents, &mut d, &g, |doc, vs, _| {
        doc.put(vs, VersionId::new().to_string(), 7).unwrap();
    });
    assert_eq!(not_text, Err(Refusal::MalformedVersion));
}

#[test]
fn a_push_is_bounded() {
    let mut d = doc(Compartment::CareEvents, note("x"));
    let limits = PushLimits {
        max_new_versions: 2,
        max_version_bytes: 2048,
        ..PushLimits::default()
    };
    let mut after = d.doc.fork();
    for _ in 0..3 {
        put(
            &mut after,
            &d.versions,
            &version(note("x"), by(&nurse(), NOW)),
        );
    }
    let r = both(
        Compartment::CareEvents,
        &mut d.doc,
        &mut after,
        &[nurse()],
        &limits,
    );
    assert_eq!(r, Err(Refusal::TooManyVersions));
    let mut after = d.doc.fork();
    put(
        &mut after,
        &d.versions,
        &version(note(&"x".repeat(4096)), by(&nurse(), NOW)),
    );
    let r = both(
        Compartment::CareEvents,
        &mut d.doc,
        &mut after,
        &[nurse()],
        &limits,
    );
    assert_eq!(r, Err(Refusal::VersionTooLarge));
    let _ = &mut d;
}

#[test]
fn who_writes_choices_permissions_and_other_organisations_versions() {
    let sharing = |choice| EntryContent::Sharing {
        choice,
        include_sensitive: true,
        hidden: false,
    };
    let mut d = doc(Compartment::Governance, sharing(SharingChoice::CoreOnly));
    // A nurse may not record the patient's choice, however it is dated.
    let overridden = pushed(Compartment::Governance, &mut d, &[nurse()], |doc, vs, _| {
        put(
            doc,
            vs,
            &version(sharing(SharingChoice::CoreAndAdditional), by(&nurse(), NOW)),
        );
    });
    assert_eq!(overridden, Err(Refusal::NotPermitted));
    // The patient, and their registered GP, may.
    for g in [phone(), gp()] {
        let ok = pushed(
            Compartment::Governance,
            &mut d,
            std::slice::from_ref(&g),
            |doc, vs, old| {
                let v = EntryVersion::new(
                    old.entry_id,
                    vec![old.version_id],
                    VersionStatus::Current,
                    sharing(SharingChoice::OptOut),
                    by(&g, NOW),
                );
                put(doc, vs, &v);
            },
        );
        assert_eq!(ok, Ok(1), "{:?}", g.principal());
    }
    // A privacy officer may only lift a hidden record's hiding.
    let mut officer = staff(
        "555000000904",
        "R8003",
        "RX1",
        "po-desktop",
        RelationshipKind::Caseload,
    );
    if let GrantPrincipal::Staff {
        privacy_officer, ..
    } = &mut officer.principal
    {
        *privacy_officer = true;
    }
    let hidden = EntryContent::Sharing {
        choice: SharingChoice::OptOut,
        include_sensitive: true,
        hidden: true,
    };
    let mut h = doc(Compartment::Governance, hidden);
    let lift = |content: EntryContent| {
        let officer = officer.clone();
        move |doc: &mut AutoCommit, vs: &ObjId, old: &EntryVersion| {
            let v = EntryVersion::new(
                old.entry_id,
                vec![old.version_id],
                VersionStatus::Current,
                content,
                by(&officer, NOW),
            );
            put(doc, vs, &v);
        }
    };
    let g = [officer.clone()];
    let unhidden = EntryContent::Sharing {
        choice: SharingChoice::CoreOnly,
        include_sensitive: true,
        hidden: false,
    };
    assert_eq!(
        pushed(Compartment::Governance, &mut h, &g, lift(unhidden)),
        Ok(1)
    );
    let widened = sharing(SharingChoice::CoreAndAdditional);
    assert_eq!(
        pushed(Compartment::Governance, &mut h, &g, lift(widened)),
        Err(Refusal::NotPermitted)
    );
    // A permission to view names the writer's own organisation.
    let permission = |org: &str| EntryContent::PermissionToView {
        organisation: org.into(),
        user_id: "555000000102".into(),
        scope: PermissionScope::Organisation,
        granted: true,
    };
    let ok = pushed(Compartment::Governance, &mut d, &[nurse()], |doc, vs, _| {
        put(doc, vs, &version(permission("RX1"), by(&nurse(), NOW)));
    });
    assert_eq!(ok, Ok(1));
    let theirs = pushed(Compartment::Governance, &mut d, &[nurse()], |doc, vs, _| {
        put(doc, vs, &version(permission("RYA"), by(&nurse(), NOW)));
    });
    assert_eq!(theirs, Err(Refusal::NotPermitted));
    let by_phone = pushed(Compartment::Governance, &mut d, &[phone()], |doc, vs, _| {
        put(doc, vs, &version(permission(""), by(&phone(), NOW)));
    });
    assert_eq!(by_phone, Err(Refusal::NotPermitted));
    // A nurse supersedes the GP practice's care event only as the GP could.
    let mut care = doc(Compartment::CareEvents, note("GP's note"));
    let superseded = pushed(
        Compartment::CareEvents,
        &mut care,
        &[nurse()],
        |doc, vs, old| {
            let v = EntryVersion::new(
                old.entry_id,
                vec![old.version_id],
                VersionStatus::Current,
                note("nurse's version"),
                by(&nurse(), NOW),
            );
            put(doc, vs, &v);
        },
    );
    assert_eq!(superseded, Err(Refusal::NotPermitted));
    // The kind of an entry never changes.
    let kind = pushed(
        Compartment::CareEvents,
        &mut care,
        &[gp()],
        |doc, vs, old| {
            let v = EntryVersion::new(
                old.entry_id,
                vec![old.version_id],
                VersionStatus::Current,
                EntryContent::TestResult {
                    test: crate::record::Code {
                        system: "s".into(),
                        code: "c".into(),
                        display: "d".into(),
                    },
                    value: "1".into(),
                    unit: None,
                    taken_at: "2026-12-03".into(),
                },
                by(&gp(), NOW),
            );
            put(doc, vs, &v);
        },
    );
    assert_eq!(kind, Err(Refusal::KindChanged));
    // A patient's phone supersedes nothing outside its own compartments.
    let phone_edit = pushed(
        Compartment::CareEvents,
        &mut care,
        &[phone()],
        |doc, vs, old| {
            let v = EntryVersion::new(
                old.entry_id,
                vec![old.version_id],
                VersionStatus::Current,
                note("patient's version"),
                by(&phone(), NOW),
            );
            put(doc, vs, &v);
        },
    );
    assert_eq!(phone_edit, Err(Refusal::NotPermitted));
    assert!(care.doc.get(ROOT, "format").unwrap().is_some());
}

mod changes;
mod layout;
