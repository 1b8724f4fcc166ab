//! Storage keys for a document's chunks (snapshots and incremental
//! changes), and new document ids.

use automerge::ChangeHash;

use crate::store::{ChunkKey, StoreError};

pub(super) fn new_doc_id() -> Result<String, StoreError> {
    let mut bytes = vec![0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|_| StoreError::Crypto(crate::crypto::CryptoError::Random))?;
    let id =
        samod::DocumentId::try_from(bytes).map_err(|_| StoreError::InvalidEdit("document id"))?;
    Ok(id.to_string())
}

pub(super) fn incremental_key(doc_id: &str, hash: &ChangeHash) -> Result<ChunkKey, StoreError> {
    ChunkKey::from_parts([doc_id, "incremental", &hash.to_string()])
        .map_err(|_| StoreError::InvalidEdit("storage key"))
}

/// Snapshots are named by a hash of the heads they contain, as samod does.
pub(super) fn snapshot_key(doc_id: &str, heads: &[ChangeHash]) -> Result<ChunkKey, StoreError> {
    let mut h = blake3::Hasher::new();
    for head in heads {
        h.update(head.as_ref());
    }
    ChunkKey::from_parts([doc_id, "snapshot", h.finalize().to_hex().as_str()])
        .map_err(|_| StoreError::InvalidEdit("storage key"))
}

pub(super) fn is_snapshot(key: &ChunkKey) -> bool {
    key.into_iter().nth(1).is_some_and(|k| k == "snapshot")
}
