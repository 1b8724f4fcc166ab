//! The values a replica hands out: record views, compartment exports, and
//! the audit event to commit with a write.

use crate::audit::AuditDraft;
use crate::record::{Compartment, CompartmentView, EntryId, EntryView};

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
