//! A grant replaced mid-session: when the server opens or closes an
//! encounter (access to a patient outside the user's relationships, found
//! online), it signs a new grant naming the change, with the same user,
//! role and end of shift. The device verifies it, keeps the passcode set at
//! login, and applies the retention rules at once: a closed encounter's
//! patient is forgotten here. And the encounters a session is in, so each
//! raises its alerts once (what one is: `access::Encounter`).

use super::{Active, Engine, EngineError, SessionInfo, State, session};
use crate::NhsNumber;
use crate::access::{
    AccessRequest, Action, Alert, Encounter, PatientChoices, Relationship, Request, RequestedBasis,
    ViewBasis, decide,
};
use crate::audit::AuditDraft;
use crate::grant::{GrantError, RelationshipKind, RoleProfileGrant, verify_grant};

/// What an access raises in the encounter it belongs to.
pub(super) struct InEncounter {
    /// The alerts it raises: those its decision obliges that the encounter
    /// has not raised yet.
    pub alerts: Vec<Alert>,
    encounter: Encounter,
    at: (i64, i64),
}

impl Engine {
    /// The encounter an access to `nhs` by `grant` belongs to now (a new
    /// one if none goes on), and which of the `obliged` alerts it raises.
    pub(super) fn in_encounter(
        &self,
        state: &State,
        grant: &RoleProfileGrant,
        nhs: &NhsNumber,
        obliged: &[Alert],
    ) -> InEncounter {
        let at = (self.clock.monotonic_ms(), self.clock.now_ms());
        let granted = match grant.relationship_with(nhs).map(|r| &r.kind) {
            Some(RelationshipKind::Encounter { encounter_id, .. }) => Some(encounter_id.as_str()),
            _ => None,
        };
        let encounter = state
            .encounters
            .get(nhs)
            .filter(|e| e.goes_on(at, self.config.encounter_window_ms, granted))
            .cloned()
            .unwrap_or_default();
        InEncounter {
            alerts: encounter.still_owed(obliged),
            encounter,
            at,
        }
    }

    /// Notes the access (its audit committed) in its encounter.
    pub(super) fn accessed(state: &mut State, nhs: &NhsNumber, access: InEncounter) {
        let mut encounter = access.encounter;
        encounter.viewed(&access.alerts, access.at);
        state.encounters.insert(*nhs, encounter);
    }

    /// The server opened encounter `id` with `nhs` on the request `access`
    /// (and raised its alerts, the same rules deciding): views inside it
    /// raise them no second time.
    pub fn encounter_opened(
        &self,
        nhs: &NhsNumber,
        id: &str,
        access: AccessRequest,
    ) -> Result<(), EngineError> {
        let mut state = self.state()?;
        let grant = self.active(&mut state)?;
        let request = Request {
            principal: grant.principal(),
            action: Action::View,
            relationship: access
                .self_claim
                .map_or(Relationship::None, Relationship::SelfClaimed),
            basis: match access.basis {
                RequestedBasis::Emergency => ViewBasis::Emergency,
                RequestedBasis::LegalOverride(r) => ViewBasis::LegalOverride(r),
                RequestedBasis::Permission => ViewBasis::PermissionRecorded,
            },
            choices: PatientChoices::default(),
        };
        let raised = decide(&request).alerts().to_vec();
        let at = (self.clock.monotonic_ms(), self.clock.now_ms());
        state
            .encounters
            .insert(*nhs, Encounter::opened_online(id, raised, at));
        Ok(())
    }
}

impl Engine {
    /// Adopts a grant the server signed during this session. Refused (and
    /// audited) unless it verifies, is for this device, and names the same
    /// user in the same role as the session's grant. `why` goes into the
    /// audit event (no patient data: an encounter id, say).
    pub fn adopt_grant(&self, grant_bytes: &[u8], why: &str) -> Result<SessionInfo, EngineError> {
        let mut state = self.state()?;
        let current = self.active(&mut state)?;
        let now = self.now_checked(&state)?;
        let verified = verify_grant(
            grant_bytes,
            &self.config.server_key,
            &self.config.device_id,
            now,
        )
        .and_then(|g| {
            if g.principal == current.principal {
                Ok(g)
            } else {
                Err(GrantError::OtherUser)
            }
        });
        let (user, role, organisation) = current.actor();
        let draft = |detail: String| AuditDraft {
            user: user.clone(),
            role: role.clone(),
            organisation: organisation.clone(),
            ..self.device_draft("grant-updated", None, Some(detail))
        };
        let grant = match verified {
            Ok(g) => g,
            Err(e) => {
                self.audit(&mut state, draft(format!("grant-refused: {e}")), now)?;
                return Err(EngineError::Grant(e));
            }
        };
        let mut record = self
            .store
            .read(|conn| session::load(&self.store, conn))?
            .ok_or(EngineError::Locked)?;
        record.grant = grant_bytes.to_vec();
        self.commit_audited(&mut state, draft(why.to_owned()), now, |tx| {
            session::save(&self.store, tx, &record)
        })?;
        state.active = Some(Active {
            grant: grant.clone(),
            last_activity_mono: self.clock.monotonic_ms(),
        });
        self.apply_retention_locked(&mut state, now)?;
        Ok(SessionInfo {
            principal: grant.principal,
            expires_at_ms: grant.expires_at_ms,
        })
    }
}
