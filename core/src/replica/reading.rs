//! [`PatientReplica`], the record held on this device, and reading it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::held::HeldDoc;
use super::values::RecordView;
use crate::crypto::SecretKey;
use crate::record::{Compartment, CompartmentView, EntryId};
use crate::store::{Store, StoreError};

pub struct PatientReplica {
    pub(super) store: Store,
    pub(super) record_ref: crate::crypto::Ref,
    pub(super) key: Arc<SecretKey>,
    pub(super) docs: BTreeMap<Compartment, HeldDoc>,
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

    /// The compartment an entry's versions live in, if held.
    pub fn compartment_of(&self, entry: EntryId) -> Option<Compartment> {
        self.docs
            .iter()
            .find(|(_, h)| h.doc.view().entry(entry).is_some())
            .map(|(c, _)| *c)
    }

    pub(super) fn held(&self, c: Compartment) -> Result<&HeldDoc, StoreError> {
        self.docs
            .get(&c)
            .ok_or(StoreError::CompartmentNotHeld(c.as_str()))
    }

    pub(super) fn held_mut(&mut self, c: Compartment) -> Result<&mut HeldDoc, StoreError> {
        self.docs
            .get_mut(&c)
            .ok_or(StoreError::CompartmentNotHeld(c.as_str()))
    }
}
