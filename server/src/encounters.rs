//! Encounters opened online (`Purpose::Encounter`): a clinician finds a
//! patient outside their relationships by NHS number and date of birth.
//! The server matches the record, makes the access decision the device
//! would (role, the relationship claimed now, permission or emergency, the
//! patient's choices), audits it with the alerts it obliges *before*
//! anything changes, then adds an encounter relationship and signs a new
//! grant naming it. The share policy and holdings list read that grant, so
//! the record reaches the device by the normal sync. Closing the encounter
//! signs a grant without it, and the device forgets the patient.
//!
//! A refusal says why in the decision's words; an unknown number and a
//! wrong date of birth get the same answer, so the request cannot probe
//! which numbers have a record.

use std::sync::Arc;

use scr_core::access::choices_from;
use scr_core::access::{Decision, DenyReason, Principal, Relationship, Request, decide};
use scr_core::audit::{AuditDraft, Outcome};
use scr_core::channel::{NoiseChannel, WebSocket, to_hex};
use scr_core::grant::{GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant};
use scr_core::protocol::{
    ENCOUNTER_FORMAT, EncounterBasis, EncounterReply, EncounterRequest, MAX_ENCOUNTER_REQUEST,
};
use scr_core::record::{Compartment, EntryContent};
use scr_core::{NhsNumber, Store};
use zeroize::Zeroizing;

use crate::archive::Archive;
use crate::policy::AccessPolicy;

/// What the handler needs.
#[derive(Clone)]
pub struct EncounterDesk {
    pub store: Store,
    pub policy: AccessPolicy,
    pub archive: Arc<Archive>,
    pub signer_seed: Zeroizing<[u8; 32]>,
    /// The server's static key: its own trail's chain in the archive.
    pub server_key: [u8; 32],
}

/// Answers one request; returns whether the device's grant changed (the
/// caller then refreshes its holdings list and share decisions).
pub async fn serve_encounter<S: WebSocket>(
    channel: &mut NoiseChannel<S>,
    desk: EncounterDesk,
) -> Result<bool, String> {
    let request = crate::request::one_request(channel, "encounter request").await?;
    let device = channel.remote_static();
    let parsed = (request.len() <= MAX_ENCOUNTER_REQUEST)
        .then(|| serde_json::from_slice::<EncounterRequest>(&request).ok())
        .flatten();
    let reply = match parsed {
        Some(request) => tokio::task::spawn_blocking(move || desk.answer(&device, request))
            .await
            .unwrap_or_else(|_| failed("the encounter could not be recorded")),
        None => failed("the encounter request is malformed"),
    };
    let changed = matches!(
        reply,
        EncounterReply::Opened { .. } | EncounterReply::Closed { .. }
    );
    let body = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    channel.send(&body).await.map_err(|e| e.to_string())?;
    Ok(changed)
}

fn failed(reason: &str) -> EncounterReply {
    EncounterReply::Failed {
        reason: reason.to_owned(),
    }
}

fn refused(reason: DenyReason) -> EncounterReply {
    EncounterReply::Refused { reason }
}

impl EncounterDesk {
    fn answer(&self, device: &[u8; 32], request: EncounterRequest) -> EncounterReply {
        let now = scr_core::clock::now_ms();
        // Only staff with a current grant, from this device's last login.
        let grant = self
            .policy
            .current_grant(device)
            .filter(|g| now < g.expires_at_ms && matches!(g.principal(), Principal::Staff(_)));
        let Some(grant) = grant else {
            return refused(DenyReason::NotAllowed);
        };
        let reply = match request {
            EncounterRequest::Open {
                format: ENCOUNTER_FORMAT,
                nhs_number,
                date_of_birth,
                basis,
                self_claim,
            } => self.open(
                device,
                &grant,
                &nhs_number,
                &date_of_birth,
                basis,
                self_claim,
            ),
            EncounterRequest::Close {
                format: ENCOUNTER_FORMAT,
                encounter_id,
            } => self.close(device, &grant, &encounter_id),
            _ => failed("the encounter request's format is not understood"),
        };
        // Alerts reach the privacy officers' list now, not at the next tick.
        if self
            .archive
            .take_server_trail(&self.store, &self.server_key, now)
            .is_err()
        {
            tracing::warn!("the server's trail could not be archived; retried each second");
        }
        reply
    }

    fn open(
        &self,
        device: &[u8; 32],
        grant: &RoleProfileGrant,
        nhs: &NhsNumber,
        date_of_birth: &str,
        basis: EncounterBasis,
        self_claim: Option<scr_core::access::AlertReason>,
    ) -> EncounterReply {
        let (user, _, _) = grant.actor();
        let current = crate::grants::relationships(&self.store, &user)
            .map(|now| now.iter().any(|r| r.nhs_number == *nhs))
            .unwrap_or(false);
        if grant.relationship_with(nhs).is_some() && current {
            return self.found(grant, nhs, "already shared", EncounterReply::AlreadyShared);
        }
        if !self.date_of_birth_matches(nhs, date_of_birth) {
            return self.found(grant, nhs, "no match", EncounterReply::NoMatch);
        }
        // Without the patient's choices, nothing is shared (fail closed).
        let Ok(Some(governance)) = self.store.view_of_compartment(nhs, Compartment::Governance)
        else {
            return refused(DenyReason::RecordUnavailable);
        };
        let request = Request {
            principal: grant.principal(),
            action: scr_core::access::Action::View,
            relationship: self_claim.map_or(Relationship::None, Relationship::SelfClaimed),
            basis: basis.view_basis(),
            choices: choices_from(Some(&governance)),
        };
        let decision = decide(&request);
        let encounter_id = new_encounter_id();
        let audited = AuditDraft {
            compartments: decision.compartments().to_vec(),
            outcome: match &decision {
                Decision::Permit { .. } => Outcome::Permit,
                Decision::Deny(reason) => Outcome::Deny { reason: *reason },
            },
            basis: request.basis_label(),
            alerts: decision.alerts().to_vec(),
            ..draft(
                grant,
                nhs,
                "open-encounter",
                &format!("encounter {encounter_id}"),
            )
        };
        // No share the trail does not show, and no alert left unraised.
        if crate::audit::record_draft(&self.store, audited).is_err() {
            return failed("the request could not be audited");
        }
        if let Decision::Deny(reason) = decision {
            return refused(reason);
        }
        let encounter = GrantRelationship {
            nhs_number: *nhs,
            kind: RelationshipKind::Encounter {
                encounter_id: encounter_id.clone(),
                ends_at_ms: grant.expires_at_ms,
            },
        };
        if crate::users::add_encounter(&self.store, &user, encounter.clone()).is_err() {
            return failed("the encounter could not be recorded");
        }
        let mut next = grant.clone();
        next.relationships.push(encounter);
        match self.reissue(device, next) {
            Some(grant_hex) => EncounterReply::Opened {
                encounter_id,
                grant_hex,
            },
            None => failed("the grant could not be issued"),
        }
    }

    fn close(
        &self,
        device: &[u8; 32],
        grant: &RoleProfileGrant,
        encounter_id: &str,
    ) -> EncounterReply {
        let Some(encounter) = grant
            .relationships
            .iter()
            .find(|r| crate::users::is_encounter(r, encounter_id))
        else {
            return EncounterReply::Failed {
                reason: "no open encounter has that id".to_owned(),
            };
        };
        let (user, _, _) = grant.actor();
        let detail = format!("encounter {encounter_id}");
        let draft = draft(grant, &encounter.nhs_number, "close-encounter", &detail);
        if crate::audit::record_draft(&self.store, draft).is_err()
            || crate::users::end_encounter(&self.store, &user, encounter_id).is_err()
        {
            return failed("the encounter could not be closed");
        }
        let mut next = grant.clone();
        next.relationships
            .retain(|r| !crate::users::is_encounter(r, encounter_id));
        match self.reissue(device, next) {
            Some(grant_hex) => EncounterReply::Closed { grant_hex },
            None => failed("the grant could not be issued"),
        }
    }

    /// A search that opens nothing, audited before `reply` is given.
    fn found(
        &self,
        grant: &RoleProfileGrant,
        nhs: &NhsNumber,
        outcome: &str,
        reply: EncounterReply,
    ) -> EncounterReply {
        match crate::audit::record_draft(&self.store, draft(grant, nhs, "find-patient", outcome)) {
            Ok(()) => reply,
            Err(_) => failed("the request could not be audited"),
        }
    }

    /// Signs `grant` as the device's current grant under a new id (same
    /// user, role and end of shift), stored first: the share policy and the
    /// holdings list read it from the store.
    fn reissue(&self, device: &[u8; 32], mut grant: RoleProfileGrant) -> Option<String> {
        grant.grant_id = crate::grants::grant_id(scr_core::clock::now_ms(), device);
        self.archive.record_grant(device, &grant).ok()?;
        crate::grants::store_issued(&self.store, device, &grant).ok()?;
        let signer = GrantSigner::from_seed(*self.signer_seed);
        Some(to_hex(&signer.sign(&grant)))
    }

    /// Whether the record's demographics give this date of birth (any
    /// current version, if two conflict).
    fn date_of_birth_matches(&self, nhs: &NhsNumber, date_of_birth: &str) -> bool {
        let wanted = date_of_birth.trim();
        if wanted.is_empty() {
            return false;
        }
        let Ok(Some(core)) = self.store.view_of_compartment(nhs, Compartment::Core) else {
            return false;
        };
        core.entries.iter().flat_map(|e| e.heads()).any(|v| {
            matches!(&v.content, EntryContent::Demographics { date_of_birth, .. } if date_of_birth == wanted)
        })
    }
}

/// An audit event by the grant's user about `nhs` (recorded; the caller
/// sets the outcome, basis and alerts of a decision).
fn draft(grant: &RoleProfileGrant, nhs: &NhsNumber, action: &str, detail: &str) -> AuditDraft {
    let (user, role, organisation) = grant.actor();
    AuditDraft {
        user,
        role,
        organisation,
        patient: Some(*nhs),
        action: action.to_owned(),
        compartments: Vec::new(),
        entries: Vec::new(),
        outcome: Outcome::Recorded,
        basis: None,
        alerts: Vec::new(),
        detail: Some(detail.to_owned()),
    }
}

/// 128 random bits, hex: names the encounter in grants and the trail.
fn new_encounter_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: a hash of the time still gives a distinct id.
        let now = scr_core::clock::now_ms().to_le_bytes();
        bytes.copy_from_slice(&blake3::hash(&now).as_bytes()[..16]);
    }
    to_hex(&bytes)
}
