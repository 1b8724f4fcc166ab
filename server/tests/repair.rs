//! An unreadable document repaired by the operator: a governance document
//! whose format was raised by a change written before the server checked
//! pushes (or by a bug) reads again after `admin repair-document`, in the
//! store and in the running server's memory, with the patient's choice as
//! it was; the repair is audited, never names the patient on the terminal,
//! and a second run finds nothing to do.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use scr_core::access::choices_from;
use scr_core::record::repair::readable;
use scr_core::record::{Compartment, SharingChoice};
use scr_core::store::ChunkKey;
use scr_server::records::load;

mod common;

fn repair_document(dir: &std::path::Path, doc: &str) -> std::process::Output {
    let d = dir.to_str().unwrap();
    let args = [
        "admin",
        "repair-document",
        "--data-dir",
        d,
        "--document",
        doc,
    ];
    common::admin::as_operator(d, &args, "")
}

/// The document as stored.
fn stored(store: &scr_core::Store, doc: &str) -> Automerge {
    Automerge::load(&store.document_bytes(doc).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_document_is_repaired_from_its_last_readable_state() {
    let dir = tempfile::tempdir().unwrap();
    let srv = common::server(dir.path()).await;
    let store = common::server_store(dir.path());
    let record = common::device::record(65, SharingChoice::CoreOnly);
    let nhs = record.nhs_number;
    let docs = load(&store, &record, "test").unwrap();
    let (_, gov) = docs
        .iter()
        .find(|(c, _)| *c == Compartment::Governance)
        .unwrap()
        .clone();

    // Bricked in the store, behind the server's back: the format raised.
    let mut doc = stored(&store, &gov);
    let heads = doc.get_heads();
    doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "format", 2))
        .unwrap();
    let bad = doc.get_changes(&heads).pop().unwrap();
    let key = ChunkKey::from_parts([gov.as_str(), "incremental", &bad.hash().to_string()]).unwrap();
    assert!(
        store
            .put_chunk_if_registered(&key, bad.raw_bytes(), false)
            .unwrap()
    );
    let reads = |store: &scr_core::Store| {
        store
            .open_record(&nhs)
            .is_ok_and(|r| r.view_compartment(Compartment::Governance).is_ok())
    };
    assert!(!reads(&store), "bricked: the record does not open");
    // The running server has it in memory, bricked.
    let handle = srv
        .repo()
        .find(gov.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!handle.with_document(|d| readable(d, Compartment::Governance)));

    let out = repair_document(dir.path(), &gov);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("governance document is repaired: header put back"),
        "{stdout}"
    );
    assert!(!stdout.contains(&nhs.digits()));

    // Reads again, in the store and in the server's memory, with the
    // patient's choice as it was.
    let governance = store
        .open_record(&nhs)
        .unwrap()
        .view_compartment(Compartment::Governance)
        .unwrap();
    assert_eq!(
        choices_from(Some(&governance)).sharing,
        SharingChoice::CoreOnly
    );
    let repaired_in_memory = tokio::time::timeout(Duration::from_secs(10), async {
        while !handle.with_document(|d| readable(d, Compartment::Governance)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        repaired_in_memory.is_ok(),
        "the running server merged the repair"
    );
    let audited: Vec<_> = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "document-repaired")
        .collect();
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].patient, Some(nhs));

    // Nothing left to do; a document no record owns is an error.
    let again = repair_document(dir.path(), &gov);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to repair"));
    let unknown = repair_document(dir.path(), "2tZx1cBL8gwcV1cxwmBs9uxW1fgU");
    assert_ne!(unknown.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no record owns that document"));
    srv.shutdown().await;
}
