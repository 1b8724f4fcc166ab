//! What the background sync driver needs from the engine: the documents to
//! keep in step, the server's holdings list applied (register what arrives,
//! forget what is no longer shared), and which records changed locally
//! since the driver last looked. Needs no unlocked session: sync runs in the
//! background, and everything here is audited as a device event.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::{Engine, EngineError, State};
use crate::NhsNumber;
use crate::audit::AuditDraft;
use crate::protocol::{HeldPatient, HoldingsList};
use crate::retention::{self, AfterList, ForgetReason};
use crate::store::DocumentInfo;

const HOLDINGS_DOC: &str = "sync-holdings-document";

/// What applying a holdings list changed on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldingsOutcome {
    /// Patients the device did not hold before.
    pub received: usize,
    /// Patients forgotten (crypto-shredded) because the list no longer has them.
    pub forgotten: usize,
    /// Compartments forgotten while the rest of the record stays.
    pub compartments_forgotten: usize,
    /// Patients no longer listed but kept because this device has changes to
    /// them the server has not confirmed (forgotten once confirmed).
    pub kept_unsent: usize,
}

/// Where the unsent set is persisted (sealed), so a restart cannot turn an
/// unsent record into a forgettable one.
const UNSENT: &str = "sync-unsent";

/// Records written on this device: `dirty` until the driver has handed the
/// change to sync, `unsent` until the server has confirmed it. `unsent` is
/// also persisted, before the write it covers.
#[derive(Default)]
pub(crate) struct LocalChanges {
    dirty: Mutex<BTreeSet<NhsNumber>>,
    unsent: Mutex<BTreeSet<NhsNumber>>,
    pub(crate) notify: tokio::sync::Notify,
    /// When the server last confirmed each record (`sync_status`).
    pub(crate) confirmed: Mutex<std::collections::BTreeMap<NhsNumber, i64>>,
    /// Moves whenever a record's sync status may have changed.
    pub(crate) status: tokio::sync::watch::Sender<u64>,
}

impl LocalChanges {
    /// The unsent set and confirmation times as persisted by an earlier run.
    pub(crate) fn load(store: &crate::Store) -> Result<Self, crate::StoreError> {
        let unsent = store.read(|conn| read_unsent(store, conn))?;
        let confirmed = store.read(|conn| super::sync_status::read_confirmed(store, conn))?;
        Ok(Self {
            unsent: Mutex::new(unsent),
            confirmed: Mutex::new(confirmed),
            ..Self::default()
        })
    }

    pub(crate) fn mark(&self, nhs: &NhsNumber) {
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(*nhs);
        }
        if let Ok(mut u) = self.unsent.lock() {
            u.insert(*nhs);
        }
        self.notify.notify_one();
        self.status.send_modify(|v| *v = v.wrapping_add(1));
    }
}

fn read_unsent(
    store: &crate::Store,
    conn: &dyn crate::store::Rows,
) -> Result<BTreeSet<NhsNumber>, crate::StoreError> {
    match store.sealed_meta(conn, UNSENT)? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).map_err(|_| crate::StoreError::BadRow { table: "meta" })
        }
        None => Ok(BTreeSet::new()),
    }
}

/// Adds or removes one record in the persisted unsent set.
fn update_unsent(
    store: &crate::Store,
    nhs: &NhsNumber,
    unsent: bool,
) -> Result<(), crate::StoreError> {
    store.write(|tx| {
        let mut set = read_unsent(store, tx)?;
        let changed = if unsent {
            set.insert(*nhs)
        } else {
            set.remove(nhs)
        };
        if changed {
            let json = serde_json::to_vec(&set)
                .map_err(|_| crate::StoreError::BadRow { table: "meta" })?;
            store.put_sealed_meta_tx(tx, UNSENT, &json)?;
        }
        Ok(())
    })
}

impl Engine {
    /// The id of this device's holdings document, learnt at login.
    pub fn holdings_document(&self) -> Result<Option<String>, EngineError> {
        Ok(self
            .store
            .secret(HOLDINGS_DOC)?
            .and_then(|b| String::from_utf8(b.to_vec()).ok()))
    }

    pub fn set_holdings_document(&self, doc_id: &str) -> Result<(), EngineError> {
        self.store.put_secret(HOLDINGS_DOC, doc_id.as_bytes())?;
        Ok(())
    }

    /// Every compartment document of every record the device holds.
    pub fn held_documents(&self) -> Result<Vec<(NhsNumber, DocumentInfo)>, EngineError> {
        let mut out = Vec::new();
        for h in self.store.holdings()? {
            for d in self.store.documents_of_record(&h.nhs_number)? {
                out.push((h.nhs_number, d));
            }
        }
        Ok(out)
    }

    /// Whether every document the device holds of the record has arrived
    /// (has bytes): false for a record only registered so far.
    pub fn has_arrived(&self, nhs: &NhsNumber) -> Result<bool, EngineError> {
        let docs = self.store.documents_of_record(nhs);
        let docs = match docs {
            Ok(docs) => docs,
            Err(crate::store::StoreError::RecordNotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        for d in &docs {
            if self
                .document_heads(nhs, &d.doc_id)?
                .is_none_or(|h| h.is_empty())
            {
                return Ok(false);
            }
        }
        Ok(!docs.is_empty())
    }

    /// Records changed locally since the last call (for the driver to hand
    /// to sync).
    pub(crate) fn take_local_changes(&self) -> BTreeSet<NhsNumber> {
        self.local_changes
            .dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// Persists that the record is about to change locally (called before
    /// the write, so a crash in between errs on the side of keeping it).
    pub(crate) fn mark_unsent_durably(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        if self.is_unsent(nhs) {
            return Ok(());
        }
        update_unsent(&self.store, nhs, true)?;
        if let Ok(mut u) = self.local_changes.unsent.lock() {
            u.insert(*nhs);
        }
        Ok(())
    }

    /// The server has every change this device made to the record (the
    /// sync driver calls this; public for apps with their own transport).
    pub fn confirm_sent(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        self.clear_unsent(nhs)?;
        self.note_confirmed(nhs);
        Ok(())
    }

    /// The record no longer counts as unsent (confirmed, or forgotten).
    pub(super) fn clear_unsent(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        if self.is_unsent(nhs) {
            update_unsent(&self.store, nhs, false)?;
            if let Ok(mut u) = self.local_changes.unsent.lock() {
                u.remove(nhs);
            }
        }
        Ok(())
    }

    pub(super) fn is_unsent(&self, nhs: &NhsNumber) -> bool {
        self.local_changes
            .unsent
            .lock()
            .map(|u| u.contains(nhs))
            .unwrap_or(true)
    }

    /// Runs `f` on the patient's replica: the cached one while a session
    /// is unlocked, else one opened for the call and dropped (a locked
    /// engine keeps no decrypted record). `None` if the device does not hold
    /// the record.
    pub(super) fn with_sync_replica<T>(
        &self,
        state: &mut State,
        nhs: &NhsNumber,
        f: impl FnOnce(&mut crate::PatientReplica) -> Result<T, crate::StoreError>,
    ) -> Result<Option<T>, EngineError> {
        if state.active.is_some() {
            return match self.replica(state, nhs) {
                Ok(r) => Ok(Some(f(r)?)),
                Err(EngineError::NotHeld) => Ok(None),
                Err(e) => Err(e),
            };
        }
        match self.store.open_record(nhs) {
            Ok(mut r) => Ok(Some(f(&mut r)?)),
            Err(crate::store::StoreError::RecordNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The document as the engine holds it (saved bytes), for sync to merge
    /// in a change made since sync loaded it. Not a view: nothing is shown.
    pub(crate) fn document_bytes(
        &self,
        nhs: &NhsNumber,
        doc_id: &str,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let mut state = self.state()?;
        Ok(self
            .with_sync_replica(&mut state, nhs, |r| Ok(r.save_of(doc_id)))?
            .flatten())
    }

    /// The heads of one document as the engine holds it (`None` if it
    /// holds no bytes of it yet).
    pub(crate) fn document_heads(
        &self,
        nhs: &NhsNumber,
        doc_id: &str,
    ) -> Result<Option<Vec<automerge::ChangeHash>>, EngineError> {
        let mut state = self.state()?;
        Ok(self
            .with_sync_replica(&mut state, nhs, |r| Ok(r.heads_of(doc_id)))?
            .flatten())
    }

    /// Applies the server's holdings list: registers listed patients and
    /// documents (before any of their bytes arrive, so sync seals them with
    /// the record's key), forgets compartments and patients no longer
    /// listed. A record this device originated is never forgotten here.
    pub fn apply_holdings(&self, list: &HoldingsList) -> Result<HoldingsOutcome, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        let mut outcome = HoldingsOutcome::default();
        // So a view of a patient who withdrew their record says so.
        self.store.set_withdrawn(&list.withdrawn)?;
        for patient in &list.patients {
            if self.receive_listed(&mut state, patient, now)? {
                outcome.received += 1;
            }
            if retention::drops_unlisted_compartments(self.is_unsent(&patient.nhs_number)) {
                outcome.compartments_forgotten +=
                    self.drop_unlisted_documents(&mut state, patient, now)?;
            }
        }
        for holding in self.store.holdings()? {
            let nhs = holding.nhs_number;
            let unsent = self.is_unsent(&nhs);
            match retention::after_holdings_list(&holding, list, unsent) {
                AfterList::Keep => {}
                AfterList::KeepUnsent => outcome.kept_unsent += 1,
                AfterList::Forget(reason) => {
                    if self.forget_locked(&mut state, &nhs, reason.code(), now)? {
                        outcome.forgotten += 1;
                    }
                    if unsent {
                        self.clear_unsent(&nhs)?;
                    }
                }
            }
        }
        if outcome.received > 0 {
            self.status_changed();
        }
        Ok(outcome)
    }

    /// Registers one listed patient's documents; audited when anything is
    /// new. Returns whether the patient is new to the device.
    fn receive_listed(
        &self,
        state: &mut State,
        patient: &HeldPatient,
        now: i64,
    ) -> Result<bool, EngineError> {
        let nhs = patient.nhs_number;
        let draft = AuditDraft {
            compartments: patient.documents.iter().map(|d| d.compartment).collect(),
            ..self.device_draft(
                "receive",
                Some(nhs),
                Some(patient.reason.label().to_owned()),
            )
        };
        let device = self.config.device_id.clone();
        let hw = state.clock_high_water.max(now);
        let arrival = self.store.hold_arriving_with(
            &nhs,
            &patient.documents,
            patient.reason.clone(),
            |tx, arrival| {
                if arrival.new_record || arrival.new_documents > 0 {
                    self.store.append_audit_tx(tx, draft, &device, now)?;
                    super::session::set_clock_high_water(&self.store, tx, hw)?;
                }
                Ok(())
            },
        )?;
        if arrival.new_record || arrival.new_documents > 0 {
            state.clock_high_water = hw;
            state.records.remove(&nhs);
        }
        Ok(arrival.new_record)
    }

    /// Forgets the patient's compartments the list no longer names.
    fn drop_unlisted_documents(
        &self,
        state: &mut State,
        patient: &HeldPatient,
        now: i64,
    ) -> Result<usize, EngineError> {
        let nhs = patient.nhs_number;
        let mut dropped = 0;
        for held in self.store.documents_of_record(&nhs)? {
            if patient.documents.iter().any(|d| d.doc_id == held.doc_id) {
                continue;
            }
            let draft = AuditDraft {
                compartments: vec![held.compartment],
                ..self.device_draft(
                    "forget",
                    Some(nhs),
                    Some(ForgetReason::NoLongerShared.code().into()),
                )
            };
            state.records.remove(&nhs);
            self.commit_audited(state, draft, now, |tx| {
                self.store
                    .forget_document_tx(tx, &nhs, &held.doc_id)
                    .map(|_| ())
            })?;
            dropped += 1;
        }
        if dropped > 0 {
            self.store.checkpoint().map_err(EngineError::Store)?;
        }
        Ok(dropped)
    }
}

impl Engine {
    /// Merges what sync received for one of the patient's registered
    /// documents into the engine's copy (and so onto disk under the
    /// engine's own write path). A document the device no longer holds is
    /// ignored: the record may have been forgotten meanwhile.
    pub(crate) fn merge_synced(
        &self,
        nhs: &NhsNumber,
        export: &crate::CompartmentExport,
    ) -> Result<bool, EngineError> {
        self.merge_fetched(nhs, export, None)
    }

    /// [`Engine::merge_synced`] with the export already read into a
    /// document (outside the engine's lock, as the fetch does).
    pub(crate) fn merge_fetched(
        &self,
        nhs: &NhsNumber,
        export: &crate::CompartmentExport,
        read: Option<crate::record::CompartmentDoc>,
    ) -> Result<bool, EngineError> {
        // Under the engine lock, which `apply_holdings` holds while it drops
        // documents: a compartment withdrawn meanwhile is not taken back on.
        let mut state = self.state()?;
        let registered = match self.store.documents_of_record(nhs) {
            Ok(docs) => docs
                .iter()
                .any(|d| d.doc_id == export.doc_id && d.compartment == export.compartment),
            Err(crate::store::StoreError::RecordNotFound) => false,
            Err(e) => return Err(e.into()),
        };
        if !registered {
            return Ok(false);
        }
        let merged = self
            .with_sync_replica(&mut state, nhs, |r| r.merge_read(export, read))?
            .is_some();
        if merged {
            self.record_changed(nhs);
        }
        Ok(merged)
    }

    /// Like [`Engine::confirm_sent`], unless the record changed again since
    /// the driver took its changes.
    pub(crate) fn confirm_sent_unless_dirty(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        let dirty = self
            .local_changes
            .dirty
            .lock()
            .map(|d| d.contains(nhs))
            .unwrap_or(true);
        if dirty {
            return Ok(());
        }
        self.confirm_sent(nhs)
    }

    /// Hands a record back to the next pass (its push failed).
    pub(crate) fn mark_dirty_again(&self, nhs: &NhsNumber) {
        if let Ok(mut d) = self.local_changes.dirty.lock() {
            d.insert(*nhs);
        }
    }

    pub(crate) fn local_change_signal(&self) -> &tokio::sync::Notify {
        &self.local_changes.notify
    }
}
