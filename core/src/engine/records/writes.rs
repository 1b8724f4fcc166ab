//! Writing entries: the decision before each write, the write with its
//! audit event, and who may replace whose versions.

use super::Unheld;
use crate::NhsNumber;
use crate::access::{AccessRequest, Action, AlertReason, Decision, RequestedBasis};
use crate::engine::{Engine, EngineError, State};
use crate::grant::RoleProfileGrant;
use crate::record::{Compartment, EntryContent, EntryId, Provenance, VersionId};
use crate::replica::AuditSpec;
use crate::store::StoreError;

impl Engine {
    pub(super) fn provenance(&self, grant: &RoleProfileGrant, now: i64) -> Provenance {
        let (author_id, role, organisation) = grant.actor();
        Provenance {
            author_id,
            role,
            organisation,
            device: self.config.device_id.clone(),
            recorded_at_ms: now,
        }
    }

    /// Decides a write; on deny, audits and refuses. On permit, returns
    /// what the write needs, with the audit to commit alongside it.
    pub(super) fn authorise_write(
        &self,
        state: &mut State,
        nhs: &NhsNumber,
        action: Action,
        self_claim: Option<AlertReason>,
    ) -> Result<(RoleProfileGrant, AuditSpec, i64), EngineError> {
        let grant = self.active(state)?;
        let now = self.now_checked(state)?;
        let access = self_claim.map(|r| AccessRequest {
            basis: RequestedBasis::Permission,
            self_claim: Some(r),
        });
        let op = Unheld {
            grant: &grant,
            nhs,
            action: action.clone(),
            access,
            now,
        };
        let replica = self.held(state, op)?;
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

    pub(super) fn written(
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
        // (Which compartment is not known without the record: the attempt
        // is audited by its action.)
        let op = Unheld {
            grant: &grant,
            nhs,
            action: Action::Supersede {
                compartment: Compartment::CareEvents,
                author_organisation: own.clone(),
            },
            access: None,
            now: self.now_checked(state)?,
        };
        let replica = self.held(state, op)?;
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
}
