//! A patient's record on this device: the compartment documents it holds,
//! loaded from the encrypted store, with the edit rules (supersede, never
//! overwrite) and durable persistence of every change.

use std::collections::BTreeMap;
use std::sync::Arc;

use automerge::ChangeHash;

use crate::NhsNumber;
use crate::audit::{AuditDraft, AuditEvent};
use crate::crypto::SecretKey;
use crate::record::{
    Compartment, CompartmentDoc, CompartmentView, EntryContent, EntryId, EntryVersion, EntryView,
    Provenance, VersionId, VersionStatus,
};
use crate::store::{ChunkKey, DocumentInfo, HoldReason, Holding, Store, StoreError};

/// The next write replaces a document's chunks with one snapshot once there
/// are this many chunks (samod compacts at a similar count)...
const COMPACT_AFTER_CHUNKS: usize = 32;
/// ...or once loose changes reach this fraction of the snapshot's size, which
/// keeps bytes on disk within 1.25x of Automerge's own `save()` while small
/// documents (cheap to save) compact often and large ones rarely.
const COMPACT_AT_FRACTION: usize = 4;

/// An audit event to commit in the same transaction as a write.
#[derive(Clone, Debug)]
pub struct AuditSpec {
    pub draft: AuditDraft,
    pub device: String,
    pub now_ms: i64,
}

/// A compartment's bytes as exchanged between replicas (a full save).
/// `Debug` shows the size, not the bytes (they hold patient data).
#[derive(Clone, PartialEq, Eq)]
pub struct CompartmentExport {
    pub compartment: Compartment,
    pub doc_id: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for CompartmentExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompartmentExport")
            .field("compartment", &self.compartment)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Every compartment this device holds for one patient, as views.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct RecordView {
    pub compartments: Vec<CompartmentView>,
}

impl RecordView {
    pub fn compartment(&self, c: Compartment) -> Option<&CompartmentView> {
        self.compartments.iter().find(|v| v.compartment == c)
    }

    pub fn entry(&self, id: EntryId) -> Option<&EntryView> {
        self.compartments.iter().find_map(|c| c.entry(id))
    }

    pub fn entry_count(&self) -> usize {
        self.compartments.iter().map(|c| c.entries.len()).sum()
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &EntryView> {
        self.compartments.iter().flat_map(|c| c.conflicts())
    }
}

struct HeldDoc {
    info: DocumentInfo,
    doc: CompartmentDoc,
    /// Heads already persisted: changes after these still need writing.
    saved_heads: Vec<ChangeHash>,
    /// Chunk keys on disk that this in-memory document includes.
    on_disk: Vec<ChunkKey>,
    /// Bytes of snapshots and of loose changes among `on_disk`.
    snapshot_bytes: usize,
    change_bytes: usize,
}

impl HeldDoc {
    fn new(
        info: DocumentInfo,
        mut doc: CompartmentDoc,
        snapshot: ChunkKey,
        snapshot_bytes: usize,
    ) -> Self {
        let saved_heads = doc.heads();
        Self {
            info,
            doc,
            saved_heads,
            on_disk: vec![snapshot],
            snapshot_bytes,
            change_bytes: 0,
        }
    }

    fn should_compact(&self, new_changes: usize, new_bytes: usize) -> bool {
        self.on_disk.len() + new_changes > COMPACT_AFTER_CHUNKS
            || (self.change_bytes + new_bytes) * COMPACT_AT_FRACTION > self.snapshot_bytes
    }
}

pub struct PatientReplica {
    store: Store,
    record_ref: crate::crypto::Ref,
    key: Arc<SecretKey>,
    docs: BTreeMap<Compartment, HeldDoc>,
}

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
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError>,
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
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError>,
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
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError>,
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

    fn load_held(
        &self,
        conn: &rusqlite::Connection,
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

impl PatientReplica {
    pub fn compartments(&self) -> Vec<Compartment> {
        self.docs.keys().copied().collect()
    }

    pub fn view(&self) -> RecordView {
        RecordView {
            compartments: self.docs.values().map(|h| h.doc.view()).collect(),
        }
    }

    pub fn view_compartment(&self, c: Compartment) -> Result<CompartmentView, StoreError> {
        Ok(self.held(c)?.doc.view())
    }

    /// Adds a new entry; sensitive items go to the sensitive compartment.
    pub fn add_entry(
        &mut self,
        content: EntryContent,
        sensitive: bool,
        provenance: Provenance,
    ) -> Result<EntryVersion, StoreError> {
        self.add_entry_audited(content, sensitive, provenance, None)
            .map(|(v, _)| v)
    }

    /// [`Self::add_entry`], committing `audit` in the same transaction.
    pub fn add_entry_audited(
        &mut self,
        content: EntryContent,
        sensitive: bool,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<(EntryVersion, Option<AuditEvent>), StoreError> {
        if sensitive && !content.may_be_sensitive() {
            return Err(StoreError::InvalidEdit(
                "this kind of entry cannot be marked sensitive",
            ));
        }
        let compartment = if sensitive {
            Compartment::Sensitive
        } else {
            content.home_compartment()
        };
        let version = EntryVersion::new(
            EntryId::new(),
            Vec::new(),
            VersionStatus::Current,
            content,
            provenance,
        );
        self.write_version(compartment, version, audit)
    }

    /// The compartment an entry's versions live in, if held.
    pub fn compartment_of(&self, entry: EntryId) -> Option<Compartment> {
        self.docs
            .iter()
            .find(|(_, h)| h.doc.view().entry(entry).is_some())
            .map(|(c, _)| *c)
    }

    /// Writes a new version of `entry` replacing the versions the author saw
    /// (`replaces`, normally the entry's current heads; all of them to
    /// resolve a conflict).
    pub fn supersede(
        &mut self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
        content: EntryContent,
        provenance: Provenance,
    ) -> Result<EntryVersion, StoreError> {
        self.supersede_audited(compartment, entry, replaces, content, provenance, None)
            .map(|(v, _)| v)
    }

    /// [`Self::supersede`], committing `audit` in the same transaction.
    pub fn supersede_audited(
        &mut self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
        content: EntryContent,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<(EntryVersion, Option<AuditEvent>), StoreError> {
        let view = self.checked_heads(compartment, entry, replaces)?;
        let kind = view
            .heads()
            .first()
            .map(|h| h.content.kind_name())
            .ok_or(StoreError::EntryNotFound)?;
        if kind != content.kind_name() {
            return Err(StoreError::InvalidEdit(
                "a new version must keep the entry's kind",
            ));
        }
        let version = EntryVersion::new(
            entry,
            replaces.to_vec(),
            VersionStatus::Current,
            content,
            provenance,
        );
        self.write_version(compartment, version, audit)
    }

    /// Marks the entry entered-in-error, keeping what it said and why.
    pub fn mark_entered_in_error(
        &mut self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
        reason: &str,
        provenance: Provenance,
    ) -> Result<EntryVersion, StoreError> {
        self.mark_entered_in_error_audited(compartment, entry, replaces, reason, provenance, None)
            .map(|(v, _)| v)
    }

    /// [`Self::mark_entered_in_error`], committing `audit` in the same transaction.
    pub fn mark_entered_in_error_audited(
        &mut self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
        reason: &str,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<(EntryVersion, Option<AuditEvent>), StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::InvalidEdit("entered-in-error needs a reason"));
        }
        let view = self.checked_heads(compartment, entry, replaces)?;
        let content = view
            .heads()
            .into_iter()
            .filter(|h| replaces.contains(&h.version_id))
            .max_by_key(|h| h.version_id)
            .map(|h| h.content.clone())
            .ok_or(StoreError::EntryNotFound)?;
        let status = VersionStatus::EnteredInError {
            reason: reason.to_owned(),
        };
        let version = EntryVersion::new(entry, replaces.to_vec(), status, content, provenance);
        self.write_version(compartment, version, audit)
    }

    /// Checks that `replaces` names only current heads of the entry: writing
    /// over a version someone else already replaced would hide their change.
    fn checked_heads(
        &self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
    ) -> Result<EntryView, StoreError> {
        if replaces.is_empty() {
            return Err(StoreError::InvalidEdit(
                "a new version must name the versions it replaces",
            ));
        }
        let view = self
            .held(compartment)?
            .doc
            .view()
            .entries
            .into_iter()
            .find(|e| e.entry_id == entry)
            .ok_or(StoreError::EntryNotFound)?;
        let heads = view.head_ids();
        if !replaces.iter().all(|r| heads.contains(r)) {
            return Err(StoreError::InvalidEdit(
                "a named version is not current; review the entry and try again",
            ));
        }
        Ok(view)
    }

    fn write_version(
        &mut self,
        compartment: Compartment,
        version: EntryVersion,
        audit: Option<&AuditSpec>,
    ) -> Result<(EntryVersion, Option<AuditEvent>), StoreError> {
        // The audit record names the entry it touched.
        let audit = audit.map(|a| {
            let mut a = a.clone();
            a.draft.entries = vec![version.entry_id.to_string()];
            a
        });
        self.held_mut(compartment)?.doc.put_version(&version)?;
        let event = self.persist(compartment, audit.as_ref())?;
        Ok((version, event))
    }

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
                let mut doc = CompartmentDoc::load(export.compartment, &export.bytes)?;
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

    /// Writes the document's unsaved changes in one transaction; compacts
    /// into a snapshot once enough chunks have built up. If the write fails,
    /// the in-memory document is reloaded from disk so it never shows a
    /// change that was not stored.
    fn persist(
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
        let mut audit_in = |tx: &rusqlite::Transaction<'_>| -> Result<(), StoreError> {
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

    fn held(&self, c: Compartment) -> Result<&HeldDoc, StoreError> {
        self.docs
            .get(&c)
            .ok_or(StoreError::CompartmentNotHeld(c.as_str()))
    }

    fn held_mut(&mut self, c: Compartment) -> Result<&mut HeldDoc, StoreError> {
        self.docs
            .get_mut(&c)
            .ok_or(StoreError::CompartmentNotHeld(c.as_str()))
    }
}

fn new_doc_id() -> Result<String, StoreError> {
    let mut bytes = vec![0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|_| StoreError::Crypto(crate::crypto::CryptoError::Random))?;
    let id =
        samod::DocumentId::try_from(bytes).map_err(|_| StoreError::InvalidEdit("document id"))?;
    Ok(id.to_string())
}

fn incremental_key(doc_id: &str, hash: &ChangeHash) -> Result<ChunkKey, StoreError> {
    ChunkKey::from_parts([doc_id, "incremental", &hash.to_string()])
        .map_err(|_| StoreError::InvalidEdit("storage key"))
}

/// Snapshots are named by a hash of the heads they contain, as samod does.
fn snapshot_key(doc_id: &str, heads: &[ChangeHash]) -> Result<ChunkKey, StoreError> {
    let mut h = blake3::Hasher::new();
    for head in heads {
        h.update(head.as_ref());
    }
    ChunkKey::from_parts([doc_id, "snapshot", h.finalize().to_hex().as_str()])
        .map_err(|_| StoreError::InvalidEdit("storage key"))
}

fn is_snapshot(key: &ChunkKey) -> bool {
    key.into_iter().nth(1).is_some_and(|k| k == "snapshot")
}
