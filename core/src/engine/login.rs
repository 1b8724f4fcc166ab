//! Signing in: online login with a signed grant, offline unlock with the
//! passcode (wrong tries counted, then lock-out), locking, and the idle
//! timeout that locks a session.

use super::{Active, Engine, EngineError, SessionInfo, State, session};
use crate::audit::AuditDraft;
use crate::grant::{CLOCK_SKEW_MS, RoleProfileGrant, verify_grant};

impl Engine {
    /// Online login: the server has checked the user's credentials and sent
    /// a signed role profile grant. Verifies it against the pinned key, sets
    /// the passcode for offline unlock, clears any lock-out, and applies the
    /// retention rules to the new caseload and incidents.
    pub fn login_online(
        &self,
        grant_bytes: &[u8],
        passcode: &str,
    ) -> Result<SessionInfo, EngineError> {
        if passcode.chars().count() < 4 {
            return Err(EngineError::InvalidInput(
                "a passcode has at least 4 characters",
            ));
        }
        let mut state = self.state()?;
        let now = self.now_checked(&state)?;
        let grant = match verify_grant(
            grant_bytes,
            &self.config.server_key,
            &self.config.device_id,
            now,
        ) {
            Ok(g) => g,
            Err(e) => {
                let draft = self.device_draft("login", None, Some(format!("grant-refused: {e}")));
                self.audit(&mut state, draft, now)?;
                return Err(EngineError::Grant(e));
            }
        };
        let phc = session::hash_passcode(passcode).ok_or(EngineError::InvalidInput("passcode"))?;
        let record = session::SessionRecord {
            grant: grant_bytes.to_vec(),
            passcode_phc: phc,
            failed_attempts: 0,
            locked_out: false,
        };
        let (user, role, organisation) = grant.actor();
        let draft = AuditDraft {
            user,
            role,
            organisation,
            ..self.device_draft("login", None, None)
        };
        // A new grant: its age starts now (stored with the login's event).
        state.grant_age = session::GrantAge {
            stored_ms: 0,
            mono_at: self.clock.monotonic_ms(),
        };
        self.commit_audited(&mut state, draft, now, |tx| {
            session::save(&self.store, tx, &record)
        })?;
        state.records.clear();
        // Another user's encounters are not theirs.
        if state
            .active
            .as_ref()
            .is_none_or(|a| a.grant.principal != grant.principal)
        {
            state.encounters.clear();
        }
        state.active = Some(Active {
            grant: grant.clone(),
            last_activity_mono: self.clock.monotonic_ms(),
        });
        self.close_incidents_not_on(&grant, now)?;
        self.apply_retention_locked(&mut state, now)?;
        self.status_changed();
        Ok(SessionInfo {
            principal: grant.principal,
            expires_at_ms: grant.expires_at_ms,
        })
    }

    /// Offline unlock with the passcode set at the last online login.
    pub fn unlock(&self, passcode: &str) -> Result<SessionInfo, EngineError> {
        let mut state = self.state()?;
        let now = self.now_checked(&state)?;
        let mut record = self
            .store
            .read(|conn| session::load(&self.store, conn))?
            .ok_or(EngineError::Locked)?;
        if record.locked_out {
            let draft = self.device_draft("unlock-refused", None, Some("locked-out".into()));
            self.audit(&mut state, draft, now)?;
            return Err(EngineError::LockedOut);
        }
        // Count the attempt before checking it: if the store cannot record
        // the count, there is no attempt (no unlimited guessing on a full disk).
        record.failed_attempts += 1;
        self.store
            .write(|tx| session::save(&self.store, tx, &record))
            .map_err(EngineError::AuditFailed)?;
        if !session::passcode_matches(passcode, &record.passcode_phc) {
            let locked_out = record.failed_attempts >= self.config.max_unlock_attempts;
            record.locked_out = locked_out;
            let action = if locked_out {
                "lock-out"
            } else {
                "unlock-failed"
            };
            let draft = self.device_draft(
                action,
                None,
                Some(format!("attempt {}", record.failed_attempts)),
            );
            self.commit_audited(&mut state, draft, now, |tx| {
                session::save(&self.store, tx, &record)
            })?;
            state.active = None;
            state.records.clear();
            if locked_out {
                self.apply_retention_locked(&mut state, now)?;
                return Err(EngineError::LockedOut);
            }
            return Err(EngineError::WrongPasscode {
                remaining: self.config.max_unlock_attempts - record.failed_attempts,
            });
        }
        // The passcode was right: the count starts again, whatever follows.
        record.failed_attempts = 0;
        // Expired by the wall clock, or by the time it has been in use.
        let in_use = state.grant_age.at(self.clock.monotonic_ms());
        let grant = match verify_grant(
            &record.grant,
            &self.config.server_key,
            &self.config.device_id,
            now,
        )
        .and_then(|g| {
            if g.outlived_by(in_use) {
                Err(crate::grant::GrantError::Expired)
            } else {
                Ok(g)
            }
        }) {
            Ok(g) => g,
            Err(e) => {
                let draft = self.device_draft("unlock", None, Some(format!("grant-refused: {e}")));
                self.commit_audited(&mut state, draft, now, |tx| {
                    session::save(&self.store, tx, &record)
                })?;
                return Err(EngineError::Grant(e));
            }
        };
        let (user, role, organisation) = grant.actor();
        let draft = AuditDraft {
            user,
            role,
            organisation,
            ..self.device_draft("unlock", None, None)
        };
        self.commit_audited(&mut state, draft, now, |tx| {
            session::save(&self.store, tx, &record)
        })?;
        state.active = Some(Active {
            grant: grant.clone(),
            last_activity_mono: self.clock.monotonic_ms(),
        });
        // Sync statuses may be read again (they name patients: not while
        // locked).
        self.status_changed();
        Ok(SessionInfo {
            principal: grant.principal,
            expires_at_ms: grant.expires_at_ms,
        })
    }

    /// Locks now: no data until the next unlock.
    /// Logs the user out: audited under their grant, the session (grant
    /// and passcode verifier) forgotten, so nothing works again until an
    /// online login. Records stay (retention decides when they go).
    pub fn logout(&self) -> Result<(), EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        let record = self.store.read(|conn| session::load(&self.store, conn))?;
        // Whose session ends: the active grant's user, or (locked) the
        // stored grant's while it still verifies; else the device's own.
        let grant = state.active.as_ref().map(|a| a.grant.clone()).or_else(|| {
            let r = record.as_ref()?;
            verify_grant(
                &r.grant,
                &self.config.server_key,
                &self.config.device_id,
                now,
            )
            .ok()
        });
        let mut draft = self.device_draft("logout", None, None);
        if let Some(g) = &grant {
            (draft.user, draft.role, draft.organisation) = g.actor();
        }
        self.commit_audited(&mut state, draft, now, |tx| session::clear(&self.store, tx))?;
        state.active = None;
        state.records.clear();
        state.encounters.clear();
        Ok(())
    }

    pub fn lock(&self) -> Result<(), EngineError> {
        let mut state = self.state()?;
        state.active = None;
        state.records.clear();
        Ok(())
    }

    /// Who is signed in, without counting as activity (an app polling this
    /// must not keep an idle session alive).
    pub fn session(&self) -> Result<Option<SessionInfo>, EngineError> {
        let mut state = self.state()?;
        Ok(self
            .checked_active(&mut state, false)
            .ok()
            .map(|g| SessionInfo {
                principal: g.principal,
                expires_at_ms: g.expires_at_ms,
            }))
    }

    /// The acting grant, counting this as activity.
    pub(super) fn active(&self, state: &mut State) -> Result<RoleProfileGrant, EngineError> {
        self.checked_active(state, true)
    }

    /// The acting grant, or locked: idle too long (monotonic time), grant
    /// expired (by the wall clock, or by the monotonic time it has been in
    /// use), or the clock wound back all lock the session and drop every
    /// decrypted record.
    pub(super) fn checked_active(
        &self,
        state: &mut State,
        touch: bool,
    ) -> Result<RoleProfileGrant, EngineError> {
        let now = self.clock.now_ms();
        let mono = self.clock.monotonic_ms();
        let in_use = state.grant_age.at(mono);
        let Some(active) = state.active.as_mut() else {
            state.records.clear();
            return Err(EngineError::Locked);
        };
        let failure = if mono - active.last_activity_mono > self.config.idle_timeout_ms {
            Some(EngineError::Locked)
        } else if now + CLOCK_SKEW_MS < state.clock_high_water {
            Some(EngineError::ClockWoundBack)
        } else if now >= active.grant.expires_at_ms || active.grant.outlived_by(in_use) {
            Some(EngineError::Grant(crate::grant::GrantError::Expired))
        } else {
            if touch {
                active.last_activity_mono = mono;
            }
            None
        };
        // The grant's age is stored with every audit record; idle time is
        // stored here, at most a minute late, so a restart does not forget it.
        if mono.saturating_sub(state.grant_age.mono_at) > 60_000 || failure.is_some() {
            let age = state.grant_age.at(mono);
            if self
                .store
                .write(|tx| session::set_grant_age(&self.store, tx, age))
                .is_ok()
            {
                state.grant_age = session::GrantAge {
                    stored_ms: age,
                    mono_at: mono,
                };
            }
        }
        match failure {
            Some(e) => {
                state.active = None;
                state.records.clear();
                // Remember how late it was, so winding the clock back later
                // cannot revive the grant. If this write fails the in-memory
                // mark still holds, and the next audited commit persists it.
                if self.persist_clock(state, now).is_err() {
                    tracing::warn!("could not persist the clock high-water mark");
                }
                Err(e)
            }
            None => Ok(active.grant.clone()),
        }
    }
}
