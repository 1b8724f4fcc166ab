//! The clinical record model: compartments, immutable entry versions with
//! provenance, and the pure rules that turn a set of versions into a view.
//!
//! Nothing here does I/O. `doc` maps versions onto Automerge documents; the
//! store persists those documents.

mod content;
mod doc;
mod ids;
pub mod rebuild;
pub mod repair;
pub mod untrusted;
mod view;

use serde::{Deserialize, Serialize};

pub use content::{
    CarePlanKind, Code, EntryContent, MedicationCourse, PermissionScope, PreferenceKind, Severity,
    SharingChoice,
};
pub use doc::{CompartmentDoc, DOC_FORMAT, DocError};
pub use ids::{EntryId, VersionId};
pub use view::{CompartmentView, EntryState, EntryView, materialise};

/// One Automerge document per compartment, so a device can hold exactly what
/// its user may see, and documents stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum Compartment {
    /// Medication, allergies, adverse reactions, demographics.
    Core,
    /// Problems, procedures, immunisations, anticipatory and end-of-life care.
    Additional,
    /// Encounter summaries, results, care team: written by any treating service.
    CareEvents,
    /// Preferences the patient adds themselves.
    PatientEntered,
    /// The patient's choices: what is shared, sensitive items, hiding.
    /// Written by the patient, their GP practice on their instruction, and
    /// a privacy officer's unhide; never by other staff.
    Governance,
    /// Items in the RCGP sensitive categories, held apart.
    Sensitive,
    /// The patient's answers when staff ask permission to view, recorded
    /// by the staff who asked (record layout 2; layout 1 kept them in
    /// governance, ADR 0011).
    Permissions,
}

impl Compartment {
    pub const ALL: [Compartment; 7] = [
        Compartment::Core,
        Compartment::Additional,
        Compartment::CareEvents,
        Compartment::PatientEntered,
        Compartment::Governance,
        Compartment::Sensitive,
        Compartment::Permissions,
    ];

    /// What a record held in layout 1, before permissions had their own
    /// compartment: what an older app reads.
    pub const LAYOUT_1: [Compartment; 6] = [
        Compartment::Core,
        Compartment::Additional,
        Compartment::CareEvents,
        Compartment::PatientEntered,
        Compartment::Governance,
        Compartment::Sensitive,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Additional => "additional",
            Self::CareEvents => "care-events",
            Self::PatientEntered => "patient-entered",
            Self::Governance => "governance",
            Self::Sensitive => "sensitive",
            Self::Permissions => "permissions",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Who wrote a version, acting in which role, for which organisation, on
/// which device, and when (milliseconds since the Unix epoch, device clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Provenance {
    /// SDS user id, or the patient's own principal id on their phone.
    pub author_id: String,
    /// SDS job role code the author acted in.
    pub role: String,
    /// ODS organisation code.
    pub organisation: String,
    pub device: String,
    pub recorded_at_ms: i64,
}

/// Whether a version is the record's statement or a retraction of it.
/// `Debug` leaves out the reason, which is free text about the patient.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum VersionStatus {
    Current,
    /// The entry was recorded in error. Kept, with the reason, never deleted.
    EnteredInError {
        reason: String,
    },
}

impl std::fmt::Debug for VersionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionStatus::Current => f.write_str("Current"),
            VersionStatus::EnteredInError { .. } => {
                f.write_str("EnteredInError(<reason redacted>)")
            }
        }
    }
}

/// The on-document format of a version. Bump when the JSON shape changes.
pub const VERSION_FORMAT: u8 = 1;

/// One immutable version of an entry. Never edited after it is written: a
/// correction is a new version that names this one in `replaces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct EntryVersion {
    #[serde(rename = "v")]
    pub format: u8,
    pub version_id: VersionId,
    pub entry_id: EntryId,
    /// The versions this one supersedes; empty for an entry's first version,
    /// several when it resolves a conflict.
    pub replaces: Vec<VersionId>,
    #[serde(flatten)]
    pub status: VersionStatus,
    pub content: EntryContent,
    pub provenance: Provenance,
}

impl EntryVersion {
    /// A new version with a fresh id, in the current format.
    pub fn new(
        entry_id: EntryId,
        replaces: Vec<VersionId>,
        status: VersionStatus,
        content: EntryContent,
        provenance: Provenance,
    ) -> Self {
        Self {
            format: VERSION_FORMAT,
            version_id: VersionId::new(),
            entry_id,
            replaces,
            status,
            content,
            provenance,
        }
    }

    pub fn is_entered_in_error(&self) -> bool {
        matches!(self.status, VersionStatus::EnteredInError { .. })
    }
}
