//! Exchanging documents with other replicas: heads, full saves, exports,
//! and merging what another replica sent.

use automerge::ChangeHash;

use super::held::HeldDoc;
use super::keys::snapshot_key;
use super::reading::PatientReplica;
use super::values::CompartmentExport;
use crate::record::CompartmentDoc;
use crate::store::{DocumentInfo, StoreError};

impl PatientReplica {
    /// The heads of one held document (cheap: sync compares them before
    /// saving and merging a whole document).
    pub fn heads_of(&mut self, doc_id: &str) -> Option<Vec<ChangeHash>> {
        self.docs
            .values_mut()
            .find(|h| h.info.doc_id == doc_id)
            .map(|h| h.doc.heads())
    }

    /// One held document as a full save (sync hands it to samod).
    pub fn save_of(&mut self, doc_id: &str) -> Option<Vec<u8>> {
        self.docs
            .values_mut()
            .find(|h| h.info.doc_id == doc_id)
            .map(|h| h.doc.save())
    }

    /// Every held compartment as a full save, to hand to another replica.
    pub fn export(&mut self) -> Vec<CompartmentExport> {
        self.docs
            .values_mut()
            .map(|h| CompartmentExport {
                compartment: h.info.compartment,
                doc_id: h.info.doc_id.clone(),
                bytes: h.doc.save(),
            })
            .collect()
    }

    /// Merges another replica's compartment into this one and persists the
    /// result. A compartment not yet held is taken on.
    pub fn merge(&mut self, export: &CompartmentExport) -> Result<(), StoreError> {
        self.merge_read(export, None)
    }

    /// Like [`PatientReplica::merge`], with the export's bytes already read
    /// (`CompartmentDoc::load` for the export's compartment, which is what
    /// merging would do first): a fetch reads its documents across cores
    /// before taking the engine's lock. A compartment already held merges
    /// the bytes as `merge` does; the read copy then goes unused.
    pub fn merge_read(
        &mut self,
        export: &CompartmentExport,
        read: Option<CompartmentDoc>,
    ) -> Result<(), StoreError> {
        match self.docs.get_mut(&export.compartment) {
            Some(held) => {
                if held.info.doc_id != export.doc_id {
                    return Err(StoreError::InvalidEdit(
                        "the export is a different document for this compartment",
                    ));
                }
                held.doc.merge_bytes(&export.bytes)?;
                self.persist(export.compartment, None).map(|_| ())
            }
            None => {
                let mut doc = match read {
                    Some(doc) if doc.compartment() == export.compartment => doc,
                    _ => CompartmentDoc::load(export.compartment, &export.bytes)?,
                };
                let info = DocumentInfo {
                    doc_id: export.doc_id.clone(),
                    compartment: export.compartment,
                };
                let snapshot = snapshot_key(&info.doc_id, &doc.heads())?;
                let bytes = doc.save();
                self.store.write(|tx| {
                    self.store
                        .register_document_tx(tx, &self.record_ref, &self.key, &info)?;
                    self.store
                        .put_chunk_sealed_tx(tx, &snapshot, &bytes, &self.key)
                })?;
                self.docs.insert(
                    info.compartment,
                    HeldDoc::new(info, doc, snapshot, bytes.len()),
                );
                Ok(())
            }
        }
    }
}
