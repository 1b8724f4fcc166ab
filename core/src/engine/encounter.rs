//! A grant replaced mid-session: when the server opens or closes an
//! encounter (access to a patient outside the user's relationships, found
//! online), it signs a new grant naming the change, with the same user,
//! role and end of shift. The device verifies it, keeps the passcode set at
//! login, and applies the retention rules at once: a closed encounter's
//! patient is forgotten here.

use super::{Active, Engine, EngineError, SessionInfo, session};
use crate::audit::AuditDraft;
use crate::grant::{GrantError, verify_grant};

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
