//! Documents changed by another process: `admin` commands write the store
//! directly (a patient's choice, say), but samod keeps the documents it has
//! loaded in memory and would never see the change. When the store's
//! `data_version` shows another connection committed, the server merges
//! the stored chunks of every document samod has in memory back into it;
//! samod then syncs the change to connected devices. O(documents in
//! memory) per admin change, which is rare.

use std::sync::atomic::{AtomicU64, Ordering};

use samod::{DocumentId, Repo};
use scr_core::Store;
use scr_core::store::SamodStorage;

/// Bumped each time an outside write is merged into a document samod holds
/// (inside the document's own exclusive access): the one way a record
/// document's header can change under a running server, so what the push
/// check keeps of a header between pushes is good while this stands still.
static MERGED_FROM_OUTSIDE: AtomicU64 = AtomicU64::new(0);

/// How many outside writes have been merged so far. Read it inside a
/// document's exclusive access to compare with what was kept of it.
pub fn epoch() -> u64 {
    MERGED_FROM_OUTSIDE.load(Ordering::SeqCst)
}

/// Merges what is on disk into samod's copy of every document it holds.
/// Returns how many documents gained changes.
pub async fn refresh_from_store(repo: &Repo, store: &Store, storage: &SamodStorage) -> usize {
    let ids = storage
        .documents_seen()
        .iter()
        .filter_map(|id| id.parse::<DocumentId>().ok())
        .collect();
    refresh_documents(repo, store, ids).await
}

/// Merges what is on disk into samod's copy of each of `ids` (loading it
/// if samod had not). Returns how many gained changes.
pub async fn refresh_documents(repo: &Repo, store: &Store, ids: Vec<DocumentId>) -> usize {
    let mut refreshed = 0;
    for doc_id in ids {
        let (store, id) = (store.clone(), doc_id.to_string());
        let bytes = tokio::task::spawn_blocking(move || store.document_bytes(&id)).await;
        let Ok(Ok(bytes)) = bytes else {
            tracing::warn!("stored chunks could not be read for a refresh");
            continue;
        };
        let Ok(Some(handle)) = repo.find(doc_id).await else {
            continue;
        };
        let changed = handle
            .with_document_async(move |d| {
                let before = d.get_heads();
                let _ = d.load_incremental(&bytes);
                let changed = before != d.get_heads();
                if changed {
                    MERGED_FROM_OUTSIDE.fetch_add(1, Ordering::SeqCst);
                }
                changed
            })
            .await;
        if matches!(changed, Ok(true)) {
            refreshed += 1;
        }
    }
    refreshed
}
