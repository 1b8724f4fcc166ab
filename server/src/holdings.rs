//! Each device's holdings notice: one Automerge document per device, shared
//! read-only with that device alone, holding a counter the server bumps
//! whenever the device's holdings list (the patients and documents its
//! user's current grant lets it hold) changes: a login, an assignment, a
//! patient's choice. The device then asks for the list itself over the
//! channel (`Purpose::Holdings`) and forgets what it no longer names. The
//! list never goes into a document, whose history would keep every patient
//! it ever named.

use std::sync::Arc;

use samod::{DocumentId, Repo};
use scr_core::Store;

use crate::directory::Directory;
use crate::policy::AccessPolicy;

#[derive(Debug, thiserror::Error)]
pub enum HoldingsError {
    #[error("the sync repo stopped")]
    Stopped,
    #[error("store: {0}")]
    Store(#[from] scr_core::StoreError),
}

#[derive(Clone)]
pub struct HoldingsWriter {
    repo: Repo,
    store: Store,
    policy: AccessPolicy,
    directory: Arc<Directory>,
    /// A hash of each device's last list, to bump its notice only on a
    /// change (after a restart every notice is bumped once).
    last: Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], [u8; 32]>>>,
}

impl HoldingsWriter {
    pub fn new(repo: Repo, store: Store, policy: AccessPolicy, directory: Arc<Directory>) -> Self {
        Self {
            repo,
            store,
            policy,
            directory,
            last: Arc::default(),
        }
    }

    /// The device's holdings document id, creating the document on first
    /// use, with its list brought up to date.
    pub async fn ensure(&self, device: [u8; 32]) -> Result<String, HoldingsError> {
        let handle = match self.notice_of(device).await {
            Some(id) => self
                .repo
                .find(id)
                .await
                .map_err(|_| HoldingsError::Stopped)?,
            None => None,
        };
        let handle = match handle {
            Some(h) => h,
            None => {
                let h = self
                    .repo
                    .create(automerge::Automerge::new())
                    .await
                    .map_err(|_| HoldingsError::Stopped)?;
                let id = h.document_id().to_string();
                // Owner first, so the share policy knows the document is
                // this device's before anyone can learn its id.
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || {
                    crate::owners::record_notice(&store, &device, &id)
                })
                .await
                .map_err(|_| HoldingsError::Stopped)??;
                h
            }
        };
        self.write(device, &handle).await;
        Ok(handle.document_id().to_string())
    }

    /// Recomputes one device's list, if it has a holdings document.
    pub async fn refresh(&self, device: [u8; 32]) {
        let Some(id) = self.notice_of(device).await else {
            return;
        };
        if let Ok(Some(handle)) = self.repo.find(id).await {
            self.write(device, &handle).await;
        }
    }

    /// Bumps the device's notice whatever its list: the server has
    /// something new to tell it (a push it refused).
    pub async fn notify(&self, device: [u8; 32]) {
        let Some(id) = self.notice_of(device).await else {
            return;
        };
        if let Ok(Some(handle)) = self.repo.find(id).await {
            let bumped = handle
                .with_document_async(scr_core::protocol::bump_notice)
                .await;
            if !matches!(bumped, Ok(Ok(_))) {
                tracing::warn!("a holdings notice could not be written");
            }
        }
    }

    /// The current version of the device's notice, if it has one.
    pub async fn notice_version(&self, device: [u8; 32]) -> Option<u64> {
        let id = self.notice_of(device).await?;
        let handle = self.repo.find(id).await.ok()??;
        handle
            .with_document_async(|d| scr_core::protocol::read_notice(d).ok().flatten())
            .await
            .ok()
            .flatten()
    }

    /// The device's notice document id (a sealed read: off the runtime).
    async fn notice_of(&self, device: [u8; 32]) -> Option<DocumentId> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || crate::owners::doc_of(&store, &device))
            .await
            .ok()
            .flatten()
    }

    /// Recomputes every active device's list (one organisation's devices:
    /// cheap; at scale this wants to touch only the affected devices).
    pub async fn refresh_all(&self) {
        let directory = self.directory.clone();
        let keys = tokio::task::spawn_blocking(move || directory.active_device_keys())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for key in keys {
            self.refresh(key).await;
        }
    }

    async fn write(&self, device: [u8; 32], handle: &samod::DocHandle) {
        let policy = self.policy.clone();
        let list = tokio::task::spawn_blocking(move || policy.holdings_for(&device))
            .await
            .ok()
            .flatten();
        let Some(list) = list else {
            return;
        };
        let Ok(json) = serde_json::to_vec(&list) else {
            return;
        };
        let hash = *blake3::hash(&json).as_bytes();
        let changed = self
            .last
            .lock()
            .map(|mut last| last.insert(device, hash) != Some(hash))
            .unwrap_or(true);
        if changed {
            let bumped = handle
                .with_document_async(scr_core::protocol::bump_notice)
                .await;
            if !matches!(bumped, Ok(Ok(_))) {
                tracing::warn!("a holdings notice could not be written");
            }
        }
    }
}
