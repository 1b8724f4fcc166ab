//! Documents changed by another process: `admin` commands write the store
//! directly (a patient's choice, say), but samod keeps the documents it has
//! loaded in memory and would never see the change. When the store's
//! `data_version` shows another connection committed, the server merges
//! the stored chunks of every document samod has in memory back into it;
//! samod then syncs the change to connected devices. O(documents in
//! memory) per admin change, which is rare.

use samod::{DocumentId, Repo};
use scr_core::Store;
use scr_core::store::{ChunkKey, SamodStorage};

/// Merges what is on disk into samod's copy of every document it holds.
/// Returns how many documents gained changes.
pub async fn refresh_from_store(repo: &Repo, store: &Store, storage: &SamodStorage) -> usize {
    let mut refreshed = 0;
    for id in storage.documents_seen() {
        let Ok(doc_id) = id.parse::<DocumentId>() else {
            continue;
        };
        let Ok(prefix) = ChunkKey::from_parts([id.as_str()]) else {
            continue;
        };
        let store = store.clone();
        let chunks = tokio::task::spawn_blocking(move || store.load_chunk_range(&prefix)).await;
        let Ok(Ok(chunks)) = chunks else {
            tracing::warn!("stored chunks could not be read for a refresh");
            continue;
        };
        // Snapshots first; Automerge queues changes whose dependencies
        // come later in the buffer.
        let mut chunks: Vec<_> = chunks.into_iter().collect();
        chunks.sort_by_key(|(k, _)| {
            let snapshot = k.into_iter().nth(1).is_some_and(|p| p == "snapshot");
            (!snapshot, k.to_string())
        });
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
        let Ok(Some(handle)) = repo.find(doc_id).await else {
            continue;
        };
        let changed = handle
            .with_document_async(move |d| {
                let before = d.get_heads();
                let _ = d.load_incremental(&bytes);
                before != d.get_heads()
            })
            .await;
        if matches!(changed, Ok(true)) {
            refreshed += 1;
        }
    }
    refreshed
}
