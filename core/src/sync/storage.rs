//! The device's sync storage: samod persists into the engine's encrypted
//! store, but only documents the device has registered (a listed patient's
//! compartments) and its own holdings list. Anything else a peer offers is
//! never written, so a forgotten record cannot come back to disk through a
//! late sync message, and nothing lands sealed under the wrong key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use samod::storage::{Storage, StorageKey};

use crate::store::{SamodStorage, Store};

#[derive(Clone)]
pub struct DeviceStorage {
    inner: SamodStorage,
    store: Store,
    holdings_doc: Arc<Mutex<Option<String>>>,
    refused: Arc<AtomicU64>,
}

impl DeviceStorage {
    pub fn new(store: Store) -> Self {
        Self {
            inner: SamodStorage::new(store.clone()),
            store,
            holdings_doc: Arc::new(Mutex::new(None)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The holdings document may be stored although no record owns it.
    pub fn allow_holdings_document(&self, doc_id: &str) {
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
        self.inner.failures()
    }

    fn may_store(&self, key: &StorageKey) -> bool {
        let Some(doc_id) = key.into_iter().next() else {
            return false;
        };
        let doc_id: &str = doc_id.as_ref();
        if self
            .holdings_doc
            .lock()
            .map(|h| h.as_deref() == Some(doc_id))
            .unwrap_or(false)
        {
            return true;
        }
        self.store.is_registered_document(doc_id).unwrap_or(false)
    }
}

impl Storage for DeviceStorage {
    fn load(&self, key: StorageKey) -> impl Future<Output = Option<Vec<u8>>> + Send {
        self.inner.load(key)
    }

    fn load_range(
        &self,
        prefix: StorageKey,
    ) -> impl Future<Output = HashMap<StorageKey, Vec<u8>>> + Send {
        self.inner.load_range(prefix)
    }

    fn put(&self, key: StorageKey, data: Vec<u8>) -> impl Future<Output = ()> + Send {
        let allowed = self.may_store(&key);
        let put = allowed.then(|| self.inner.put(key, data));
        if !allowed {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("sync offered a document this device does not hold; not stored");
        }
        async move {
            if let Some(put) = put {
                put.await;
            }
        }
    }

    fn delete(&self, key: StorageKey) -> impl Future<Output = ()> + Send {
        self.inner.delete(key)
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

    #[tokio::test]
    async fn only_registered_documents_and_the_holdings_list_are_stored() {
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

        storage.allow_holdings_document("list");
        storage.put(key("list"), b"l".to_vec()).await;
        assert_eq!(storage.load(key("list")).await, Some(b"l".to_vec()));

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
    }
}
