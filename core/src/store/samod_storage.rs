//! samod's `Storage` trait over the encrypted store, so a samod repo (the
//! sync layer) persists straight into it.
//!
//! samod's trait has no error channel: a failed load reads as absent and a
//! failed put is dropped. We log the failure's kind (never data) and count
//! it, so the sync layer can surface a storage fault; the typed-error API on
//! [`Store`] is what the engine's own writes use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use samod::storage::{Storage, StorageKey};

use super::{Store, StoreError};

#[derive(Clone)]
pub struct SamodStorage {
    store: Store,
    failures: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

impl SamodStorage {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            failures: Arc::new(AtomicU64::new(0)),
            writes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Successful puts and deletes since this adapter was made (a cheap
    /// signal that documents changed).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Storage operations that failed since this adapter was made.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn failed(&self, op: &'static str, e: &StoreError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(op, error = %e, "encrypted store operation failed");
    }
}

impl Storage for SamodStorage {
    fn load(&self, key: StorageKey) -> impl Future<Output = Option<Vec<u8>>> + Send {
        let result = self.store.load_chunk(&key);
        let out = match result {
            Ok(v) => v,
            Err(e) => {
                self.failed("load", &e);
                None
            }
        };
        std::future::ready(out)
    }

    fn load_range(
        &self,
        prefix: StorageKey,
    ) -> impl Future<Output = HashMap<StorageKey, Vec<u8>>> + Send {
        let out = match self.store.load_chunk_range(&prefix) {
            Ok(v) => v,
            Err(e) => {
                self.failed("load_range", &e);
                HashMap::new()
            }
        };
        std::future::ready(out)
    }

    fn put(&self, key: StorageKey, data: Vec<u8>) -> impl Future<Output = ()> + Send {
        match self.store.put_chunk(&key, &data) {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed("put", &e),
        }
        std::future::ready(())
    }

    fn delete(&self, key: StorageKey) -> impl Future<Output = ()> + Send {
        if let Err(e) = self.store.delete_chunk(&key) {
            self.failed("delete", &e);
        }
        std::future::ready(())
    }
}
