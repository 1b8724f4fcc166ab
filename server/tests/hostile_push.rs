//! A client that pushes changes to a document its user may only read,
//! speaking the sync protocol directly (samod's own client stops offering
//! changes a peer never answers): the server does not merge them, and
//! flags the attempt (counted, audited with the patient and compartment),
//! while a push to a document the user may write is merged.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use scr_core::channel::{self, Hello, Purpose, StaticKeypair, hex_key};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_server::records::{FileEntry, RecordFile, load};
use scr_server::users::assign;

mod common;

/// A sync message carrying one change, `edit`, made on top of `bytes`.
fn push(bytes: &[u8], edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>)) -> Vec<u8> {
    let mut doc = automerge::Automerge::load(bytes).unwrap();
    let mut tx = doc.transaction();
    edit(&mut tx);
    tx.commit();
    let change = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
    automerge::sync::Message {
        heads: doc.get_heads(),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![change].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode()
}

async fn server_has(srv: &scr_server::serve::RunningServer, id: &str, key: &str) -> bool {
    let handle = srv.repo().find(id.parse().unwrap()).await.unwrap().unwrap();
    handle.with_document(|d| {
        let in_versions = d
            .get(ROOT, "versions")
            .ok()
            .flatten()
            .is_some_and(|(_, vs)| d.get(&vs, key).ok().flatten().is_some());
        in_versions || d.get(ROOT, key).ok().flatten().is_some()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_read_only_document_is_refused_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let srv = common::server(dir.path()).await;
    let store = common::server_store(dir.path());
    let nhs = test_nhs_number(71);
    let docs = load(
        &store,
        &RecordFile {
            nhs_number: nhs,
            sharing: SharingChoice::CoreAndAdditional,
            include_sensitive: false,
            entries: vec![FileEntry {
                sensitive: false,
                content: sample_entry(0),
            }],
        },
        "test",
    )
    .unwrap();
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    assign(
        &store,
        &srv.directory,
        common::NURSE_ID,
        nhs,
        RelationshipKind::Caseload,
    )
    .unwrap();
    let keys = Arc::new(StaticKeypair::generate().unwrap());
    let token = srv
        .directory
        .create_enrollment_token(
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            scr_core::clock::now_ms() + 60_000,
        )
        .unwrap();
    common::enroll(&srv, &keys, &token).await;
    scr_core::sync::login(
        common::ws(srv.sync_addr).await,
        &keys,
        &srv.server_key,
        &common::nurse_login(),
    )
    .await
    .unwrap();

    let exports = store.open_record(&nhs).unwrap().export();
    let doc_of = |c: Compartment| docs.iter().find(|(k, _)| *k == c).unwrap().1.clone();
    let bytes_of = |c: Compartment| {
        exports
            .iter()
            .find(|e| e.compartment == c)
            .unwrap()
            .bytes
            .clone()
    };
    let (me, server) = (hex_key(&keys.public()), hex_key(&srv.server_key));
    let hello = Hello::new(Purpose::Sync, None).encode();
    let mut ch = channel::PlainSession::open(
        channel::connect(
            common::ws(srv.sync_addr).await,
            &keys,
            &srv.server_key,
            &hello,
        )
        .await
        .unwrap(),
    )
    .await
    .unwrap();
    ch.send(&common::wire("join", &[("senderId", &me)], None))
        .await
        .unwrap();
    let peer = ch.recv().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&peer).contains("peer"));

    // A nurse may write care events, not core. (The care-event push is an
    // honest version, so the record's rules pass it too: push_rules.rs
    // has the dishonest ones.)
    let n = common::nurse();
    let visit = scr_core::record::EntryVersion::new(
        scr_core::record::EntryId::new(),
        Vec::new(),
        scr_core::record::VersionStatus::Current,
        scr_core::record::EntryContent::EncounterSummary {
            setting: "home visit".into(),
            occurred_at: "2026-12-03".into(),
            note: "visit".into(),
        },
        scr_core::record::Provenance {
            author_id: n.user_id,
            role: n.job_role,
            organisation: n.organisation,
            device: me.clone(),
            recorded_at_ms: scr_core::clock::now_ms(),
        },
    );
    let visit_key = visit.version_id.to_string();
    for (c, change) in [
        (
            Compartment::Core,
            push(&bytes_of(Compartment::Core), |doc| {
                doc.put(ROOT, "tamper", "x").unwrap();
            }),
        ),
        (
            Compartment::CareEvents,
            push(&bytes_of(Compartment::CareEvents), |doc| {
                let vs = doc.get(ROOT, "versions").unwrap().unwrap().1;
                doc.put(
                    &vs,
                    visit_key.as_str(),
                    serde_json::to_string(&visit).unwrap(),
                )
                .unwrap();
            }),
        ),
    ] {
        let msg = common::wire(
            "sync",
            &[
                ("documentId", &doc_of(c)),
                ("senderId", &me),
                ("targetId", &server),
            ],
            Some(&change),
        );
        ch.send(&msg).await.unwrap();
    }
    let merged = tokio::time::timeout(Duration::from_secs(10), async {
        while !server_has(&srv, &doc_of(Compartment::CareEvents), &visit_key).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(merged.is_ok(), "the care-event push is merged");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !server_has(&srv, &doc_of(Compartment::Core), "tamper").await,
        "the core push is not merged"
    );
    assert_eq!(srv.metrics.pushes_refused.get(), 1);
    let flagged: Vec<_> = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "push-refused")
        .collect();
    assert_eq!(flagged.len(), 1, "audited once");
    assert_eq!(flagged[0].patient, Some(nhs));
    assert!(
        flagged[0]
            .detail
            .as_deref()
            .unwrap()
            .ends_with("pushed to core")
    );
    srv.shutdown().await;
}
