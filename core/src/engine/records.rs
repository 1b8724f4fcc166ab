//! Record operations: each builds an access request, asks the decision,
//! writes the audit event, and only then releases or changes data. A
//! decision that cannot be audited releases nothing.

use super::{Engine, EngineError, State};
use crate::NhsNumber;
use crate::access::{
    AccessRequest, Action, AlertReason, Decision, PatientChoices, Principal, Relationship, Request,
    RequestedBasis, ViewBasis, choices_from, decide, permission_from, sharing_entry,
};
use crate::audit::{AuditDraft, AuditEvent, Outcome};
use crate::grant::{RelationshipKind, RoleProfileGrant};
use crate::record::{
    Compartment, EntryContent, EntryId, PermissionScope, Provenance, SharingChoice, VersionId,
};
use crate::replica::{AuditSpec, CompartmentExport, PatientReplica, RecordView};
use crate::store::{HoldReason, StoreError};

/// What a permitted view released, and what it held back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleasedView {
    pub view: RecordView,
    /// Compartments this device holds that the decision did not release.
    pub withheld: Vec<Compartment>,
    /// The audit event committed before the view was released.
    pub audit: AuditEvent,
}

/// The relationship the grant gives with this patient, or the one claimed now.
fn relationship_of(
    grant: &RoleProfileGrant,
    nhs: &NhsNumber,
    self_claim: Option<AlertReason>,
) -> Relationship {
    match (grant.relationship_with(nhs), self_claim) {
        (Some(r), _) if r.kind == RelationshipKind::Registration => Relationship::Registered,
        (Some(_), _) => Relationship::FromGrant,
        (None, Some(reason)) => Relationship::SelfClaimed(reason),
        (None, None) => Relationship::None,
    }
}

impl Engine {
    pub(super) fn replica<'s>(
        &self,
        state: &'s mut State,
        nhs: &NhsNumber,
    ) -> Result<&'s mut PatientReplica, EngineError> {
        if !state.records.contains_key(nhs) {
            let replica = self.store.open_record(nhs).map_err(|e| match e {
                StoreError::RecordNotFound => EngineError::NotHeld,
                other => EngineError::Store(other),
            })?;
            state.records.insert(*nhs, replica);
        }
        state.records.get_mut(nhs).ok_or(EngineError::NotHeld)
    }

    /// The request for `action` on `nhs` by the acting grant.
    fn request(
        grant: &RoleProfileGrant,
        replica: &PatientReplica,
        nhs: &NhsNumber,
        action: Action,
        access: Option<AccessRequest>,
    ) -> Request {
        let governance = replica.view_compartment(Compartment::Governance).ok();
        let relationship = relationship_of(grant, nhs, access.and_then(|a| a.self_claim));
        let (_, _, organisation) = grant.actor();
        let basis = match access.map(|a| a.basis) {
            Some(RequestedBasis::Emergency) => ViewBasis::Emergency,
            Some(RequestedBasis::LegalOverride(r)) => ViewBasis::LegalOverride(r),
            Some(RequestedBasis::Permission) | None => {
                permission_from(governance.as_ref(), &organisation, &grant.grant_id)
            }
        };
        let principal = grant.principal();
        // Without the governance compartment the device cannot know whether
        // the record is hidden or opted out: staff see nothing (fail closed).
        let choices = match (&principal, &governance) {
            (Principal::Staff(_), None) => PatientChoices {
                hidden: true,
                ..PatientChoices::default()
            },
            _ => choices_from(governance.as_ref()),
        };
        Request {
            principal,
            action,
            relationship,
            basis,
            choices,
        }
    }

    /// The decision, with the patient principal bound to their own record.
    fn decide_for(grant: &RoleProfileGrant, nhs: &NhsNumber, req: &Request) -> Decision {
        if req.principal == Principal::Patient && !grant.is_patient(nhs) {
            return Decision::Deny(crate::access::DenyReason::NotAllowed);
        }
        decide(req)
    }

    fn draft(
        grant: &RoleProfileGrant,
        nhs: &NhsNumber,
        req: &Request,
        decision: &Decision,
    ) -> AuditDraft {
        let (user, role, organisation) = grant.actor();
        AuditDraft {
            user,
            role,
            organisation,
            patient: Some(*nhs),
            action: req.action.name().into(),
            compartments: decision.compartments().to_vec(),
            entries: Vec::new(),
            outcome: match decision {
                Decision::Permit { .. } => Outcome::Permit,
                Decision::Deny(reason) => Outcome::Deny { reason: *reason },
            },
            basis: req.basis_label(),
            alerts: decision.alerts().to_vec(),
            detail: match &req.action {
                Action::Unhide {
                    written_request_ref,
                    investigation_ref,
                } => Some(format!(
                    "request {written_request_ref}; investigation {investigation_ref}"
                )),
                _ => None,
            },
        }
    }

    fn provenance(&self, grant: &RoleProfileGrant, now: i64) -> Provenance {
        let (author_id, role, organisation) = grant.actor();
        Provenance {
            author_id,
            role,
            organisation,
            device: self.config.device_id.clone(),
            recorded_at_ms: now,
        }
    }

    /// Opens the patient's record for the acting user. The audit event
    /// commits before the view is returned; a denial is audited too.
    pub fn view(
        &self,
        nhs: &NhsNumber,
        access: AccessRequest,
    ) -> Result<ReleasedView, EngineError> {
        self.release(nhs, Action::View, access)
    }

    /// As [`Engine::view`], for an export (audited as one).
    pub fn export(
        &self,
        nhs: &NhsNumber,
        access: AccessRequest,
    ) -> Result<ReleasedView, EngineError> {
        self.release(nhs, Action::Export, access)
    }

    fn release(
        &self,
        nhs: &NhsNumber,
        action: Action,
        access: AccessRequest,
    ) -> Result<ReleasedView, EngineError> {
        let mut state = self.state()?;
        let grant = self.active(&mut state)?;
        let now = self.now_checked(&state)?;
        let replica = self.replica(&mut state, nhs)?;
        let req = Self::request(&grant, replica, nhs, action, Some(access));
        let decision = Self::decide_for(&grant, nhs, &req);
        let draft = Self::draft(&grant, nhs, &req, &decision);
        match &decision {
            Decision::Permit { compartments, .. } => {
                let held = replica.compartments();
                let view = RecordView {
                    compartments: held
                        .iter()
                        .filter(|c| compartments.contains(c))
                        .filter_map(|c| replica.view_compartment(*c).ok())
                        .collect(),
                };
                let withheld = held
                    .into_iter()
                    .filter(|c| !compartments.contains(c))
                    .collect();
                // Fail closed: the view leaves only once its audit is durable.
                let audit = self.audit(&mut state, draft, now)?;
                Ok(ReleasedView {
                    view,
                    withheld,
                    audit,
                })
            }
            Decision::Deny(reason) => {
                self.audit(&mut state, draft, now)?;
                Err(EngineError::Denied(*reason))
            }
        }
    }

    /// Decides a write; on deny, audits and refuses. On permit, returns
    /// what the write needs, with the audit to commit alongside it.
    fn authorise_write(
        &self,
        state: &mut State,
        nhs: &NhsNumber,
        action: Action,
        self_claim: Option<AlertReason>,
    ) -> Result<(RoleProfileGrant, AuditSpec, i64), EngineError> {
        let grant = self.active(state)?;
        let now = self.now_checked(state)?;
        let replica = self.replica(state, nhs)?;
        let access = self_claim.map(|r| AccessRequest {
            basis: RequestedBasis::Permission,
            self_claim: Some(r),
        });
        let req = Self::request(&grant, replica, nhs, action, access);
        let decision = Self::decide_for(&grant, nhs, &req);
        let draft = Self::draft(&grant, nhs, &req, &decision);
        if let Decision::Deny(reason) = decision {
            self.audit(state, draft, now)?;
            return Err(EngineError::Denied(reason));
        }
        // Before the write: a record with local changes is never forgotten
        // until the server has them, even across a crash or restart.
        self.mark_unsent_durably(nhs)?;
        let spec = AuditSpec {
            draft,
            device: self.config.device_id.clone(),
            now_ms: now,
        };
        Ok((grant, spec, now))
    }

    fn written(
        &self,
        state: &mut State,
        nhs: &NhsNumber,
        result: Result<crate::record::EntryVersion, StoreError>,
        now: i64,
    ) -> Result<crate::record::EntryVersion, EngineError> {
        let version = result?;
        // Sync picks the change up from here (and keeps the record until
        // the server has it).
        self.local_changes.mark(nhs);
        self.record_changed(nhs);
        self.persist_clock(state, now)?;
        Ok(version)
    }

    /// Adds an entry (a visit summary, a preference, a GP's allergy...).
    pub fn add_entry(
        &self,
        nhs: &NhsNumber,
        content: EntryContent,
        sensitive: bool,
        self_claim: Option<AlertReason>,
    ) -> Result<crate::record::EntryVersion, EngineError> {
        let compartment = if sensitive {
            Compartment::Sensitive
        } else {
            content.home_compartment()
        };
        let mut state = self.state()?;
        let (grant, spec, now) =
            self.authorise_write(&mut state, nhs, Action::AddEntry(compartment), self_claim)?;
        let provenance = self.provenance(&grant, now);
        let replica = self.replica(&mut state, nhs)?;
        let result = replica.add_entry(content, sensitive, provenance, Some(&spec));
        self.written(&mut state, nhs, result, now)
    }

    /// A new version of an entry, replacing the versions the user saw.
    pub fn supersede(
        &self,
        nhs: &NhsNumber,
        entry: EntryId,
        replaces: &[VersionId],
        content: EntryContent,
    ) -> Result<crate::record::EntryVersion, EngineError> {
        let mut state = self.state()?;
        let (compartment, author_organisation) =
            self.replaced_authors(&mut state, nhs, entry, replaces)?;
        let action = Action::Supersede {
            compartment,
            author_organisation,
        };
        let (grant, spec, now) = self.authorise_write(&mut state, nhs, action, None)?;
        let provenance = self.provenance(&grant, now);
        let replica = self.replica(&mut state, nhs)?;
        let result = replica.supersede(
            compartment,
            entry,
            replaces,
            content,
            provenance,
            Some(&spec),
        );
        self.written(&mut state, nhs, result, now)
    }

    /// Marks an entry entered-in-error with a reason (the author's
    /// organisation or the patient's GP only).
    pub fn mark_entered_in_error(
        &self,
        nhs: &NhsNumber,
        entry: EntryId,
        replaces: &[VersionId],
        reason: &str,
    ) -> Result<crate::record::EntryVersion, EngineError> {
        let mut state = self.state()?;
        let (compartment, author_organisation) =
            self.replaced_authors(&mut state, nhs, entry, replaces)?;
        let action = Action::MarkEnteredInError {
            compartment,
            author_organisation,
        };
        let (grant, spec, now) = self.authorise_write(&mut state, nhs, action, None)?;
        let provenance = self.provenance(&grant, now);
        let replica = self.replica(&mut state, nhs)?;
        let result = replica.mark_entered_in_error(
            compartment,
            entry,
            replaces,
            reason,
            provenance,
            Some(&spec),
        );
        self.written(&mut state, nhs, result, now)
    }

    /// The entry's compartment, and the organisation that decides who may
    /// replace the named versions: the first author that is not the actor's
    /// own organisation (so one foreign version among several is enough to
    /// need the author's rights), else the actor's.
    fn replaced_authors(
        &self,
        state: &mut State,
        nhs: &NhsNumber,
        entry: EntryId,
        replaces: &[VersionId],
    ) -> Result<(Compartment, String), EngineError> {
        // The session first: nothing is decrypted for a locked engine.
        let grant = self.active(state)?;
        let (_, _, own) = grant.actor();
        let replica = self.replica(state, nhs)?;
        let compartment = replica
            .compartment_of(entry)
            .ok_or(EngineError::InvalidInput("no such entry on this device"))?;
        let view = replica.view_compartment(compartment)?;
        let heads = view
            .entry(entry)
            .map(|e| e.heads().into_iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        let named: Vec<_> = heads
            .iter()
            .filter(|v| replaces.contains(&v.version_id))
            .collect();
        if named.is_empty() {
            return Err(EngineError::InvalidInput(
                "the named version is not current",
            ));
        }
        let author = named
            .iter()
            .map(|v| v.provenance.organisation.clone())
            .find(|org| *org != own)
            .unwrap_or(own);
        Ok((compartment, author))
    }

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
        let result = replica.add_entry(content, false, provenance, Some(&spec));
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

    /// The audit events this device still holds for the patient (the
    /// patient's own, or a privacy officer's review). Reading is audited.
    pub fn audit_trail(&self, nhs: &NhsNumber) -> Result<Vec<AuditEvent>, EngineError> {
        let mut state = self.state()?;
        let grant = self.active(&mut state)?;
        let now = self.now_checked(&state)?;
        let req = Request {
            principal: grant.principal(),
            action: Action::ReadAuditTrail,
            relationship: Relationship::None,
            basis: ViewBasis::NotAsked,
            choices: PatientChoices::default(),
        };
        let decision = Self::decide_for(&grant, nhs, &req);
        let draft = Self::draft(&grant, nhs, &req, &decision);
        if let Decision::Deny(reason) = decision {
            self.audit(&mut state, draft, now)?;
            return Err(EngineError::Denied(reason));
        }
        let events: Vec<AuditEvent> = self
            .store
            .queued_audit_events()?
            .into_iter()
            .filter(|e| e.patient.as_ref() == Some(nhs))
            .collect();
        self.audit(&mut state, draft, now)?;
        Ok(events)
    }

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
            super::session::set_clock_high_water(&self.store, tx, hw)
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
            super::session::set_clock_high_water(&self.store, tx, hw)
        })?;
        state.clock_high_water = hw;
        state.records.remove(nhs);
        Ok(())
    }
}
