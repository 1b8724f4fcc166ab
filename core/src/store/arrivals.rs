//! Records that arrive by sync. The device registers a record (its data key,
//! its holding, its compartment documents) *before* asking the server for
//! the documents, so every chunk sync writes is sealed with the record's key
//! from the first byte; and it forgets single compartments the server no
//! longer shares with it (a patient choosing core only).

use super::records::seal_docs;
use super::{HoldReason, Holding, Rows, Store, StoreError};
use crate::NhsNumber;
use crate::store::DocumentInfo;

/// What registering an arriving record changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arrival {
    /// The device did not hold the record before.
    pub new_record: bool,
    /// Compartment documents registered now.
    pub new_documents: usize,
}

impl Store {
    /// Registers `docs` for the patient, creating the record and its holding
    /// if the device did not hold it, and runs `also` (an audit append) in
    /// the same transaction. A record the device originated keeps that
    /// holding; otherwise the holding follows `reason`.
    pub fn hold_arriving_with(
        &self,
        nhs: &NhsNumber,
        docs: &[DocumentInfo],
        reason: HoldReason,
        also: impl FnOnce(&dyn Rows, Arrival) -> Result<(), StoreError>,
    ) -> Result<Arrival, StoreError> {
        let record_ref = self.record_ref(nhs);
        self.write(|tx| {
            let existing = self.holding_of(tx, &record_ref)?;
            let exists = tx.record_exists(&record_ref)?;
            let key = if exists {
                self.record_key(tx, &record_ref)?
            } else {
                self.create_record_tx(tx, &record_ref)?
            };
            // The same incident closed on this device stays closed (its
            // retention window has started); an originated record stays so.
            let same = |held: &HoldReason| match (held, &reason) {
                (
                    HoldReason::Incident { incident_id: a, .. },
                    HoldReason::Incident { incident_id: b, .. },
                ) => a == b,
                (held, reason) => held == reason,
            };
            let keep =
                matches!(&existing, Some(h) if h.reason == HoldReason::Origin || same(&h.reason));
            if !keep {
                self.set_holding_tx(
                    tx,
                    &Holding {
                        nhs_number: *nhs,
                        reason,
                        held_since_ms: existing
                            .map(|h| h.held_since_ms)
                            .unwrap_or_else(crate::clock::now_ms),
                    },
                )?;
            }
            let held = self.documents_of(tx, &record_ref, &key)?;
            let mut arrival = Arrival {
                new_record: !exists,
                new_documents: 0,
            };
            for info in docs {
                if !held.iter().any(|h| h.doc_id == info.doc_id) {
                    self.register_document_tx(tx, &record_ref, &key, info)?;
                    arrival.new_documents += 1;
                }
            }
            also(tx, arrival)?;
            Ok(arrival)
        })
    }

    /// The compartment documents the device holds for the patient.
    pub fn documents_of_record(&self, nhs: &NhsNumber) -> Result<Vec<DocumentInfo>, StoreError> {
        let record_ref = self.record_ref(nhs);
        self.read(|conn| {
            let key = self.record_key(conn, &record_ref)?;
            self.documents_of(conn, &record_ref, &key)
        })
    }

    /// Whether the document belongs to a record this store holds (the
    /// device's sync storage persists nothing else).
    pub fn is_registered_document(&self, doc_id: &str) -> Result<bool, StoreError> {
        let doc_ref = self.doc_ref_of(doc_id);
        self.read(|conn| Ok(self.record_of_doc(conn, &doc_ref)?.is_some()))
    }

    /// Writes a chunk only if its document belongs to a registered record
    /// (or `unowned_ok`), checked in the same transaction as the write so a
    /// record forgotten meanwhile cannot get a chunk back. Returns whether
    /// it was written.
    pub fn put_chunk_if_registered(
        &self,
        key: &super::ChunkKey,
        data: &[u8],
        unowned_ok: bool,
    ) -> Result<bool, StoreError> {
        let Some(doc_id) = key.into_iter().next() else {
            return Ok(false);
        };
        let doc_ref = self.doc_ref_of(doc_id.as_ref());
        self.write(|tx| {
            if !unowned_ok && self.record_of_doc(tx, &doc_ref)?.is_none() {
                return Ok(false);
            }
            self.put_chunk_tx(tx, key, data)?;
            Ok(true)
        })
    }

    /// Deletes one compartment document of a record (its chunks and its
    /// registration) inside the caller's transaction. The rest of the record
    /// stays. Returns false if the record did not hold it.
    pub fn forget_document_tx(
        &self,
        tx: &dyn Rows,
        nhs: &NhsNumber,
        doc_id: &str,
    ) -> Result<bool, StoreError> {
        let record_ref = self.record_ref(nhs);
        let key = self.record_key(tx, &record_ref)?;
        let mut docs = self.documents_of(tx, &record_ref, &key)?;
        let before = docs.len();
        docs.retain(|d| d.doc_id != doc_id);
        if docs.len() == before {
            return Ok(false);
        }
        let doc_ref = self.doc_ref_of(doc_id);
        tx.document_forget(&doc_ref)?;
        tx.record_set_docs(&record_ref, &seal_docs(&key, &record_ref, &docs)?)?;
        Ok(true)
    }
}
