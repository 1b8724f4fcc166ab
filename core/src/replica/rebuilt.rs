//! Writing a rebuilt document in place of the old one (`record::rebuild`):
//! one snapshot for all its chunks, its refused versions kept aside.

use automerge::{Automerge, ChangeHash};

use super::keys::snapshot_key;
use crate::store::{Store, StoreError};

impl Store {
    /// In `tx`: `doc` (saved, with its `heads`) becomes the only stored
    /// state of `doc_id`, and `quarantined` (version key, text) is kept
    /// aside for the record.
    pub fn replace_document_with_tx(
        &self,
        tx: &dyn crate::store::Rows,
        doc_id: &str,
        doc: &Automerge,
        heads: &[ChangeHash],
        quarantined: &[(String, String)],
    ) -> Result<(), StoreError> {
        let snapshot = snapshot_key(doc_id, heads)?;
        self.replace_document_tx(tx, doc_id, &snapshot, &doc.save(), quarantined)
    }
}
