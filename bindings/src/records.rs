//! Reading and writing records: each call goes through the engine's access
//! decision and audit, exactly as in Rust.

use scr_core::access::AccessRequest;
use scr_core::access::AlertReason;
use scr_core::protocol::AccessLogEntry;
use scr_core::record::{
    Compartment, EntryContent, EntryId, EntryVersion, SharingChoice, VersionId,
};
use scr_core::replica::RecordView;

use crate::{ScrDevice, ScrError};

/// What a permitted view released, and what it held back.
#[derive(Clone, Debug, uniffi::Record)]
pub struct RecordRelease {
    /// Each compartment's entries; an entry in conflict carries every
    /// candidate version (nothing is dropped).
    pub view: RecordView,
    /// Compartments on this device the decision did not release (the
    /// patient's choices or the user's role hold them back).
    pub withheld: Vec<Compartment>,
    /// The audit event recorded before the view was released.
    pub audit_event_id: String,
}

#[uniffi::export]
impl ScrDevice {
    /// Opens the patient's record on the basis in `access`; audited first.
    pub fn view(
        &self,
        nhs_number: String,
        access: AccessRequest,
    ) -> Result<RecordRelease, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        let released = self.engine()?.view(&nhs, access)?;
        Ok(RecordRelease {
            view: released.view,
            withheld: released.withheld,
            audit_event_id: released.audit.id,
        })
    }

    /// The versions this device wrote that the server refused, kept aside
    /// (the app shows them as "refused by the server"; they are never sent
    /// again). Audited first.
    pub fn quarantined(
        &self,
        nhs_number: String,
    ) -> Result<Vec<scr_core::engine::QuarantinedVersion>, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self.engine()?.quarantined(&nhs)?)
    }

    /// Adds an entry (a visit summary, a preference, ...).
    pub fn add_entry(
        &self,
        nhs_number: String,
        content: EntryContent,
        sensitive: bool,
        self_claim: Option<AlertReason>,
    ) -> Result<EntryVersion, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self
            .engine()?
            .add_entry(&nhs, content, sensitive, self_claim)?)
    }

    /// A new version of an entry, superseding the versions the user saw
    /// (several, to resolve a conflict).
    pub fn supersede(
        &self,
        nhs_number: String,
        entry: EntryId,
        replaces: Vec<VersionId>,
        content: EntryContent,
    ) -> Result<EntryVersion, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self.engine()?.supersede(&nhs, entry, &replaces, content)?)
    }

    /// Marks an entry as entered in error: kept, with the reason.
    pub fn mark_entered_in_error(
        &self,
        nhs_number: String,
        entry: EntryId,
        replaces: Vec<VersionId>,
        reason: String,
    ) -> Result<EntryVersion, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self
            .engine()?
            .mark_entered_in_error(&nhs, entry, &replaces, &reason)?)
    }

    /// Records the patient's answer when asked for permission to view, for
    /// this encounter or for future use at this organisation.
    pub fn record_permission(
        &self,
        nhs_number: String,
        future_use: bool,
        granted: bool,
    ) -> Result<(), ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self
            .engine()?
            .record_permission(&nhs, future_use, granted)?)
    }

    /// The patient's (or GP's) choice of what is shared.
    pub fn set_patient_choices(
        &self,
        nhs_number: String,
        sharing: SharingChoice,
        include_sensitive: bool,
    ) -> Result<(), ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self
            .engine()?
            .set_patient_choices(&nhs, sharing, include_sensitive)?)
    }

    /// Hides the record (after an opt-out).
    pub fn hide(&self, nhs_number: String) -> Result<(), ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self.engine()?.hide(&nhs)?)
    }

    /// This device's audit events about the patient, as log lines (the
    /// patient on their phone, or a privacy officer).
    pub fn audit_trail(&self, nhs_number: String) -> Result<Vec<AccessLogEntry>, ScrError> {
        let nhs = crate::error::nhs_number(&nhs_number)?;
        Ok(self
            .engine()?
            .audit_trail(&nhs)?
            .iter()
            .map(|e| AccessLogEntry::from_event(e, None))
            .collect())
    }
}
