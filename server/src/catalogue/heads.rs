//! Each stored document's heads, and its stored bytes while they fit a
//! budget, read once and kept until the document is written again: the
//! catalogue answers from here, so an unchanged caseload costs no document
//! load, and a fetch of documents another device fetched before reads no
//! SQLite row and unseals nothing. (The bytes are what samod would hold in
//! memory for a loaded document anyway.)
//!
//! A read races a write: what was read before a write must not be kept
//! after it. Each write is numbered; a read is kept only if no write of its
//! document (and no clearing of the whole index) came after it began.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use automerge::ChangeHash;
use scr_core::{Store, StoreError};

/// Stored bytes kept at most (the oldest kept go first).
pub const BYTES_BUDGET: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub struct HeadsIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    known: HashMap<String, Vec<ChangeHash>>,
    bytes: HashMap<String, Arc<Vec<u8>>>,
    /// Documents in the order their bytes were kept, and their total.
    kept_order: VecDeque<String>,
    kept_total: usize,
    /// Bumped by every write and every clearing.
    generation: u64,
    /// The generation of each document's last write.
    written_at: HashMap<String, u64>,
    cleared_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored document does not load")]
    Unreadable,
}

impl Inner {
    fn unchanged_since(&self, doc: &str, began: u64) -> bool {
        self.cleared_at <= began && self.written_at.get(doc).is_none_or(|at| *at <= began)
    }

    fn keep_bytes(&mut self, doc: &str, bytes: Arc<Vec<u8>>) {
        if bytes.len() > BYTES_BUDGET / 16 || self.bytes.contains_key(doc) {
            return;
        }
        self.kept_total += bytes.len();
        self.kept_order.push_back(doc.to_owned());
        self.bytes.insert(doc.to_owned(), bytes);
        while self.kept_total > BYTES_BUDGET {
            let Some(oldest) = self.kept_order.pop_front() else {
                break;
            };
            if let Some(b) = self.bytes.remove(&oldest) {
                self.kept_total -= b.len();
            }
        }
    }

    /// Drops a document's kept bytes; its place in `kept_order` goes
    /// lazily (when it comes up for eviction, or when stale places
    /// outnumber the kept ones), so a write costs no scan.
    fn drop_bytes(&mut self, doc: &str) {
        if let Some(b) = self.bytes.remove(doc) {
            self.kept_total -= b.len();
        }
        if self.kept_order.len() > 2 * self.bytes.len() + 64 {
            let mut seen = std::collections::HashSet::new();
            let bytes = &self.bytes;
            self.kept_order
                .retain(|d| bytes.contains_key(d) && seen.insert(d.clone()));
        }
    }
}

impl HeadsIndex {
    /// The document's heads as stored (empty for a document with nothing
    /// stored). Blocking: SQLite and a load.
    pub fn heads(&self, store: &Store, doc: &str) -> Result<Vec<ChangeHash>, HeadsError> {
        let began = {
            let inner = self.inner.lock().map_err(|_| HeadsError::Unreadable)?;
            if let Some(h) = inner.known.get(doc) {
                return Ok(h.clone());
            }
            inner.generation
        };
        let bytes = self.read(store, doc, began)?;
        let heads = if bytes.is_empty() {
            Vec::new()
        } else {
            automerge::Automerge::load(&bytes)
                .map_err(|_| HeadsError::Unreadable)?
                .get_heads()
        };
        if let Ok(mut inner) = self.inner.lock()
            && inner.unchanged_since(doc, began)
        {
            inner.known.insert(doc.to_owned(), heads.clone());
        }
        Ok(heads)
    }

    /// The document's stored bytes (empty when nothing is stored).
    /// Blocking: SQLite and unsealing, unless kept.
    pub fn bytes(&self, store: &Store, doc: &str) -> Result<Arc<Vec<u8>>, HeadsError> {
        let began = {
            let inner = self.inner.lock().map_err(|_| HeadsError::Unreadable)?;
            if let Some(b) = inner.bytes.get(doc) {
                return Ok(b.clone());
            }
            inner.generation
        };
        self.read(store, doc, began)
    }

    fn read(&self, store: &Store, doc: &str, began: u64) -> Result<Arc<Vec<u8>>, HeadsError> {
        let bytes = Arc::new(store.document_bytes(doc)?);
        if let Ok(mut inner) = self.inner.lock()
            && inner.unchanged_since(doc, began)
            && !bytes.is_empty()
        {
            inner.keep_bytes(doc, bytes.clone());
        }
        Ok(bytes)
    }

    /// The document was written: its heads and bytes are read again.
    /// Every document whose heads or bytes are kept.
    pub fn documents(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|i| i.known.keys().chain(i.bytes.keys()).cloned().collect())
            .unwrap_or_default()
    }

    pub fn written(&self, doc: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.generation += 1;
            let g = inner.generation;
            inner.known.remove(doc);
            inner.drop_bytes(doc);
            inner.written_at.insert(doc.to_owned(), g);
        }
    }

    /// Another process wrote (an admin command): forget everything.
    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.generation += 1;
            inner.cleared_at = inner.generation;
            inner.known.clear();
            inner.bytes.clear();
            inner.kept_order.clear();
            inner.kept_total = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_bytes_stay_within_the_budget_oldest_first() {
        let mut inner = Inner::default();
        let chunk = Arc::new(vec![0u8; BYTES_BUDGET / 16]);
        for n in 0..20 {
            inner.keep_bytes(&format!("doc-{n}"), chunk.clone());
        }
        assert!(inner.kept_total <= BYTES_BUDGET);
        assert!(!inner.bytes.contains_key("doc-0"), "the oldest went first");
        assert!(inner.bytes.contains_key("doc-19"));
        inner.drop_bytes("doc-19");
        assert!(!inner.bytes.contains_key("doc-19"));
        assert_eq!(
            inner.kept_total,
            inner.bytes.values().map(|b| b.len()).sum::<usize>()
        );
        // Something bigger than a sixteenth of the budget is never kept.
        inner.keep_bytes("huge", Arc::new(vec![0u8; BYTES_BUDGET / 16 + 1]));
        assert!(!inner.bytes.contains_key("huge"));
    }

    #[test]
    fn a_read_begun_before_a_write_is_not_kept() {
        let mut inner = Inner::default();
        let began = inner.generation;
        inner.generation += 1;
        let g = inner.generation;
        inner.written_at.insert("doc".into(), g);
        assert!(!inner.unchanged_since("doc", began));
        assert!(inner.unchanged_since("other", began));
        assert!(inner.unchanged_since("doc", g));
    }
}
