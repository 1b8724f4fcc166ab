//! Persisting a document's changes: incremental chunks or a compacted
//! snapshot, with the write's audit event in the same transaction.

use super::keys::{incremental_key, snapshot_key};
use super::reading::PatientReplica;
use super::values::AuditSpec;
use crate::audit::AuditEvent;
use crate::record::Compartment;
use crate::store::StoreError;

impl PatientReplica {
    /// Writes the document's unsaved changes in one transaction; compacts
    /// into a snapshot once enough chunks have built up. If the write fails,
    /// the in-memory document is reloaded from disk so it never shows a
    /// change that was not stored.
    pub(super) fn persist(
        &mut self,
        compartment: Compartment,
        audit: Option<&AuditSpec>,
    ) -> Result<Option<AuditEvent>, StoreError> {
        let store = self.store.clone();
        let key = self.key.clone();
        let held = self.held_mut(compartment)?;
        let changes = held.doc.changes_since(&held.saved_heads);
        if changes.is_empty() {
            return Ok(None);
        }
        let mut event = None;
        let mut audit_in = |tx: &dyn crate::store::Rows| -> Result<(), StoreError> {
            if let Some(a) = audit {
                event = Some(store.append_audit_tx(tx, a.draft.clone(), &a.device, a.now_ms)?);
            }
            Ok(())
        };
        let new_bytes: usize = changes.iter().map(|(_, b)| b.len()).sum();
        let result = if held.should_compact(changes.len(), new_bytes) {
            let heads = held.doc.heads();
            let bytes = held.doc.save();
            snapshot_key(&held.info.doc_id, &heads).and_then(|snapshot| {
                store
                    .write(|tx| {
                        audit_in(tx)?;
                        store.put_chunk_sealed_tx(tx, &snapshot, &bytes, &key)?;
                        for old in held.on_disk.iter().filter(|k| **k != snapshot) {
                            store.delete_chunk_tx(tx, old)?;
                        }
                        Ok(())
                    })
                    .map(|()| {
                        held.snapshot_bytes = bytes.len();
                        held.change_bytes = 0;
                        vec![snapshot]
                    })
            })
        } else {
            changes
                .iter()
                .map(|(hash, _)| incremental_key(&held.info.doc_id, hash))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|keys| {
                    store
                        .write(|tx| {
                            audit_in(tx)?;
                            for (chunk_key, (_, bytes)) in keys.iter().zip(&changes) {
                                store.put_chunk_sealed_tx(tx, chunk_key, bytes, &key)?;
                            }
                            Ok(())
                        })
                        .map(|()| {
                            held.change_bytes += new_bytes;
                            let mut all = std::mem::take(&mut held.on_disk);
                            all.extend(keys);
                            all
                        })
                })
        };
        match result {
            Ok(on_disk) => {
                held.on_disk = on_disk;
                held.saved_heads = held.doc.heads();
                Ok(event)
            }
            Err(e) => {
                self.reload(compartment)?;
                Err(e)
            }
        }
    }

    fn reload(&mut self, compartment: Compartment) -> Result<(), StoreError> {
        let info = self.held(compartment)?.info.clone();
        match self
            .store
            .read(|conn| self.store.load_held(conn, info, &self.key))?
        {
            Some(fresh) => self.docs.insert(compartment, fresh),
            None => self.docs.remove(&compartment),
        };
        Ok(())
    }
}
