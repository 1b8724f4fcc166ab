//! A document replaced whole (rebuilt after the server refused part of
//! it), and the versions kept aside from it: sealed with the record's key,
//! shown on the device, never sent again (issue 16).

use super::{ChunkKey, Rows, Store, StoreError};
use crate::NhsNumber;
use crate::crypto;
use crate::record::Compartment;

const TABLE: &str = "quarantine";

impl Store {
    /// In `tx`: every chunk of `doc_id` deleted, `bytes` written as its
    /// one snapshot under `snapshot`, and each `(key, text)` of
    /// `quarantined` kept aside. The document must belong to a record.
    pub fn replace_document_tx(
        &self,
        tx: &dyn Rows,
        doc_id: &str,
        snapshot: &ChunkKey,
        bytes: &[u8],
        quarantined: &[(String, String)],
    ) -> Result<(), StoreError> {
        let doc_ref = self.doc_ref_of(doc_id);
        let record_ref = self
            .record_of_doc(tx, &doc_ref)?
            .ok_or(StoreError::RecordNotFound)?;
        let key = self.record_key(tx, &record_ref)?;
        tx.chunks_delete_of(&doc_ref)?;
        self.put_chunk_sealed_tx(tx, snapshot, bytes, &key)?;
        for (version, text) in quarantined {
            let key_ref =
                self.lookup()
                    .hash(&[TABLE.as_bytes(), doc_id.as_bytes(), version.as_bytes()]);
            let sealed = crypto::seal(&key, &[TABLE.as_bytes(), &key_ref], text.as_bytes())
                .map_err(StoreError::Crypto)?;
            tx.quarantine_put(&key_ref, &doc_ref, &sealed)?;
        }
        Ok(())
    }

    /// The versions kept aside from the patient's documents, by
    /// compartment (their text as stored: the JSON of an `EntryVersion`).
    pub fn quarantined(&self, nhs: &NhsNumber) -> Result<Vec<(Compartment, String)>, StoreError> {
        let record_ref = self.record_ref(nhs);
        self.read(|conn| {
            let key = self.record_key(conn, &record_ref)?;
            let mut out = Vec::new();
            for info in self.documents_of(conn, &record_ref, &key)? {
                let doc_ref = self.doc_ref_of(&info.doc_id);
                for (key_ref, sealed) in conn.quarantine_of(&doc_ref)? {
                    let plain = crypto::open(&key, &[TABLE.as_bytes(), &key_ref], &sealed)
                        .map_err(|cause| StoreError::Tampered {
                            table: TABLE,
                            cause,
                        })?;
                    let text = String::from_utf8(plain)
                        .map_err(|_| StoreError::BadRow { table: TABLE })?;
                    out.push((info.compartment, text));
                }
            }
            Ok(out)
        })
    }
}
