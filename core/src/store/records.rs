//! Patient records on this device: each has its own random data key, stored
//! only wrapped by the store's wrap key, and a set of compartment documents.
//! Forgetting a record deletes its key first (crypto-shred), then its rows.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Rows, Store, StoreError};
use crate::NhsNumber;
use crate::crypto::{self, Ref, SecretKey};
use crate::record::Compartment;

/// A compartment document this device holds for a record. Sealed at rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    /// samod document id (bs58check string).
    pub doc_id: String,
    pub compartment: Compartment,
}

pub(crate) type RecordRef = Ref;

const DOCS_PLACE: &[u8] = b"records.sealed_docs";

pub(super) fn seal_docs(
    record_key: &SecretKey,
    record_ref: &RecordRef,
    docs: &[DocumentInfo],
) -> Result<Vec<u8>, StoreError> {
    let plain = serde_json::to_vec(docs).map_err(|_| StoreError::BadRow { table: "records" })?;
    crypto::seal(record_key, &[DOCS_PLACE, record_ref], &plain).map_err(StoreError::Crypto)
}

impl Store {
    pub(crate) fn record_ref(&self, nhs: &NhsNumber) -> RecordRef {
        self.lookup().hash(&[b"record", nhs.digits().as_bytes()])
    }

    pub fn has_record(&self, nhs: &NhsNumber) -> Result<bool, StoreError> {
        let record_ref = self.record_ref(nhs);
        self.read(|rows| rows.record_exists(&record_ref))
    }

    /// Creates the record's data key. Fails if the device already holds one.
    pub(crate) fn create_record_tx(
        &self,
        tx: &dyn Rows,
        record_ref: &RecordRef,
    ) -> Result<Arc<SecretKey>, StoreError> {
        let key = SecretKey::random().map_err(StoreError::Crypto)?;
        let wrapped = crypto::seal(
            &self.inner.keys.wrap,
            &[b"records", record_ref],
            key.expose(),
        )
        .map_err(StoreError::Crypto)?;
        let docs = seal_docs(&key, record_ref, &[])?;
        if !tx.record_insert(record_ref, &wrapped, &docs)? {
            return Err(StoreError::RecordExists);
        }
        Ok(Arc::new(key))
    }

    /// The record's unwrapped data key.
    pub(crate) fn record_key(
        &self,
        conn: &dyn Rows,
        record_ref: &RecordRef,
    ) -> Result<Arc<SecretKey>, StoreError> {
        if let Some(key) = self.cached_key(record_ref)? {
            return Ok(key);
        }
        let wrapped: Vec<u8> = conn
            .record_wrapped_key(record_ref)?
            .ok_or(StoreError::RecordNotFound)?;
        let bytes = crypto::open(&self.inner.keys.wrap, &[b"records", record_ref], &wrapped)
            .map_err(|cause| StoreError::Tampered {
                table: "records",
                cause,
            })?;
        let key =
            Arc::new(SecretKey::from_slice(&bytes).ok_or(StoreError::BadRow { table: "records" })?);
        self.inner
            .record_keys
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .insert(*record_ref, key.clone());
        Ok(key)
    }

    fn cached_key(&self, record_ref: &RecordRef) -> Result<Option<Arc<SecretKey>>, StoreError> {
        Ok(self
            .inner
            .record_keys
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .get(record_ref)
            .cloned())
    }

    pub(crate) fn record_of_doc(
        &self,
        conn: &dyn Rows,
        doc_ref: &Ref,
    ) -> Result<Option<RecordRef>, StoreError> {
        conn.document_record(doc_ref)?
            .map(|r| {
                r.try_into()
                    .map_err(|_| StoreError::BadRow { table: "documents" })
            })
            .transpose()
    }

    /// Ties a document to a record, re-sealing any chunks already stored for it.
    pub(crate) fn register_document_tx(
        &self,
        tx: &dyn Rows,
        record_ref: &RecordRef,
        record_key: &SecretKey,
        info: &DocumentInfo,
    ) -> Result<(), StoreError> {
        let doc_ref = self.doc_ref_of(&info.doc_id);
        if let Some(owner) = self.record_of_doc(tx, &doc_ref)? {
            if &owner != record_ref {
                return Err(StoreError::InvalidEdit(
                    "document already belongs to another record",
                ));
            }
            return Ok(());
        }
        self.reseal_chunks_tx(tx, &doc_ref, record_key)?;
        tx.document_insert(&doc_ref, record_ref)?;
        let mut docs = self.documents_of(tx, record_ref, record_key)?;
        docs.push(info.clone());
        tx.record_set_docs(record_ref, &seal_docs(record_key, record_ref, &docs)?)?;
        Ok(())
    }

    /// The compartment documents held for a record.
    pub(crate) fn documents_of(
        &self,
        conn: &dyn Rows,
        record_ref: &RecordRef,
        record_key: &SecretKey,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        let sealed: Vec<u8> = conn
            .record_docs(record_ref)?
            .ok_or(StoreError::RecordNotFound)?;
        let plain =
            crypto::open(record_key, &[DOCS_PLACE, record_ref], &sealed).map_err(|cause| {
                StoreError::Tampered {
                    table: "records",
                    cause,
                }
            })?;
        let mut docs: Vec<DocumentInfo> =
            serde_json::from_slice(&plain).map_err(|_| StoreError::BadRow { table: "records" })?;
        docs.sort_by_key(|d| d.compartment);
        Ok(docs)
    }

    /// Which patient and compartment a document holds, if it belongs to a
    /// record in this store (the server's share policy asks this).
    pub fn owner_of_document(
        &self,
        doc_id: &str,
    ) -> Result<Option<(NhsNumber, Compartment)>, StoreError> {
        let doc_ref = self.doc_ref_of(doc_id);
        self.read(|conn| {
            let Some(record_ref) = self.record_of_doc(conn, &doc_ref)? else {
                return Ok(None);
            };
            let Some(holding) = self.holding_of(conn, &record_ref)? else {
                return Ok(None);
            };
            let key = self.record_key(conn, &record_ref)?;
            let compartment = self
                .documents_of(conn, &record_ref, &key)?
                .into_iter()
                .find(|d| d.doc_id == doc_id)
                .map(|d| d.compartment);
            Ok(compartment.map(|c| (holding.nhs_number, c)))
        })
    }

    /// Forgets a patient: deletes the wrapped data key (after which nothing of
    /// theirs can be decrypted), then the documents, chunks and holding, then
    /// checkpoints the WAL so no old page keeps them. Returns false if the
    /// device held no such record. The audit queue is untouched.
    pub fn forget_record(&self, nhs: &NhsNumber) -> Result<bool, StoreError> {
        let removed = self.write(|tx| self.forget_record_tx(tx, nhs))?;
        self.checkpoint()?;
        Ok(removed)
    }

    /// The deletions of [`Store::forget_record`] inside the caller's
    /// transaction (so the audit event commits with them); call
    /// [`Store::checkpoint`] after the commit.
    pub fn forget_record_tx(&self, tx: &dyn Rows, nhs: &NhsNumber) -> Result<bool, StoreError> {
        let record_ref = self.record_ref(nhs);
        let existed = tx.record_forget(&record_ref)?;
        self.inner
            .record_keys
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .remove(&record_ref);
        Ok(existed)
    }
}
