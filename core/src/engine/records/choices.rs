//! The patient's choices and permission to view: recording permission,
//! sharing choices, hiding and unhiding a record.

use crate::NhsNumber;
use crate::access::{Action, PatientChoices, Principal, choices_from, sharing_entry};
use crate::engine::{Engine, EngineError};
use crate::record::{Compartment, EntryContent, PermissionScope, SharingChoice};

impl Engine {
    /// Records the patient's answer when asked for permission to view.
    pub fn record_permission(
        &self,
        nhs: &NhsNumber,
        future_use: bool,
        granted: bool,
    ) -> Result<(), EngineError> {
        let mut state = self.state()?;
        let (grant, spec, now) =
            self.authorise_write(&mut state, nhs, Action::RecordPermissionToView, None)?;
        let (user_id, _, organisation) = grant.actor();
        let scope = if future_use {
            PermissionScope::Organisation
        } else {
            PermissionScope::Encounter {
                encounter_id: grant.grant_id.clone(),
            }
        };
        let content = EntryContent::PermissionToView {
            organisation,
            user_id,
            scope,
            granted,
        };
        let provenance = self.provenance(&grant, now);
        let replica = self.replica(&mut state, nhs)?;
        // A record not yet moved to layout 2 (no permissions compartment
        // has arrived) keeps the answer in governance, as layout 1 did.
        let result = if replica.compartments().contains(&Compartment::Permissions) {
            replica.add_entry(content, false, provenance, Some(&spec))
        } else {
            replica.add_legacy_permission(content, provenance, Some(&spec))
        };
        self.written(&mut state, nhs, result, now).map(|_| ())
    }

    /// The patient (or the GP for them) changes what is shared. Opting out
    /// hides an existing record; opting back in makes it visible again.
    pub fn set_patient_choices(
        &self,
        nhs: &NhsNumber,
        sharing: SharingChoice,
        include_sensitive: bool,
    ) -> Result<(), EngineError> {
        let by_patient = self.acting_principal()? == Some(Principal::Patient);
        self.write_choices(nhs, Action::ChangePatientChoice, |current| PatientChoices {
            sharing,
            include_sensitive,
            // Opting out hides; only the patient's own choice to share again
            // (or a privacy officer's unhide) makes a hidden record visible.
            hidden: sharing == SharingChoice::OptOut || (current.hidden && !by_patient),
        })
    }

    fn acting_principal(&self) -> Result<Option<Principal>, EngineError> {
        let mut state = self.state()?;
        Ok(self.active(&mut state).ok().map(|g| g.principal()))
    }

    /// Hides the record from staff (after an opt-out).
    pub fn hide(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        self.write_choices(nhs, Action::Hide, |c| PatientChoices { hidden: true, ..c })
    }

    /// A privacy officer makes a hidden record available again, citing the
    /// written request and the investigation; it is then shared by the
    /// normal rules (asked each time).
    pub fn unhide(
        &self,
        nhs: &NhsNumber,
        written_request_ref: &str,
        investigation_ref: &str,
    ) -> Result<(), EngineError> {
        let action = Action::Unhide {
            written_request_ref: written_request_ref.to_owned(),
            investigation_ref: investigation_ref.to_owned(),
        };
        self.write_choices(nhs, action, |c| PatientChoices {
            hidden: false,
            sharing: match c.sharing {
                SharingChoice::OptOut => SharingChoice::CoreOnly,
                other => other,
            },
            ..c
        })
    }

    fn write_choices(
        &self,
        nhs: &NhsNumber,
        action: Action,
        change: impl FnOnce(PatientChoices) -> PatientChoices,
    ) -> Result<(), EngineError> {
        let mut state = self.state()?;
        let (grant, spec, now) = self.authorise_write(&mut state, nhs, action, None)?;
        let provenance = self.provenance(&grant, now);
        let replica = self.replica(&mut state, nhs)?;
        let governance = replica.view_compartment(Compartment::Governance)?;
        let next = change(choices_from(Some(&governance)));
        let content = EntryContent::Sharing {
            choice: next.sharing,
            include_sensitive: next.include_sensitive,
            hidden: next.hidden,
        };
        let result = match sharing_entry(&governance) {
            Some((entry, heads)) => replica.supersede(
                Compartment::Governance,
                entry,
                &heads,
                content,
                provenance,
                Some(&spec),
            ),
            None => replica.add_entry(content, false, provenance, Some(&spec)),
        };
        self.written(&mut state, nhs, result, now).map(|_| ())
    }
}
