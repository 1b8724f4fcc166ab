//! Automerge chunks under samod's storage keys (`[doc id, "incremental" |
//! "snapshot", hash]`), sealed with the owning record's key, or the store's
//! general key for documents that belong to no patient.
//!
//! Rows are found by keyed hashes of the key and of its first one and two
//! parts, which serve samod's range loads without storing a document id.

use std::collections::HashMap;
use std::sync::Arc;

use super::rows::ChunkRange;
use super::{Rows, Store, StoreError};
use crate::crypto::{self, Ref, SecretKey};

pub use samod::storage::StorageKey as ChunkKey;

const TABLE: &str = "chunks";

impl Store {
    fn key_ref(&self, key: &ChunkKey) -> Ref {
        let mut parts: Vec<&[u8]> = vec![b"key"];
        parts.extend(key.into_iter().map(|p| p.as_bytes()));
        self.lookup().hash(&parts)
    }

    /// The keyed hash of a key's first `depth` parts (1: document, 2: range).
    fn prefix_ref(&self, key: &ChunkKey, depth: usize) -> Ref {
        let tag: &[u8] = if depth == 1 { b"doc" } else { b"range" };
        let mut parts: Vec<&[u8]> = vec![tag];
        parts.extend(key.into_iter().take(depth).map(|p| p.as_bytes()));
        self.lookup().hash(&parts)
    }

    pub(crate) fn doc_ref_of(&self, doc_id: &str) -> Ref {
        self.lookup().hash(&[b"doc", doc_id.as_bytes()])
    }

    /// The keyed hash a backend knows a document by (its chunks' and its
    /// registration's row): what a node is told another node wrote, to
    /// match against the documents it holds. Not the id itself.
    pub fn document_ref(&self, doc_id: &str) -> Ref {
        self.doc_ref_of(doc_id)
    }

    fn chunk_sealing_key(
        &self,
        conn: &dyn Rows,
        doc_ref: &Ref,
    ) -> Result<Arc<SecretKey>, StoreError> {
        match self.record_of_doc(conn, doc_ref)? {
            Some(record_ref) => self.record_key(conn, &record_ref),
            None => Ok(Arc::new(self.inner.keys.general.duplicate())),
        }
    }

    /// Writes one chunk inside the caller's transaction, sealed with the key
    /// of the record that owns its document.
    pub(crate) fn put_chunk_tx(
        &self,
        tx: &dyn Rows,
        key: &ChunkKey,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let sealing = self.chunk_sealing_key(tx, &self.prefix_ref(key, 1))?;
        self.put_chunk_sealed_tx(tx, key, data, &sealing)
    }

    /// Writes one chunk with a sealing key the caller already holds (a
    /// replica writing its own record's documents).
    pub(crate) fn put_chunk_sealed_tx(
        &self,
        tx: &dyn Rows,
        key: &ChunkKey,
        data: &[u8],
        sealing: &SecretKey,
    ) -> Result<(), StoreError> {
        let key_ref = self.key_ref(key);
        let doc_ref = self.prefix_ref(key, 1);
        let range_ref = self.prefix_ref(key, 2);
        let sealed = crypto::seal(sealing, &[TABLE.as_bytes(), &key_ref], &encode(key, data))
            .map_err(StoreError::Crypto)?;
        tx.chunk_put(&key_ref, &doc_ref, &range_ref, &sealed)
    }

    pub(crate) fn delete_chunk_tx(&self, tx: &dyn Rows, key: &ChunkKey) -> Result<(), StoreError> {
        tx.chunk_delete(&self.key_ref(key))
    }

    pub fn put_chunk(&self, key: &ChunkKey, data: &[u8]) -> Result<(), StoreError> {
        self.write(|tx| self.put_chunk_tx(tx, key, data))
    }

    pub fn delete_chunk(&self, key: &ChunkKey) -> Result<(), StoreError> {
        self.write(|tx| self.delete_chunk_tx(tx, key))
    }

    pub fn load_chunk(&self, key: &ChunkKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|conn| {
            let key_ref = self.key_ref(key);
            let row = conn.chunk_get(&key_ref)?;
            let Some((doc_ref, sealed)) = row else {
                return Ok(None);
            };
            let (stored_key, data) = self.open_chunk(conn, &doc_ref, &key_ref, &sealed)?;
            if &stored_key != key {
                return Err(StoreError::BadRow { table: TABLE });
            }
            Ok(Some(data))
        })
    }

    /// Whether any chunk of the document is stored (nothing is unsealed).
    pub fn has_chunks(&self, doc_id: &str) -> Result<bool, StoreError> {
        let doc_ref = self.doc_ref_of(doc_id);
        self.read(|rows| rows.chunks_exist(&doc_ref))
    }

    /// A document's stored chunks as one buffer Automerge loads: snapshots
    /// first (it queues changes whose dependencies come later in the
    /// buffer), then its changes.
    pub fn document_bytes(&self, doc_id: &str) -> Result<Vec<u8>, StoreError> {
        let prefix =
            ChunkKey::from_parts([doc_id]).map_err(|_| StoreError::InvalidEdit("storage key"))?;
        let mut chunks: Vec<_> = self.load_chunk_range(&prefix)?.into_iter().collect();
        chunks.sort_by_key(|(k, _)| {
            let snapshot = k.into_iter().nth(1).is_some_and(|p| p == "snapshot");
            (!snapshot, k.to_string())
        });
        Ok(chunks.into_iter().flat_map(|(_, b)| b).collect())
    }

    /// Every chunk whose key starts with `prefix`.
    pub fn load_chunk_range(
        &self,
        prefix: &ChunkKey,
    ) -> Result<HashMap<ChunkKey, Vec<u8>>, StoreError> {
        self.read(|conn| self.load_chunk_range_on(conn, prefix, None))
    }

    /// `sealing`: the owning record's key when the caller holds it, which
    /// saves looking up the owner of every row.
    pub(crate) fn load_chunk_range_on(
        &self,
        conn: &dyn Rows,
        prefix: &ChunkKey,
        sealing: Option<&SecretKey>,
    ) -> Result<HashMap<ChunkKey, Vec<u8>>, StoreError> {
        let depth = prefix.into_iter().count();
        let (doc, range) = (self.prefix_ref(prefix, 1), self.prefix_ref(prefix, 2));
        let rows = conn.chunks_in(match depth {
            0 => ChunkRange::All,
            1 => ChunkRange::Document(&doc),
            _ => ChunkRange::Range(&doc, &range),
        })?;
        let mut out = HashMap::with_capacity(rows.len());
        // Each document's sealing key looked up once, not once a chunk (a
        // round trip each on a remote backend).
        let mut keys: HashMap<Ref, Arc<SecretKey>> = HashMap::new();
        for (key_ref, doc_ref, sealed) in rows {
            let key_ref: Ref = key_ref
                .try_into()
                .map_err(|_| StoreError::BadRow { table: TABLE })?;
            let (key, data) = match sealing {
                Some(k) => open_sealed(k, &key_ref, &sealed)?,
                None => {
                    let doc_ref: Ref = doc_ref
                        .as_slice()
                        .try_into()
                        .map_err(|_| StoreError::BadRow { table: TABLE })?;
                    let k = match keys.get(&doc_ref) {
                        Some(k) => k.clone(),
                        None => {
                            let k = self.chunk_sealing_key(conn, &doc_ref)?;
                            keys.insert(doc_ref, k.clone());
                            k
                        }
                    };
                    open_sealed(&k, &key_ref, &sealed)?
                }
            };
            if prefix.is_prefix_of(&key) {
                out.insert(key, data);
            }
        }
        Ok(out)
    }

    fn open_chunk(
        &self,
        conn: &dyn Rows,
        doc_ref: &[u8],
        key_ref: &Ref,
        sealed: &[u8],
    ) -> Result<(ChunkKey, Vec<u8>), StoreError> {
        let doc_ref: Ref = doc_ref
            .try_into()
            .map_err(|_| StoreError::BadRow { table: TABLE })?;
        let key = self.chunk_sealing_key(conn, &doc_ref)?;
        open_sealed(&key, key_ref, sealed)
    }

    /// Re-seals a document's chunks under `record_key`: samod may have stored
    /// them (under the general key) before the document was assigned to a
    /// patient.
    pub(crate) fn reseal_chunks_tx(
        &self,
        tx: &dyn Rows,
        doc_ref: &Ref,
        record_key: &SecretKey,
    ) -> Result<(), StoreError> {
        for (key_ref, _, sealed) in tx.chunks_in(ChunkRange::Document(doc_ref))? {
            let place: [&[u8]; 2] = [TABLE.as_bytes(), &key_ref];
            let plain =
                crypto::open(&self.inner.keys.general, &place, &sealed).map_err(|cause| {
                    StoreError::Tampered {
                        table: TABLE,
                        cause,
                    }
                })?;
            let resealed = crypto::seal(record_key, &place, &plain).map_err(StoreError::Crypto)?;
            let key_ref: Ref = key_ref
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::BadRow { table: TABLE })?;
            tx.chunk_reseal(&key_ref, &resealed)?;
        }
        Ok(())
    }
}

fn open_sealed(
    key: &SecretKey,
    key_ref: &Ref,
    sealed: &[u8],
) -> Result<(ChunkKey, Vec<u8>), StoreError> {
    let plain = crypto::open(key, &[TABLE.as_bytes(), key_ref], sealed).map_err(|cause| {
        StoreError::Tampered {
            table: TABLE,
            cause,
        }
    })?;
    decode(&plain).ok_or(StoreError::BadRow { table: TABLE })
}

/// Plaintext of a chunk row, format 1: `[1][u32 LE key length][key joined by "/"][data]`.
fn encode(key: &ChunkKey, data: &[u8]) -> Vec<u8> {
    let key = key.to_string();
    let mut out = Vec::with_capacity(5 + key.len() + data.len());
    out.push(1);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(data);
    out
}

fn decode(plain: &[u8]) -> Option<(ChunkKey, Vec<u8>)> {
    let (&format, rest) = plain.split_first()?;
    if format != 1 || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    if rest.len() < len {
        return None;
    }
    let (key, data) = rest.split_at(len);
    let key = std::str::from_utf8(key).ok()?;
    let key = ChunkKey::from_parts(key.split('/')).ok()?;
    Some((key, data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_refuses_damaged_plaintext() {
        let key = ChunkKey::from_parts(["doc", "incremental", "abc"]).unwrap();
        let good = encode(&key, b"data");
        assert_eq!(decode(&good), Some((key, b"data".to_vec())));
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[2, 0, 0, 0, 0]), None);
        assert_eq!(decode(&good[..6]), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
