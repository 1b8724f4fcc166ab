//! What an entry says: one variant per kind of SCR item, with coded values
//! carrying their code system so that FHIR export needs no guessing.

use serde::{Deserialize, Serialize};

use super::Compartment;

/// A coded concept: code system URI, code and human-readable display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Code {
    pub system: String,
    pub code: String,
    pub display: String,
}

impl Code {
    pub const SNOMED_CT: &'static str = "http://snomed.info/sct";
    pub const DM_D: &'static str = "https://dmd.nhs.uk";

    pub fn snomed(code: &str, display: &str) -> Self {
        Self::new(Self::SNOMED_CT, code, display)
    }

    pub fn dmd(code: &str, display: &str) -> Self {
        Self::new(Self::DM_D, code, display)
    }

    pub fn new(system: &str, code: &str, display: &str) -> Self {
        Self {
            system: system.to_owned(),
            code: code.to_owned(),
            display: display.to_owned(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum Severity {
    Mild,
    Moderate,
    Severe,
}

/// Repeat medication stays current across issues; acute is a single course.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum MedicationCourse {
    Repeat,
    Acute,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum CarePlanKind {
    Anticipatory,
    EndOfLife,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum PreferenceKind {
    ContactMethod,
    AccessNeeds,
    CommunicationNeeds,
}

/// What the patient (or their GP) has chosen to share. Read codes 9Ndm/9Ndn/9Ndo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum SharingChoice {
    CoreOnly,
    CoreAndAdditional,
    OptOut,
}

/// The body of one entry version. Clinical dates are ISO-8601 strings and may
/// be partial (`2019`, `2019-04`), as GP records often are. `Debug` shows the
/// kind only: content is patient data and must not reach logs or panics.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum EntryContent {
    Demographics {
        name: String,
        date_of_birth: String,
        address: String,
        nhs_number: crate::NhsNumber,
    },
    Allergy {
        substance: Code,
        reaction: Option<String>,
        severity: Option<Severity>,
    },
    AdverseReaction {
        substance: Code,
        reaction: String,
        severity: Option<Severity>,
    },
    Medication {
        medicine: Code,
        dose: String,
        route: String,
        course: MedicationCourse,
        last_issued: Option<String>,
    },
    Problem {
        condition: Code,
        onset: Option<String>,
        active: bool,
    },
    Procedure {
        procedure: Code,
        performed: Option<String>,
    },
    Immunisation {
        vaccine: Code,
        given: String,
    },
    CarePlan {
        plan: CarePlanKind,
        note: String,
    },
    EncounterSummary {
        setting: String,
        occurred_at: String,
        note: String,
    },
    TestResult {
        test: Code,
        value: String,
        unit: Option<String>,
        taken_at: String,
    },
    CareTeamMember {
        name: String,
        role: String,
        organisation: String,
    },
    Preference {
        preference: PreferenceKind,
        detail: String,
    },
    Sharing {
        choice: SharingChoice,
        include_sensitive: bool,
        /// Blank to staff until a privacy officer unhides it or the
        /// patient opts back in.
        #[serde(default)]
        hidden: bool,
    },
    /// The patient's answer when asked for permission to view.
    PermissionToView {
        organisation: String,
        user_id: String,
        scope: PermissionScope,
        granted: bool,
    },
}

/// How long a permission to view lasts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum PermissionScope {
    /// This encounter only (the login session that asked).
    Encounter { encounter_id: String },
    /// Recorded for future use at this organisation.
    Organisation,
}

impl std::fmt::Debug for EntryContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryContent::{}(<redacted>)", self.kind_name())
    }
}

impl EntryContent {
    /// The compartment this kind lives in when it is not sensitive.
    pub fn home_compartment(&self) -> Compartment {
        match self {
            Self::Demographics { .. }
            | Self::Allergy { .. }
            | Self::AdverseReaction { .. }
            | Self::Medication { .. } => Compartment::Core,
            Self::Problem { .. }
            | Self::Procedure { .. }
            | Self::Immunisation { .. }
            | Self::CarePlan { .. } => Compartment::Additional,
            Self::EncounterSummary { .. }
            | Self::TestResult { .. }
            | Self::CareTeamMember { .. } => Compartment::CareEvents,
            Self::Preference { .. } => Compartment::PatientEntered,
            Self::Sharing { .. } => Compartment::Governance,
            Self::PermissionToView { .. } => Compartment::Permissions,
        }
    }

    /// Kinds a GP may flag as sensitive (RCGP dataset): clinical findings only.
    pub fn may_be_sensitive(&self) -> bool {
        matches!(
            self.home_compartment(),
            Compartment::Core | Compartment::Additional | Compartment::CareEvents
        ) && !matches!(self, Self::Demographics { .. })
    }

    /// A short name for the kind, for views and audit (never the content).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Demographics { .. } => "demographics",
            Self::Allergy { .. } => "allergy",
            Self::AdverseReaction { .. } => "adverse-reaction",
            Self::Medication { .. } => "medication",
            Self::Problem { .. } => "problem",
            Self::Procedure { .. } => "procedure",
            Self::Immunisation { .. } => "immunisation",
            Self::CarePlan { .. } => "care-plan",
            Self::EncounterSummary { .. } => "encounter-summary",
            Self::TestResult { .. } => "test-result",
            Self::CareTeamMember { .. } => "care-team-member",
            Self::Preference { .. } => "preference",
            Self::Sharing { .. } => "sharing",
            Self::PermissionToView { .. } => "permission-to-view",
        }
    }
}
