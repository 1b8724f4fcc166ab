//! A client that pushes changes to a document its user may only read,
//! speaking the sync protocol directly (samod's own client stops offering
//! changes a peer never answers): the server does not merge them, and
//! flags the attempt (counted, audited with the patient and compartment),
//! while a push to a document the user may write is merged.
#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use scr_core::record::{Compartment, EntryContent, EntryId, EntryVersion, VersionStatus};

mod common;
use common::pusher::Pusher;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_read_only_document_is_refused_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::new(dir.path(), 71, Vec::new()).await;
    // A nurse may write care events, not core. (The care-event push is an
    // honest version, so the record's rules pass it too: push_rules.rs
    // has the dishonest ones.)
    p.push(Compartment::Core, |doc, _| {
        let mut tx = doc.transaction();
        tx.put(ROOT, "tamper", "x").unwrap();
        tx.commit();
    })
    .await;
    let visit = EntryVersion::new(
        EntryId::new(),
        Vec::new(),
        VersionStatus::Current,
        EntryContent::EncounterSummary {
            setting: "home visit".into(),
            occurred_at: "2026-12-03".into(),
            note: "visit".into(),
        },
        p.nurse_wrote(scr_core::clock::now_ms()),
    );
    let key = visit.version_id.to_string();
    p.push(Compartment::CareEvents, |doc, vs| {
        let mut tx = doc.transaction();
        tx.put(&vs, key.as_str(), serde_json::to_string(&visit).unwrap())
            .unwrap();
        tx.commit();
    })
    .await;
    let merged = p
        .until(Compartment::CareEvents, |d| {
            let vs = d.get(ROOT, "versions").unwrap().unwrap().1;
            d.get(&vs, key.as_str()).unwrap().is_some()
        })
        .await;
    assert!(merged, "the care-event push is merged");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let core = p.server_doc(Compartment::Core).await;
    assert!(
        core.get(ROOT, "tamper").unwrap().is_none(),
        "the core push is not merged"
    );
    assert_eq!(p.srv.metrics.pushes_refused.get(), 1);
    let flagged = p.refusals();
    assert_eq!(flagged.len(), 1, "audited once");
    assert_eq!(flagged[0].patient, Some(p.nhs));
    assert!(
        flagged[0]
            .detail
            .as_deref()
            .unwrap()
            .ends_with("pushed to core")
    );
    p.srv.shutdown().await;
}
