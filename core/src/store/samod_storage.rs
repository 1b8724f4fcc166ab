//! samod's `Storage` trait over the encrypted store, so a samod repo (the
//! sync layer) persists straight into it.
//!
//! samod's trait has no error channel: a failed load reads as absent and a
//! failed put would be dropped. We log the failure's kind (never data) and
//! count it, so the sync layer can surface a storage fault, and keep a
//! refused chunk until the store takes it (`unsaved`:
//! [`SamodStorage::save_unsaved`]); the typed-error API on [`Store`] is
//! what the engine's own writes use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use samod::storage::{Storage, StorageKey};

use super::unsaved::Unsaved;
use super::{Store, StoreError};

#[derive(Clone)]
pub struct SamodStorage {
    store: Store,
    failures: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    /// Documents samod has loaded or written in this process.
    seen: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Documents written since [`SamodStorage::take_written`] last ran.
    written: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Told of every document written, as soon as the write is stored.
    on_write: Arc<std::sync::OnceLock<WriteHook>>,
    /// Chunks the store refused, until it takes them.
    unsaved: Arc<std::sync::Mutex<Unsaved>>,
}

/// What [`SamodStorage::on_write`] calls with each written document's id.
pub type WriteHook = Arc<dyn Fn(&str) + Send + Sync>;

impl SamodStorage {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            failures: Arc::new(AtomicU64::new(0)),
            writes: Arc::new(AtomicU64::new(0)),
            seen: Arc::default(),
            written: Arc::default(),
            on_write: Arc::default(),
            unsaved: Arc::default(),
        }
    }

    /// Chunks the store refused and this adapter still keeps, to store.
    pub fn unsaved(&self) -> usize {
        self.unsaved.lock().map_or(0, |u| u.len())
    }

    /// Stores the chunks the store refused (blocking: call it off the
    /// async runtime). Stops when the store does not answer; a chunk it
    /// refuses for another reason stays kept and the rest are tried. How
    /// many were stored, or the first refusal when none was.
    pub fn save_unsaved(&self) -> Result<usize, StoreError> {
        let all = self.unsaved.lock().map_err(|_| StoreError::Poisoned)?.all();
        let (mut saved, mut refused) = (0, None);
        for (key, data) in all {
            match self.store.put_chunk(&key, &data) {
                Ok(()) => {
                    self.stored(&key);
                    saved += 1;
                }
                Err(StoreError::Unreachable) => return Err(StoreError::Unreachable),
                Err(e) => refused = refused.or(Some(e)),
            }
        }
        if saved > 0 {
            tracing::info!(chunks = saved, "chunks the store had refused are stored");
        }
        match refused {
            Some(e) if saved == 0 => Err(e),
            _ => Ok(saved),
        }
    }

    /// A chunk put is stored: no longer unsaved, and its document written.
    fn stored(&self, key: &StorageKey) {
        if let Ok(mut u) = self.unsaved.lock() {
            u.forget(key);
        }
        let doc = key.into_iter().next().map(|d| d.to_string());
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.wrote(doc.as_deref());
        if let (Some(doc), Ok(mut w)) = (doc, self.written.lock()) {
            w.insert(doc);
        }
    }

    /// A put the store refused: kept until it takes it.
    fn refused(&self, key: StorageKey, data: Vec<u8>, e: &StoreError) {
        self.failed("put", e);
        let kept = self.unsaved.lock().is_ok_and(|mut u| u.keep(key, data));
        if !kept {
            tracing::error!("a refused chunk could not be kept to store later");
        }
    }

    /// Calls `hook` with the id of each document written (put or delete)
    /// once the write is stored. Set once; later calls are ignored.
    pub fn on_write(&self, hook: WriteHook) {
        let _ = self.on_write.set(hook);
    }

    fn wrote(&self, doc: Option<&str>) {
        if let (Some(doc), Some(hook)) = (doc, self.on_write.get()) {
            hook(doc);
        }
    }

    /// Documents samod has loaded or written through this adapter: the
    /// ones its memory may hold, to refresh when another process writes.
    pub fn documents_seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn saw(&self, key: &StorageKey) {
        if let (Some(doc), Ok(mut seen)) = (key.into_iter().next(), self.seen.lock()) {
            seen.insert(doc.to_string());
        }
    }

    /// Successful puts and deletes since this adapter was made (a cheap
    /// signal that documents changed).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The documents written since the last call (the server asks which of
    /// them could change what it shares: only governance documents do).
    pub fn take_written(&self) -> Vec<String> {
        self.written
            .lock()
            .map(|mut w| w.drain().collect())
            .unwrap_or_default()
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

/// Runs store work on tokio's blocking pool when called on a runtime
/// (SQLite and decryption must not stall the runtime samod's I/O loop runs
/// on), inline otherwise.
pub(crate) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.spawn_blocking(f).await.ok(),
        Err(_) => Some(f()),
    }
}

impl Storage for SamodStorage {
    fn load(&self, key: StorageKey) -> impl Future<Output = Option<Vec<u8>>> + Send {
        let this = self.clone();
        // A chunk the store refused is read from what is kept of it.
        let kept = self.unsaved.lock().ok().and_then(|u| u.get(&key));
        async move {
            if kept.is_some() {
                return kept;
            }
            let store = this.store.clone();
            match off_runtime(move || store.load_chunk(&key)).await {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    this.failed("load", &e);
                    None
                }
                None => {
                    this.failed("load", &StoreError::Poisoned);
                    None
                }
            }
        }
    }

    fn load_range(
        &self,
        prefix: StorageKey,
    ) -> impl Future<Output = HashMap<StorageKey, Vec<u8>>> + Send {
        self.saw(&prefix);
        let this = self.clone();
        // With the chunks the store refused, from what is kept of them.
        let kept = self
            .unsaved
            .lock()
            .map(|u| u.under(&prefix))
            .unwrap_or_default();
        async move {
            let store = this.store.clone();
            match off_runtime(move || store.load_chunk_range(&prefix)).await {
                Some(Ok(mut v)) => {
                    v.extend(kept);
                    v
                }
                Some(Err(e)) => {
                    this.failed("load_range", &e);
                    HashMap::new()
                }
                None => {
                    this.failed("load_range", &StoreError::Poisoned);
                    HashMap::new()
                }
            }
        }
    }

    fn put(&self, key: StorageKey, data: Vec<u8>) -> impl Future<Output = ()> + Send {
        self.saw(&key);
        let this = self.clone();
        async move {
            let store = this.store.clone();
            let put = off_runtime(move || {
                let outcome = store.put_chunk(&key, &data);
                (outcome, key, data)
            })
            .await;
            match put {
                Some((Ok(()), key, _)) => this.stored(&key),
                Some((Err(e), key, data)) => this.refused(key, data, &e),
                None => this.failed("put", &StoreError::Poisoned),
            }
        }
    }

    fn delete(&self, key: StorageKey) -> impl Future<Output = ()> + Send {
        let doc = (&key).into_iter().next().map(|d| d.to_string());
        let this = self.clone();
        // samod deletes what a newer chunk replaces. While a chunk of the
        // document is still unsaved, the newer one may be it: nothing of
        // the document is deleted (a key samod itself no longer wants is
        // dropped from the unsaved).
        let unsaved_left = self.unsaved.lock().map_or(true, |mut u| {
            u.forget(&key);
            doc.as_deref().is_some_and(|d| u.holds_document(d))
        });
        async move {
            if unsaved_left {
                return;
            }
            let store = this.store.clone();
            match off_runtime(move || store.delete_chunk(&key)).await {
                Some(Ok(())) => {
                    this.writes.fetch_add(1, Ordering::Relaxed);
                    this.wrote(doc.as_deref());
                }
                Some(Err(e)) => this.failed("delete", &e),
                None => this.failed("delete", &StoreError::Poisoned),
            }
        }
    }
}
