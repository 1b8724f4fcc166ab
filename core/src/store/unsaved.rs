//! What samod asked the store to keep and the store refused (a lost
//! database, a full disk). samod's storage trait has no error channel: it
//! carries on as if the chunk were stored, answers devices that it holds
//! the change, and, after compacting, deletes the chunks the lost one was
//! to replace. So a refused chunk is kept here, in memory, until the store
//! takes it ([`super::SamodStorage::save_unsaved`]), samod's reads find it
//! here, and no chunk of its document is deleted meanwhile: an extra chunk
//! costs a merge at load, a missing one loses a change.

use std::collections::HashMap;

use super::ChunkKey;

/// At most this many bytes are kept: a node cut off from its store ends
/// its sessions within a second, so far less arrives.
const CAP: usize = 64 << 20;

#[derive(Default)]
pub(crate) struct Unsaved {
    chunks: HashMap<ChunkKey, Vec<u8>>,
    bytes: usize,
    /// Documents a refused chunk of which could not be kept: nothing of
    /// them is deleted for as long as this process runs (the chunk may be
    /// the one the deleted ones were replaced by).
    dropped: std::collections::HashSet<String>,
}

impl Unsaved {
    /// Keeps a refused chunk; `false` if there is no room left for it (its
    /// document's chunks are then never deleted by this process).
    pub(crate) fn keep(&mut self, key: ChunkKey, data: Vec<u8>) -> bool {
        let replaced = self.chunks.get(&key).map_or(0, Vec::len);
        if self.bytes - replaced + data.len() > CAP {
            if let Some(doc) = key.into_iter().next() {
                self.dropped.insert(doc.to_string());
            }
            return false;
        }
        self.bytes = self.bytes - replaced + data.len();
        self.chunks.insert(key, data);
        true
    }

    /// The chunk was stored (or samod no longer wants it).
    pub(crate) fn forget(&mut self, key: &ChunkKey) {
        if let Some(data) = self.chunks.remove(key) {
            self.bytes -= data.len();
        }
    }

    /// Whether a chunk of `doc` is still to be stored (or was dropped).
    pub(crate) fn holds_document(&self, doc: &str) -> bool {
        self.dropped.contains(doc)
            || self
                .chunks
                .keys()
                .any(|k| k.into_iter().next().is_some_and(|d| d.as_str() == doc))
    }

    /// The kept chunk under `key`.
    pub(crate) fn get(&self, key: &ChunkKey) -> Option<Vec<u8>> {
        self.chunks.get(key).cloned()
    }

    /// The kept chunks whose keys start with `prefix`'s parts.
    pub(crate) fn under(&self, prefix: &ChunkKey) -> Vec<(ChunkKey, Vec<u8>)> {
        self.chunks
            .iter()
            .filter(|(k, _)| {
                let mut parts = k.into_iter();
                prefix.into_iter().all(|p| parts.next() == Some(p))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.chunks.len()
    }

    /// A copy of what is kept, to store.
    pub(crate) fn all(&self) -> Vec<(ChunkKey, Vec<u8>)> {
        self.chunks
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&str]) -> ChunkKey {
        ChunkKey::from_parts(parts.iter().copied()).unwrap()
    }

    #[test]
    fn a_kept_chunk_holds_its_document_until_forgotten() {
        let mut u = Unsaved::default();
        assert!(u.keep(key(&["docA", "incremental", "01"]), vec![1; 10]));
        assert!(u.keep(key(&["docA", "snapshot", "02"]), vec![2; 10]));
        assert!(u.holds_document("docA"));
        assert!(!u.holds_document("docB"));
        u.forget(&key(&["docA", "incremental", "01"]));
        assert!(u.holds_document("docA"));
        u.forget(&key(&["docA", "snapshot", "02"]));
        assert!(!u.holds_document("docA"));
        assert_eq!((u.len(), u.bytes), (0, 0));
    }

    #[test]
    fn kept_chunks_are_found_by_key_and_by_prefix() {
        let mut u = Unsaved::default();
        u.keep(key(&["docA", "incremental", "01"]), vec![1]);
        u.keep(key(&["docA", "snapshot", "02"]), vec![2]);
        u.keep(key(&["docB", "snapshot", "03"]), vec![3]);
        assert_eq!(u.get(&key(&["docA", "snapshot", "02"])), Some(vec![2]));
        assert_eq!(u.get(&key(&["docA", "snapshot", "09"])), None);
        assert_eq!(u.under(&key(&["docA"])).len(), 2);
        assert_eq!(u.under(&key(&["docA", "snapshot"])).len(), 1);
        assert_eq!(u.under(&key(&["doc"])).len(), 0, "whole parts only");
    }

    #[test]
    fn what_does_not_fit_is_not_kept() {
        let mut u = Unsaved::default();
        assert!(u.keep(key(&["a", "snapshot", "1"]), vec![0; CAP - 1]));
        assert!(!u.keep(key(&["b", "snapshot", "1"]), vec![0; 2]));
        // Its document's chunks are never deleted now.
        assert!(u.holds_document("b"));
        u.forget(&key(&["b", "snapshot", "1"]));
        assert!(u.holds_document("b"));
        // The same key again replaces, and fits.
        assert!(u.keep(key(&["a", "snapshot", "1"]), vec![0; CAP]));
        assert_eq!(u.len(), 1);
    }
}
