//! The device's sync storage: samod persists into the engine's encrypted
//! store, but only documents the device has registered (a listed patient's
//! compartments). Anything else a peer offers is never written, so a
//! forgotten record cannot come back to disk through a late sync message,
//! and nothing lands sealed under the wrong key. The holdings list stays in
//! memory: its Automerge history names every patient it ever listed, which
//! must not outlive their forgetting on disk; it is fetched again on the
//! next connection.
//!
//! samod's trait has no error channel and samod deletes the chunks a
//! compaction supersedes once it believes the compaction was written. So a
//! document whose write failed or was refused keeps every chunk: deletes
//! for it are ignored until the app restarts (the engine compacts anyway).
//! Every call runs on tokio's blocking pool (`off_runtime`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use samod::storage::{Storage, StorageKey};

use crate::store::{Store, off_runtime};

#[derive(Clone)]
pub struct DeviceStorage {
    store: Store,
    holdings_doc: Arc<Mutex<Option<String>>>,
    /// Documents with a failed or refused write: their chunks are kept.
    keep_all: Arc<Mutex<HashSet<String>>>,
    refused: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

fn doc_of(key: &StorageKey) -> Option<String> {
    key.into_iter().next().map(|p| p.to_string())
}

impl DeviceStorage {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            holdings_doc: Arc::new(Mutex::new(None)),
            keep_all: Arc::new(Mutex::new(HashSet::new())),
            refused: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The device's holdings document: synced, never written to disk.
    pub fn keep_in_memory_only(&self, doc_id: &str) {
        if let Ok(mut h) = self.holdings_doc.lock() {
            *h = Some(doc_id.to_owned());
        }
    }

    /// Writes refused because no registered record owns the document.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Store operations that failed (samod's trait cannot report them).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn is_holdings(&self, doc: &str) -> bool {
        self.holdings_doc
            .lock()
            .map(|h| h.as_deref() == Some(doc))
            .unwrap_or(false)
    }

    fn keep_everything_of(&self, doc: String) {
        if let Ok(mut k) = self.keep_all.lock() {
            k.insert(doc);
        }
    }

    fn keeps_everything_of(&self, doc: &str) -> bool {
        self.keep_all
            .lock()
            .map(|k| k.contains(doc))
            .unwrap_or(true)
    }
}

impl Storage for DeviceStorage {
    fn load(&self, key: StorageKey) -> impl Future<Output = Option<Vec<u8>>> + Send {
        let this = self.clone();
        async move {
            let store = this.store.clone();
            match off_runtime(move || store.load_chunk(&key)).await {
                Some(Ok(v)) => v,
                _ => {
                    this.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("a sync chunk could not be read");
                    None
                }
            }
        }
    }

    fn load_range(
        &self,
        prefix: StorageKey,
    ) -> impl Future<Output = HashMap<StorageKey, Vec<u8>>> + Send {
        let this = self.clone();
        async move {
            let store = this.store.clone();
            match off_runtime(move || store.load_chunk_range(&prefix)).await {
                Some(Ok(v)) => v,
                _ => {
                    this.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("sync chunks could not be read");
                    HashMap::new()
                }
            }
        }
    }

    fn put(&self, key: StorageKey, data: Vec<u8>) -> impl Future<Output = ()> + Send {
        let this = self.clone();
        async move {
            let Some(doc) = doc_of(&key) else {
                return;
            };
            if this.is_holdings(&doc) {
                return;
            }
            let store = this.store.clone();
            let written =
                off_runtime(move || store.put_chunk_if_registered(&key, &data, false)).await;
            match written {
                Some(Ok(true)) => {}
                Some(Ok(false)) => {
                    this.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("sync offered a document this device does not hold; not stored");
                    this.keep_everything_of(doc);
                }
                _ => {
                    this.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("a sync chunk could not be written");
                    this.keep_everything_of(doc);
                }
            }
        }
    }

    fn delete(&self, key: StorageKey) -> impl Future<Output = ()> + Send {
        let this = self.clone();
        async move {
            let Some(doc) = doc_of(&key) else {
                return;
            };
            if this.keeps_everything_of(&doc) {
                return;
            }
            let store = this.store.clone();
            if !matches!(
                off_runtime(move || store.delete_chunk(&key)).await,
                Some(Ok(()))
            ) {
                this.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("a sync chunk could not be deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SecretKey, StaticKeyProvider};
    use crate::fixtures::test_nhs_number;
    use crate::record::Compartment;
    use crate::store::{DocumentInfo, HoldReason};

    fn key(doc: &str) -> StorageKey {
        StorageKey::from_parts([doc, "incremental", "abc"]).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_registered_documents_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().join("d.db"),
            &StaticKeyProvider::new(SecretKey::from_bytes([4; 32])),
        )
        .unwrap();
        let storage = DeviceStorage::new(store.clone());
        storage.put(key("stranger"), b"x".to_vec()).await;
        assert_eq!(storage.load(key("stranger")).await, None);
        assert_eq!(storage.refused(), 1);

        // The holdings list is never written (and is not a refusal).
        storage.keep_in_memory_only("list");
        storage.put(key("list"), b"l".to_vec()).await;
        assert_eq!(storage.load(key("list")).await, None);
        assert_eq!(storage.refused(), 1);

        store
            .hold_arriving_with(
                &test_nhs_number(3),
                &[DocumentInfo {
                    doc_id: "core-doc".into(),
                    compartment: Compartment::Core,
                }],
                HoldReason::Caseload,
                |_, _| Ok(()),
            )
            .unwrap();
        storage.put(key("core-doc"), b"c".to_vec()).await;
        assert_eq!(storage.load(key("core-doc")).await, Some(b"c".to_vec()));
        assert_eq!(storage.refused(), 1);

        // samod deletes what a compaction superseded; after a refused write
        // to a document, its chunks are kept instead.
        storage.delete(key("core-doc")).await;
        assert_eq!(storage.load(key("core-doc")).await, None);
        storage.put(key("core-doc"), b"c".to_vec()).await;
        store.forget_record(&test_nhs_number(3)).unwrap();
        storage.put(key("core-doc"), b"late".to_vec()).await;
        assert_eq!(storage.refused(), 2, "a forgotten record takes no chunk");

        // Registered again (the patient is back on the list): after that
        // refusal, samod's deletes for the document are ignored.
        store
            .hold_arriving_with(
                &test_nhs_number(3),
                &[DocumentInfo {
                    doc_id: "core-doc".into(),
                    compartment: Compartment::Core,
                }],
                HoldReason::Caseload,
                |_, _| Ok(()),
            )
            .unwrap();
        storage.put(key("core-doc"), b"again".to_vec()).await;
        storage.delete(key("core-doc")).await;
        assert_eq!(storage.load(key("core-doc")).await, Some(b"again".to_vec()));
    }
}
