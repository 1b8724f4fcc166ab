//! The sealed store's rows (ADR 0017), one suite run against both
//! backends: the SQLite file and PostgreSQL (a fresh database on the
//! cluster `scripts/with-postgres` starts), each opened through two
//! handles as two nodes (or a node and an admin command) hold it. The
//! store must keep the same promises on both: what one handle writes the
//! other reads; samod's chunks load by key and by range; forgetting a
//! record leaves nothing of it; two writers lose neither's update of a
//! secret nor fork the audit chain; the store key is one, created once;
//! a wrong key opens nothing; and the backend holds only ciphertext.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};

use scr_core::audit::{AuditDraft, Outcome};
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::record::{Compartment, EntryContent, Provenance};
use scr_core::store::ChunkKey;
use scr_core::{NhsNumber, Store, StoreError};
use scr_server::pg::store::PgStore;

mod common;

fn kek(byte: u8) -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes([byte; 32]))
}

/// Opens one more handle on the same rows, with the given key.
type Opener = Arc<dyn Fn(&StaticKeyProvider) -> Result<Store, StoreError> + Send + Sync>;

/// Two handles on one store, how to open another, and where its raw bytes
/// can be read (the SQLite files, or the PostgreSQL database's URL).
struct Nodes {
    a: Store,
    b: Store,
    open: Opener,
    raw: Raw,
    _dir: tempfile::TempDir,
}

enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

fn sqlite() -> Option<Nodes> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let p = path.clone();
    let open: Opener = Arc::new(move |k| Store::open(&p, k));
    Some(Nodes {
        a: open(&kek(7)).unwrap(),
        b: open(&kek(7)).unwrap(),
        open,
        raw: Raw::Sqlite(path),
        _dir: dir,
    })
}

fn postgres() -> Option<Nodes> {
    let url = common::postgres::fresh_database()?;
    let u = url.clone();
    let open: Opener =
        Arc::new(move |k| Store::over(Arc::new(PgStore::new(common::postgres::connect(&u))), k));
    Some(Nodes {
        a: open(&kek(7)).unwrap(),
        b: open(&kek(7)).unwrap(),
        open,
        raw: Raw::Postgres(url),
        _dir: tempfile::tempdir().unwrap(),
    })
}

/// Each promise, as a function of the handles; run for both backends.
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
    chunks_load_by_key_and_by_range_from_either_handle,
    a_record_written_on_one_node_opens_on_the_other,
    forgetting_a_record_leaves_nothing_of_it,
    two_nodes_updating_one_secret_lose_neither_update,
    two_nodes_appending_audit_events_keep_one_unbroken_chain,
    handles_opening_together_share_one_store_key,
    a_wrong_key_opens_nothing,
    the_backend_holds_only_ciphertext,
    a_samod_repo_on_one_node_finds_what_another_stored,
);

fn key(parts: &[&str]) -> ChunkKey {
    ChunkKey::from_parts(parts.iter().copied()).unwrap()
}

fn nhs() -> NhsNumber {
    NhsNumber::parse("9434765919").unwrap()
}

const NOTE: &str = "a-distinctive-visit-note-that-must-not-be-stored-in-clear";

fn note(text: &str) -> EntryContent {
    EntryContent::EncounterSummary {
        setting: "home".into(),
        occurred_at: "2026-12-07T09:00:00Z".into(),
        note: text.into(),
    }
}

fn provenance() -> Provenance {
    Provenance {
        author_id: "555000000102".into(),
        role: "R0050".into(),
        organisation: "RX1".into(),
        device: "server".into(),
        recorded_at_ms: 1_000,
    }
}

fn draft(action: &str) -> AuditDraft {
    AuditDraft {
        user: "server".into(),
        role: "system".into(),
        organisation: "RX1".into(),
        patient: None,
        action: action.into(),
        compartments: vec![],
        entries: vec![],
        outcome: Outcome::Recorded,
        basis: None,
        alerts: vec![],
        detail: None,
    }
}

fn chunks_load_by_key_and_by_range_from_either_handle(n: Nodes) {
    let a1 = key(&["docA", "incremental", "h1"]);
    let a2 = key(&["docA", "incremental", "h2"]);
    let a3 = key(&["docA", "snapshot", "s1"]);
    let b1 = key(&["docB", "incremental", "h1"]);
    assert_eq!(n.b.load_chunk(&a1).unwrap(), None);
    n.a.put_chunk(&a1, b"one").unwrap();
    n.a.put_chunk(&a2, b"two").unwrap();
    n.b.put_chunk(&a3, b"snap").unwrap();
    n.b.put_chunk(&b1, b"other").unwrap();
    assert_eq!(n.b.load_chunk(&a1).unwrap().as_deref(), Some(&b"one"[..]));
    // An overwrite through the other handle replaces.
    n.b.put_chunk(&a1, b"uno").unwrap();
    assert_eq!(n.a.load_chunk(&a1).unwrap().as_deref(), Some(&b"uno"[..]));

    let incremental =
        n.a.load_chunk_range(&key(&["docA", "incremental"]))
            .unwrap();
    assert_eq!(incremental.len(), 2);
    assert_eq!(incremental[&a2], b"two");
    let doc_a = n.b.load_chunk_range(&key(&["docA"])).unwrap();
    assert_eq!(doc_a.len(), 3);
    assert!(!doc_a.contains_key(&b1));
    assert_eq!(
        n.a.load_chunk_range(&ChunkKey::from_parts(Vec::<&str>::new()).unwrap())
            .unwrap()
            .len(),
        4
    );
    assert!(n.a.load_chunk_range(&key(&["doc"])).unwrap().is_empty());
    assert!(n.b.has_chunks("docB").unwrap());

    n.b.delete_chunk(&a2).unwrap();
    n.b.delete_chunk(&key(&["docC", "incremental", "none"]))
        .unwrap();
    assert_eq!(n.a.load_chunk(&a2).unwrap(), None);
    assert_eq!(n.a.load_chunk_range(&key(&["docA"])).unwrap().len(), 2);
    // The document's bytes: the snapshot first, then the rest.
    assert_eq!(n.a.document_bytes("docA").unwrap(), b"snapuno");
}

fn a_record_written_on_one_node_opens_on_the_other(n: Nodes) {
    let patient = nhs();
    let mut record =
        n.a.create_record(&patient, &[Compartment::Core, Compartment::CareEvents])
            .unwrap();
    let written = record
        .add_entry(note("first visit"), false, provenance(), None)
        .unwrap();

    assert!(n.b.has_record(&patient).unwrap());
    let on_b = n.b.open_record(&patient).unwrap();
    let events = on_b.view_compartment(Compartment::CareEvents).unwrap();
    assert_eq!(events.entries.len(), 1);
    assert_eq!(events.entries[0].history, vec![written.version_id]);
    let docs = n.b.documents_of_record(&patient).unwrap();
    assert_eq!(docs.len(), 2);
    for d in &docs {
        assert_eq!(
            n.a.owner_of_document(&d.doc_id).unwrap(),
            Some((patient, d.compartment))
        );
        assert!(n.b.is_registered_document(&d.doc_id).unwrap());
    }
    assert_eq!(n.a.owner_of_document("not-a-document").unwrap(), None);
    // A second create of the same patient is refused, from either node.
    assert!(matches!(
        n.b.create_record(&patient, &[Compartment::Core]),
        Err(StoreError::RecordExists)
    ));
}

fn forgetting_a_record_leaves_nothing_of_it(n: Nodes) {
    let patient = nhs();
    let mut record =
        n.a.create_record(&patient, &[Compartment::CareEvents])
            .unwrap();
    record
        .add_entry(note("to be forgotten"), false, provenance(), None)
        .unwrap();
    let docs = n.a.documents_of_record(&patient).unwrap();
    assert!(n.a.has_chunks(&docs[0].doc_id).unwrap());

    assert!(n.b.forget_record(&patient).unwrap());
    assert!(!n.a.has_record(&patient).unwrap());
    assert!(matches!(
        n.a.open_record(&patient),
        Err(StoreError::RecordNotFound)
    ));
    assert!(!n.a.has_chunks(&docs[0].doc_id).unwrap());
    assert!(!n.a.is_registered_document(&docs[0].doc_id).unwrap());
    assert!(!n.a.forget_record(&patient).unwrap(), "forgotten once");
    // The patient may be held again later, afresh.
    n.a.create_record(&patient, &[Compartment::Core]).unwrap();
    assert!(n.b.has_record(&patient).unwrap());
}

/// `work` on each handle (numbered 0 and 1) at the same moment, each on a
/// thread of its own, until both are done.
fn on_both_at_once(n: &Nodes, work: impl Fn(usize, Store) + Send + Sync + Copy + 'static) {
    let start = Arc::new(Barrier::new(2));
    let writers: Vec<_> = [n.a.clone(), n.b.clone()]
        .into_iter()
        .enumerate()
        .map(|(node, store)| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                work(node, store);
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
}

fn two_nodes_updating_one_secret_lose_neither_update(n: Nodes) {
    const EACH: usize = 25;
    on_both_at_once(&n, move |node, store| {
        for i in 0..EACH {
            store
                .update_secret("shared-list", |old| {
                    let mut list: Vec<String> = old
                        .map(|b| serde_json::from_slice(b).unwrap())
                        .unwrap_or_default();
                    list.push(format!("{node}-{i}"));
                    serde_json::to_vec(&list).unwrap()
                })
                .unwrap();
        }
    });
    let list: Vec<String> =
        serde_json::from_slice(&n.a.secret("shared-list").unwrap().unwrap()).unwrap();
    assert_eq!(list.len(), 2 * EACH, "no update lost");
    n.b.put_secret("another", b"value").unwrap();
    assert_eq!(
        n.a.secret("another").unwrap().as_deref().map(Vec::as_slice),
        Some(&b"value"[..])
    );
}

fn two_nodes_appending_audit_events_keep_one_unbroken_chain(n: Nodes) {
    const EACH: u64 = 20;
    on_both_at_once(&n, move |node, store| {
        for i in 0..EACH {
            store
                .append_audit(draft(&format!("node-{node}-{i}")), "server", 1_000)
                .unwrap();
        }
    });
    assert_eq!(n.a.audit_queue_len().unwrap(), 2 * EACH);
    assert!(n.b.verify_audit_chain().unwrap().is_ok(), "one chain");
    let seqs: Vec<u64> =
        n.a.queued_audit_events()
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
    assert_eq!(seqs, (1..=2 * EACH).collect::<Vec<_>>());
    // Released through 15 by one node; the other continues the chain.
    assert_eq!(n.a.release_audit_through(15).unwrap(), 15);
    assert_eq!(n.b.audit_events_after(30, Some(5)).unwrap().len(), 5);
    let next =
        n.b.append_audit(draft("after-release"), "server", 2_000)
            .unwrap();
    assert_eq!(next.seq, 2 * EACH + 1);
    assert!(n.a.verify_audit_chain().unwrap().is_ok());
    assert_eq!(n.a.oldest_audit_events(Some(1)).unwrap()[0].seq, 16);
}

fn handles_opening_together_share_one_store_key(n: Nodes) {
    // The suite's two handles were opened one after the other; these open
    // at the same moment on rows of their own (another file, another
    // database), as two nodes starting together on an empty database.
    let (open, _dir) = fresh(&n);
    let start = Arc::new(Barrier::new(2));
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let (open, start) = (open.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                open(&kek(9)).unwrap()
            })
        })
        .collect();
    let stores: Vec<Store> = openers.into_iter().map(|t| t.join().unwrap()).collect();
    stores[0]
        .put_secret("written-by-one", b"read-by-other")
        .unwrap();
    assert_eq!(
        stores[1]
            .secret("written-by-one")
            .unwrap()
            .as_deref()
            .map(Vec::as_slice),
        Some(&b"read-by-other"[..]),
        "both handles seal with one store key"
    );
}

/// An opener on empty rows of the same backend as `n`.
fn fresh(n: &Nodes) -> (Opener, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    match &n.raw {
        Raw::Sqlite(_) => {
            let path = dir.path().join("fresh.db");
            (Arc::new(move |k| Store::open(&path, k)), dir)
        }
        Raw::Postgres(_) => {
            let url = common::postgres::fresh_database().unwrap();
            (
                Arc::new(move |k| {
                    Store::over(Arc::new(PgStore::new(common::postgres::connect(&url))), k)
                }),
                dir,
            )
        }
    }
}

fn a_wrong_key_opens_nothing(n: Nodes) {
    n.a.put_secret("kept", b"secret").unwrap();
    assert!(matches!((n.open)(&kek(8)), Err(StoreError::WrongKey)));
    // And the right key still does.
    let again = (n.open)(&kek(7)).unwrap();
    assert!(again.secret("kept").unwrap().is_some());
}

fn the_backend_holds_only_ciphertext(n: Nodes) {
    let patient = nhs();
    let mut record =
        n.a.create_record(&patient, &[Compartment::CareEvents])
            .unwrap();
    record
        .add_entry(note(NOTE), false, provenance(), None)
        .unwrap();
    n.b.put_secret("grant-like", NOTE.as_bytes()).unwrap();
    let mut audited = draft("viewed");
    audited.patient = Some(patient);
    n.a.append_audit(audited, "server", 1_000).unwrap();
    let doc_id = n.a.documents_of_record(&patient).unwrap()[0].doc_id.clone();

    let raw: Vec<u8> = match &n.raw {
        Raw::Sqlite(path) => {
            n.a.checkpoint().unwrap();
            let mut all = std::fs::read(path).unwrap();
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            all.extend(std::fs::read(wal).unwrap_or_default());
            all
        }
        Raw::Postgres(url) => common::postgres::bytes_of(
            url,
            "SELECT name::bytea || value FROM store_meta
             UNION ALL SELECT record_ref || wrapped_key || sealed_docs FROM store_records
             UNION ALL SELECT doc_ref || record_ref FROM store_documents
             UNION ALL SELECT key_ref || doc_ref || range_ref || sealed FROM store_chunks
             UNION ALL SELECT sealed FROM store_audit_queue
             UNION ALL SELECT record_ref || sealed FROM store_holdings",
        ),
    };
    assert!(raw.len() > 1_000, "the rows were read");
    for clear in [NOTE, patient.digits().as_str(), doc_id.as_str()] {
        assert!(
            !raw.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "a value is stored in clear"
        );
    }
}

fn a_samod_repo_on_one_node_finds_what_another_stored(n: Nodes) {
    use automerge::transaction::Transactable;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let on_a = samod::Repo::build_tokio()
            .with_storage(scr_core::store::SamodStorage::new(n.a.clone()))
            .load()
            .await;
        let handle = on_a.create(automerge::Automerge::new()).await.unwrap();
        handle.with_document(|doc| {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "note", "stored by node A").unwrap();
            tx.commit();
        });
        let id = handle.document_id().clone();
        on_a.stop().await;

        let on_b = samod::Repo::build_tokio()
            .with_storage(scr_core::store::SamodStorage::new(n.b.clone()))
            .load()
            .await;
        let found = on_b.find(id).await.unwrap().expect("found on node B");
        let text = found.with_document(|doc| {
            use automerge::ReadDoc;
            doc.get(automerge::ROOT, "note")
                .unwrap()
                .and_then(|(v, _)| v.as_str().map(str::to_owned))
        });
        assert_eq!(text.as_deref(), Some("stored by node A"));
        on_b.stop().await;
    });
}
