//! One conformance suite for samod's `Storage` trait, run against samod's
//! own in-memory store and against our encrypted SQLite store, so the
//! encrypted store behaves exactly as samod expects. Then a real samod repo
//! persists into the encrypted store and finds its document after restart.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use automerge::transaction::Transactable;
use futures::executor::block_on;
use samod::storage::{InMemoryStorage, Storage, StorageKey};
use scr_core::Store;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::store::SamodStorage;

fn key(parts: &[&str]) -> StorageKey {
    StorageKey::from_parts(parts.iter().copied()).unwrap()
}

fn conformance<S: Storage>(storage: S) {
    block_on(async {
        let a1 = key(&["docA", "incremental", "h1"]);
        let a2 = key(&["docA", "incremental", "h2"]);
        let a3 = key(&["docA", "snapshot", "s1"]);
        let b1 = key(&["docB", "incremental", "h1"]);
        let id = key(&["storage-adapter-id"]);

        assert_eq!(storage.load(a1.clone()).await, None);
        storage.put(a1.clone(), b"one".to_vec()).await;
        storage.put(a2.clone(), b"two".to_vec()).await;
        storage.put(a3.clone(), b"snap".to_vec()).await;
        storage.put(b1.clone(), b"other".to_vec()).await;
        storage.put(id.clone(), b"storage id".to_vec()).await;
        assert_eq!(storage.load(a1.clone()).await, Some(b"one".to_vec()));

        // Overwrite replaces.
        storage.put(a1.clone(), b"uno".to_vec()).await;
        assert_eq!(storage.load(a1.clone()).await, Some(b"uno".to_vec()));

        // Ranges: two-part prefix, one-part prefix, whole store.
        let inc = storage.load_range(key(&["docA", "incremental"])).await;
        assert_eq!(
            inc,
            HashMap::from([(a1.clone(), b"uno".to_vec()), (a2.clone(), b"two".to_vec())])
        );
        let doc_a = storage.load_range(key(&["docA"])).await;
        assert_eq!(doc_a.len(), 3);
        assert!(doc_a.contains_key(&a3));
        assert!(!doc_a.contains_key(&b1));
        let exact = storage.load_range(a2.clone()).await;
        assert_eq!(exact, HashMap::from([(a2.clone(), b"two".to_vec())]));
        let all = storage
            .load_range(StorageKey::from_parts(Vec::<&str>::new()).unwrap())
            .await;
        assert_eq!(all.len(), 5);
        assert!(storage.load_range(key(&["docC"])).await.is_empty());
        // A prefix of a part is not a prefix of the key.
        assert!(storage.load_range(key(&["doc"])).await.is_empty());

        // Delete removes only the one key; deleting a missing key is fine.
        storage.delete(a2.clone()).await;
        storage
            .delete(key(&["docA", "incremental", "missing"]))
            .await;
        assert_eq!(storage.load(a2.clone()).await, None);
        assert_eq!(
            storage
                .load_range(key(&["docA", "incremental"]))
                .await
                .len(),
            1
        );
        assert_eq!(storage.load(b1.clone()).await, Some(b"other".to_vec()));

        // Empty and large values round-trip.
        let big = vec![0xEEu8; 300_000];
        storage.put(a2.clone(), big.clone()).await;
        assert_eq!(storage.load(a2.clone()).await, Some(big));
        storage.put(a2.clone(), Vec::new()).await;
        assert_eq!(storage.load(a2).await, Some(Vec::new()));
    });
}

fn encrypted(dir: &tempfile::TempDir) -> SamodStorage {
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([5; 32]));
    SamodStorage::new(Store::open(dir.path().join("d.db"), &keys).unwrap())
}

#[test]
fn in_memory_storage_conforms() {
    conformance(InMemoryStorage::new());
}

#[test]
fn encrypted_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let storage = encrypted(&dir);
    conformance(storage.clone());
    assert_eq!(storage.failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samod_repo_persists_into_the_encrypted_store() {
    let dir = tempfile::tempdir().unwrap();
    let doc_id = {
        let repo = samod::Repo::build_tokio()
            .with_storage(encrypted(&dir))
            .load()
            .await;
        let handle = repo.create(automerge::Automerge::new()).await.unwrap();
        handle.with_document(|doc| {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "note", "kept across restarts")
                .unwrap();
            tx.commit();
        });
        let id = handle.document_id().clone();
        repo.stop().await;
        id
    };
    let repo = samod::Repo::build_tokio()
        .with_storage(encrypted(&dir))
        .load()
        .await;
    let handle = repo
        .find(doc_id)
        .await
        .unwrap()
        .expect("document found after restart");
    let note = handle.with_document(|doc| {
        use automerge::ReadDoc;
        doc.get(automerge::ROOT, "note")
            .unwrap()
            .and_then(|(v, _)| v.as_str().map(str::to_owned))
    });
    assert_eq!(note.as_deref(), Some("kept across restarts"));
    repo.stop().await;
}
