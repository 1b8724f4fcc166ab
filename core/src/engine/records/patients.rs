//! Records coming and going: a GP system originating one, and the records
//! exchanged with sync (exported, merged, received).

use super::decision::relationship_of;
use crate::NhsNumber;
use crate::access::{Action, Decision, PatientChoices, Request, ViewBasis};
use crate::audit::AuditDraft;
use crate::engine::{Engine, EngineError, session};
use crate::record::Compartment;
use crate::replica::CompartmentExport;
use crate::store::{HoldReason, StoreError};

impl Engine {
    /// A GP system originates a patient's record (every compartment, empty),
    /// holding it as its origin. Creating a record is writing its core, so
    /// it takes the same decision.
    pub fn create_patient(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        let mut state = self.state()?;
        let grant = self.active(&mut state)?;
        let now = self.now_checked(&state)?;
        let req = Request {
            principal: grant.principal(),
            action: Action::AddEntry(Compartment::Core),
            relationship: relationship_of(&grant, nhs, None),
            basis: ViewBasis::NotAsked,
            choices: PatientChoices::default(),
        };
        let decision = Self::decide_for(&grant, nhs, &req);
        let mut draft = Self::draft(&grant, nhs, &req, &decision);
        draft.action = "create-record".into();
        if let Decision::Deny(reason) = decision {
            self.audit(&mut state, draft, now)?;
            return Err(EngineError::Denied(reason));
        }
        let device = self.config.device_id.clone();
        let hw = state.clock_high_water.max(now);
        // The record and its audit event commit together, or neither does.
        let created = self.store.create_record_with(nhs, &Compartment::ALL, |tx| {
            self.store.append_audit_tx(tx, draft, &device, now)?;
            session::set_clock_high_water(&self.store, tx, hw)
        });
        match created {
            Ok(_) => {
                state.clock_high_water = hw;
                Ok(())
            }
            Err(StoreError::RecordExists) => {
                Err(EngineError::InvalidInput("the record already exists"))
            }
            Err(e) => Err(EngineError::AuditFailed(e)),
        }
    }

    /// Every compartment this device holds for the patient, for the sync
    /// layer to send to the server (the samod sync layer replaces this
    /// exchange; app bindings do not expose it). Audited as a device event.
    pub fn export_for_sync(&self, nhs: &NhsNumber) -> Result<Vec<CompartmentExport>, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        let exports = self.replica(&mut state, nhs)?.export();
        let draft = AuditDraft {
            compartments: exports.iter().map(|e| e.compartment).collect(),
            ..self.device_draft("sync-export", Some(*nhs), None)
        };
        self.audit(&mut state, draft, now)?;
        Ok(exports)
    }

    /// Merges what sync received into the compartments this device holds;
    /// compartments it does not hold are ignored.
    pub fn merge_from_sync(
        &self,
        nhs: &NhsNumber,
        exports: &[CompartmentExport],
    ) -> Result<(), EngineError> {
        let mut state = self.state()?;
        let replica = self.replica(&mut state, nhs)?;
        let held = replica.compartments();
        for e in exports.iter().filter(|e| held.contains(&e.compartment)) {
            replica.merge(e)?;
        }
        Ok(())
    }

    /// Takes on a patient's record that arrived for this device (a caseload
    /// or incident assignment), recording why it is held. Needs no session:
    /// sync runs in the background.
    pub fn receive_patient(
        &self,
        nhs: &NhsNumber,
        exports: &[CompartmentExport],
        reason: HoldReason,
    ) -> Result<(), EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        let detail = reason.label();
        let compartments: Vec<Compartment> = exports.iter().map(|e| e.compartment).collect();
        let draft = AuditDraft {
            compartments,
            ..self.device_draft("receive", Some(*nhs), Some(detail.to_owned()))
        };
        let device = self.config.device_id.clone();
        let hw = state.clock_high_water.max(now);
        // Record, holding and audit event in one transaction.
        self.store.import_record_with(nhs, exports, reason, |tx| {
            self.store.append_audit_tx(tx, draft, &device, now)?;
            session::set_clock_high_water(&self.store, tx, hw)
        })?;
        state.clock_high_water = hw;
        state.records.remove(nhs);
        Ok(())
    }
}
