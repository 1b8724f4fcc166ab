//! The audit archive's storage interface (ADR 0017), one suite run against
//! both stores: the embedded SQLite file and PostgreSQL (a fresh database
//! on the cluster `scripts/with-postgres` starts), each through two handles
//! as two nodes hold them. Each store must keep the same promises: every
//! event archived once whichever node takes it, the chain verified across
//! nodes, alerts raised once and closed once, the sent log and the issued
//! grants kept as the rules above them expect.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};

use scr_core::NhsNumber;
use scr_core::access::{Alert, AlertReason, AlertType};
use scr_core::audit::{AuditDraft, AuditEvent, GENESIS_HASH, Outcome};
use scr_core::channel::hex_key;
use scr_core::crypto::SecretKey;
use scr_core::fixtures::test_nhs_number;
use scr_core::grant::{GrantPrincipal, GrantRelationship, RelationshipKind, RoleProfileGrant};
use scr_core::protocol::{AUDIT_UPLOAD_FORMAT, AuditUpload, Backlog};
use scr_core::record::Compartment;
use scr_server::archive::{AlertOutcome, Archive, Issued, SentNow};

mod common;

type Nodes = (Archive, Archive, tempfile::TempDir);

fn root() -> SecretKey {
    SecretKey::from_bytes([42; 32])
}

fn sqlite() -> Option<Nodes> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    Some((
        Archive::open(&path, &root()).unwrap(),
        Archive::open(&path, &root()).unwrap(),
        dir,
    ))
}

fn postgres() -> Option<Nodes> {
    let url = common::postgres::fresh_database()?;
    Some((
        Archive::on_postgres(common::postgres::connect(&url), &root()),
        Archive::on_postgres(common::postgres::connect(&url), &root()),
        tempfile::tempdir().unwrap(),
    ))
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { if let Some(n) = super::sqlite() { super::$name(n) } })*
        }
        mod on_postgres {
            $(#[test] fn $name() { if let Some(n) = super::postgres() { super::$name(n) } })*
        }
    };
}

conformance!(
    half_an_upload_on_one_node_and_the_rest_on_another_archive_once_unbroken,
    two_nodes_taking_one_upload_at_once_archive_it_once,
    a_gap_and_a_fork_are_stored_flagged,
    an_alert_is_raised_once_and_closed_once,
    the_sent_log_keeps_the_first_time_and_moves_the_last,
    grants_are_kept_once_and_end_when_retired,
    a_device_holding_old_events_is_overdue,
);

const DEVICE: [u8; 32] = [5; 32];
const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const PATIENT: u32 = 71;

fn nurse_grant() -> RoleProfileGrant {
    RoleProfileGrant {
        grant_id: "grant-1".into(),
        principal: GrantPrincipal::Staff {
            user_id: "555000000102".into(),
            display_name: "Jo Nurse".into(),
            job_role: "R0050".into(),
            job_role_name: "Community Nurse".into(),
            organisation: "RX1".into(),
            activities: vec!["B0264".into()],
            privacy_officer: false,
        },
        device_id: hex_key(&DEVICE),
        issued_at_ms: T0,
        expires_at_ms: T0 + 12 * HOUR,
        relationships: vec![GrantRelationship {
            nhs_number: test_nhs_number(PATIENT),
            kind: RelationshipKind::Caseload,
        }],
    }
}

fn issued() -> Issued {
    Issued {
        grants: vec![nurse_grant()],
        revoked_at_ms: None,
        users_revoked_at: Default::default(),
    }
}

/// The device's chain: `n` of the nurse's views of her patient, one a
/// minute; the third is emergency access (an alert).
fn chain(n: u64) -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = Vec::new();
    for seq in 1..=n {
        let emergency = seq == 3;
        let draft = AuditDraft {
            user: "555000000102".into(),
            role: "R0050".into(),
            organisation: "RX1".into(),
            patient: Some(test_nhs_number(PATIENT)),
            action: "view".into(),
            compartments: Vec::new(),
            entries: Vec::new(),
            outcome: Outcome::Permit,
            basis: Some(if emergency { "emergency" } else { "permission" }.into()),
            alerts: if emergency {
                vec![Alert::new(AlertType::AccessAlert, AlertReason::Emergency).unwrap()]
            } else {
                Vec::new()
            },
            detail: None,
        };
        let prev = out.last().map_or(GENESIS_HASH.to_owned(), |e| e.hash());
        out.push(AuditEvent::from_draft(
            draft,
            &hex_key(&DEVICE),
            seq,
            prev,
            T0 + seq as i64 * 60_000,
        ));
    }
    out
}

fn upload(events: &[AuditEvent]) -> AuditUpload {
    AuditUpload {
        format: AUDIT_UPLOAD_FORMAT,
        events: events.to_vec(),
        backlog: Backlog::default(),
    }
}

fn half_an_upload_on_one_node_and_the_rest_on_another_archive_once_unbroken((a, b, _): Nodes) {
    let events = chain(10);
    let first = a
        .accept(&DEVICE, &upload(&events[..5]), &issued(), T0)
        .unwrap();
    assert_eq!((first.stored, first.flagged), (5, 0));
    // The device did not hear the acknowledgement: it sends all again, to
    // the other node.
    let again = b.accept(&DEVICE, &upload(&events), &issued(), T0).unwrap();
    assert_eq!(
        (
            again.stored,
            again.duplicates,
            again.flagged,
            again.through_seq
        ),
        (5, 5, 0, 10)
    );
    assert_eq!(a.chain(&DEVICE).unwrap(), (10, events[9].hash()));
    assert_eq!(
        b.counts_of(&DEVICE).unwrap(),
        (10, 0),
        "each once, none flagged"
    );
    let about = a.events_about(&test_nhs_number(PATIENT)).unwrap();
    assert_eq!(
        about.iter().map(|e| e.event.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>(),
        "the patient's log, in order, opened from its seal"
    );
    assert!(
        a.events_about(&NhsNumber::parse("9434765919").unwrap())
            .unwrap()
            .is_empty()
    );
}

fn two_nodes_taking_one_upload_at_once_archive_it_once((a, b, _): Nodes) {
    let events = chain(40);
    for round in 0..4 {
        let part = &events[round * 10..(round + 1) * 10];
        let start = Arc::new(Barrier::new(2));
        let acks = std::thread::scope(|s| {
            let racers: Vec<_> = [&a, &b]
                .into_iter()
                .map(|node| {
                    let start = start.clone();
                    s.spawn(move || {
                        start.wait();
                        node.accept(&DEVICE, &upload(part), &issued(), T0)
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap())
                .collect::<Vec<_>>()
        });
        let acks: Vec<_> = acks
            .into_iter()
            .map(|a| a.expect("both nodes answer the device"))
            .collect();
        let stored: u32 = acks.iter().map(|a| a.stored).sum();
        let duplicates: u32 = acks.iter().map(|a| a.duplicates).sum();
        assert_eq!((stored, duplicates), (10, 10), "round {round}: {acks:?}");
    }
    assert_eq!(
        a.counts_of(&DEVICE).unwrap(),
        (40, 0),
        "once each, unbroken"
    );
    assert_eq!(b.chain(&DEVICE).unwrap().0, 40);
}

fn a_gap_and_a_fork_are_stored_flagged((a, b, _): Nodes) {
    let events = chain(4);
    a.accept(&DEVICE, &upload(&events[..1]), &issued(), T0)
        .unwrap();
    let gap = b
        .accept(&DEVICE, &upload(&events[2..3]), &issued(), T0)
        .unwrap();
    assert_eq!((gap.stored, gap.flagged), (1, 1), "event 2 is missing");
    // A rewritten event 3 (same place, other content): a fork.
    let mut rewritten = events[3].clone();
    rewritten.seq = 3;
    rewritten.id = "a-rewritten-event".into();
    let fork = a
        .accept(&DEVICE, &upload(&[rewritten]), &issued(), T0)
        .unwrap();
    assert_eq!((fork.stored, fork.flagged), (1, 1));
    assert_eq!(b.counts_of(&DEVICE).unwrap(), (3, 2));
    assert_eq!(a.counts().unwrap(), (3, 2));
}

fn an_alert_is_raised_once_and_closed_once((a, b, _): Nodes) {
    let events = chain(4);
    a.accept(&DEVICE, &upload(&events), &issued(), T0).unwrap();
    b.accept(&DEVICE, &upload(&events), &issued(), T0).unwrap();
    let open = b.alerts("RX1", false).unwrap();
    assert_eq!(open.len(), 1, "one alert for the emergency view");
    assert_eq!(open[0].event.seq, 3);
    assert!(
        b.alerts("RYA", true).unwrap().is_empty(),
        "routed to RX1 only"
    );
    let id = open[0].id;
    assert!(
        !a.close_alert(id, "RYA", AlertOutcome::Justified, "po", T0)
            .unwrap()
    );
    assert!(
        a.close_alert(id, "RX1", AlertOutcome::Justified, "po", T0)
            .unwrap()
    );
    assert!(
        !b.close_alert(id, "RX1", AlertOutcome::Referred, "po", T0)
            .unwrap()
    );
    assert!(a.alerts("RX1", false).unwrap().is_empty());
    let all = b.alerts("RX1", true).unwrap();
    assert_eq!(
        (all[0].status.as_str(), all[0].closed_by.as_deref()),
        ("justified", Some("po"))
    );
}

fn the_sent_log_keeps_the_first_time_and_moves_the_last((a, b, _): Nodes) {
    let sent = |doc: &str| SentNow {
        device: DEVICE,
        document: doc.into(),
        patient: test_nhs_number(PATIENT),
        compartment: Compartment::Core,
    };
    a.record_sent(&[sent("doc-a"), sent("doc-b")], T0).unwrap();
    b.record_sent(&[sent("doc-a")], T0 + 5).unwrap();
    let log = a.sent_to(&DEVICE).unwrap();
    assert_eq!(log.len(), 2);
    let doc_a = log.iter().find(|s| s.document == "doc-a").unwrap();
    assert_eq!((doc_a.first_sent_ms, doc_a.last_sent_ms), (T0, T0 + 5));
    assert_eq!(doc_a.patient, test_nhs_number(PATIENT));
    assert!(b.sent_to(&[6; 32]).unwrap().is_empty());
}

fn grants_are_kept_once_and_end_when_retired((a, b, _): Nodes) {
    let grant = nurse_grant();
    a.record_grant(&DEVICE, &grant).unwrap();
    b.record_grant(&DEVICE, &grant).unwrap();
    let kept = a.grants_issued(&DEVICE, T0 - HOUR, T0 + HOUR).unwrap();
    assert_eq!(kept, vec![grant.clone()], "kept once, opened from its seal");
    assert!(
        b.grants_issued(&DEVICE, T0 + HOUR, T0 + 2 * HOUR)
            .unwrap()
            .is_empty()
    );
    b.retire_grant(&DEVICE, &grant.grant_id, T0 + HOUR).unwrap();
    a.retire_grant(&DEVICE, &grant.grant_id, T0 + 2 * HOUR)
        .unwrap();
    let retired = a.grants_issued(&DEVICE, T0 - HOUR, T0 + HOUR).unwrap();
    assert_eq!(
        retired[0].expires_at_ms,
        T0 + HOUR,
        "ends at its first retirement"
    );
}

fn a_device_holding_old_events_is_overdue((a, b, _): Nodes) {
    let events = chain(2);
    let mut up = upload(&events[..1]);
    up.backlog = Backlog {
        queued: 1,
        oldest_ms: Some(T0),
    };
    a.accept(&DEVICE, &up, &issued(), T0).unwrap();
    assert_eq!(b.overdue_devices(T0 + 1).unwrap(), 1);
    assert_eq!(b.overdue_devices(T0).unwrap(), 0);
    b.accept(&DEVICE, &upload(&events[1..]), &issued(), T0)
        .unwrap();
    assert_eq!(a.overdue_devices(T0 + 1).unwrap(), 0, "all sent now");
}
