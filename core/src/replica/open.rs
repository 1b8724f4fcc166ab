//! The store's side of a replica: creating, importing and opening records,
//! and loading a held document from its chunks.

use std::collections::BTreeMap;

use super::held::HeldDoc;
use super::keys::{is_snapshot, new_doc_id, snapshot_key};
use super::reading::PatientReplica;
use super::values::CompartmentExport;
use crate::NhsNumber;
use crate::crypto::SecretKey;
use crate::record::{Compartment, CompartmentDoc, CompartmentView};
use crate::store::{ChunkKey, DocumentInfo, HoldReason, Holding, Store, StoreError};

impl Store {
    /// Creates a new record holding empty documents for `compartments`
    /// (on the device or server that originates the record).
    pub fn create_record(
        &self,
        nhs: &NhsNumber,
        compartments: &[Compartment],
    ) -> Result<PatientReplica, StoreError> {
        self.create_record_with(nhs, compartments, |_| Ok(()))
    }

    /// [`Store::create_record`], running `also` (an audit append) in the
    /// same transaction.
    pub fn create_record_with(
        &self,
        nhs: &NhsNumber,
        compartments: &[Compartment],
        also: impl FnOnce(&dyn crate::store::Rows) -> Result<(), StoreError>,
    ) -> Result<PatientReplica, StoreError> {
        let mut fresh = Vec::with_capacity(compartments.len());
        for &c in compartments {
            let doc = CompartmentDoc::create(c)?;
            fresh.push((new_doc_id()?, doc));
        }
        self.hold_new_record(nhs, fresh, HoldReason::Origin, also)
    }

    /// Starts holding a record that exists elsewhere, from its exported
    /// compartments (a device receiving a patient).
    pub fn import_record(
        &self,
        nhs: &NhsNumber,
        exports: &[CompartmentExport],
    ) -> Result<PatientReplica, StoreError> {
        self.import_record_with(nhs, exports, HoldReason::Unspecified, |_| Ok(()))
    }

    /// [`Store::import_record`], recording why the record is held and
    /// running `also` (an audit append) in the same transaction.
    pub fn import_record_with(
        &self,
        nhs: &NhsNumber,
        exports: &[CompartmentExport],
        reason: HoldReason,
        also: impl FnOnce(&dyn crate::store::Rows) -> Result<(), StoreError>,
    ) -> Result<PatientReplica, StoreError> {
        let mut docs = Vec::with_capacity(exports.len());
        for e in exports {
            docs.push((
                e.doc_id.clone(),
                CompartmentDoc::load(e.compartment, &e.bytes)?,
            ));
        }
        self.hold_new_record(nhs, docs, reason, also)
    }

    fn hold_new_record(
        &self,
        nhs: &NhsNumber,
        docs: Vec<(String, CompartmentDoc)>,
        reason: HoldReason,
        also: impl FnOnce(&dyn crate::store::Rows) -> Result<(), StoreError>,
    ) -> Result<PatientReplica, StoreError> {
        let record_ref = self.record_ref(nhs);
        let mut held = BTreeMap::new();
        let key = self.write(|tx| {
            let key = self.create_record_tx(tx, &record_ref)?;
            also(tx)?;
            // Written with the record so retention always knows why it is here.
            self.set_holding_tx(
                tx,
                &Holding {
                    nhs_number: *nhs,
                    reason,
                    held_since_ms: crate::clock::now_ms(),
                },
            )?;
            for (doc_id, mut doc) in docs {
                let info = DocumentInfo {
                    doc_id,
                    compartment: doc.compartment(),
                };
                self.register_document_tx(tx, &record_ref, &key, &info)?;
                let snapshot = snapshot_key(&info.doc_id, &doc.heads())?;
                let bytes = doc.save();
                self.put_chunk_sealed_tx(tx, &snapshot, &bytes, &key)?;
                held.insert(
                    info.compartment,
                    HeldDoc::new(info, doc, snapshot, bytes.len()),
                );
            }
            Ok(key)
        })?;
        Ok(PatientReplica {
            store: self.clone(),
            record_ref,
            key,
            docs: held,
        })
    }

    /// Opens the record held for `nhs`: unwraps its key, decrypts and loads
    /// every compartment document it holds.
    pub fn open_record(&self, nhs: &NhsNumber) -> Result<PatientReplica, StoreError> {
        let record_ref = self.record_ref(nhs);
        self.read(|conn| {
            let key = self.record_key(conn, &record_ref)?;
            let mut docs = BTreeMap::new();
            for info in self.documents_of(conn, &record_ref, &key)? {
                // A document registered for sync whose first bytes have not
                // arrived yet is not held yet.
                if let Some(held) = self.load_held(conn, info, &key)? {
                    docs.insert(held.info.compartment, held);
                }
            }
            Ok(PatientReplica {
                store: self.clone(),
                record_ref,
                key,
                docs,
            })
        })
    }

    /// One compartment of a held record, without loading the others (the
    /// server's share policy reads governance for every decision).
    pub fn view_of_compartment(
        &self,
        nhs: &NhsNumber,
        compartment: Compartment,
    ) -> Result<Option<CompartmentView>, StoreError> {
        let record_ref = self.record_ref(nhs);
        self.read(|conn| {
            let key = self.record_key(conn, &record_ref)?;
            let Some(info) = self
                .documents_of(conn, &record_ref, &key)?
                .into_iter()
                .find(|d| d.compartment == compartment)
            else {
                return Ok(None);
            };
            Ok(self.load_held(conn, info, &key)?.map(|h| h.doc.view()))
        })
    }

    pub(super) fn load_held(
        &self,
        conn: &dyn crate::store::Rows,
        info: DocumentInfo,
        record_key: &SecretKey,
    ) -> Result<Option<HeldDoc>, StoreError> {
        let prefix = ChunkKey::from_parts([info.doc_id.as_str()])
            .map_err(|_| StoreError::BadRow { table: "documents" })?;
        let mut chunks: Vec<(ChunkKey, Vec<u8>)> = self
            .load_chunk_range_on(conn, &prefix, Some(record_key))?
            .into_iter()
            .collect();
        if chunks.is_empty() {
            return Ok(None);
        }
        // Snapshots first, then incremental changes; Automerge queues any
        // change whose dependencies arrive later in the buffer.
        chunks.sort_by_key(|(k, _)| (!is_snapshot(k), k.to_string()));
        let total = chunks.iter().map(|(_, b)| b.len()).sum();
        let mut bytes = Vec::with_capacity(total);
        for (_, b) in &chunks {
            bytes.extend_from_slice(b);
        }
        let mut doc = CompartmentDoc::load_stored(info.compartment, &bytes)?;
        let saved_heads = doc.heads();
        let (snapshots, changes): (Vec<_>, Vec<_>) =
            chunks.iter().partition(|(k, _)| is_snapshot(k));
        Ok(Some(HeldDoc {
            info,
            doc,
            saved_heads,
            snapshot_bytes: snapshots.iter().map(|(_, b)| b.len()).sum(),
            change_bytes: changes.iter().map(|(_, b)| b.len()).sum(),
            on_disk: chunks.into_iter().map(|(k, _)| k).collect(),
        }))
    }
}
