//! The engine a device app holds: the encrypted store, the session (who is
//! acting, unlocked or not), and every record operation gated by the access
//! decision and recorded in the audit queue before anything is released.

mod encounter;
mod error;
mod records;
mod session;
mod sync_support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::NhsNumber;
use crate::audit::{AuditDraft, AuditEvent, Outcome};
use crate::clock::Clock;

/// The audit events waiting for the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct AuditBacklog {
    pub queued: u64,
    /// When the oldest was written.
    pub oldest_ms: Option<i64>,
    /// It has waited longer than the app's threshold.
    pub overdue: bool,
}
use crate::crypto::KeyProvider;
use crate::grant::{CLOCK_SKEW_MS, GrantPrincipal, RoleProfileGrant, verify_grant};
use crate::replica::PatientReplica;
use crate::retention::{DeviceClass, ForgetReason, RetentionPolicy, due_for_forgetting};
use crate::store::{HoldReason, Store};

pub use error::EngineError;
pub use records::ReleasedView;
pub use sync_support::HoldingsOutcome;

/// How this device is set up at enrollment.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub device_id: String,
    pub device_class: DeviceClass,
    /// The server's Ed25519 key, pinned at enrollment.
    pub server_key: [u8; 32],
    /// An unlocked session locks after this long without use.
    pub idle_timeout_ms: i64,
    /// Wrong passcodes allowed before lock-out (until the next online login).
    pub max_unlock_attempts: u32,
    pub retention: RetentionPolicy,
}

impl EngineConfig {
    pub fn new(device_id: &str, device_class: DeviceClass, server_key: [u8; 32]) -> Self {
        Self {
            device_id: device_id.to_owned(),
            device_class,
            server_key,
            idle_timeout_ms: 5 * 60 * 1000,
            max_unlock_attempts: 5,
            retention: RetentionPolicy::default(),
        }
    }
}

/// Who is signed in and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct SessionInfo {
    pub principal: GrantPrincipal,
    pub expires_at_ms: i64,
}

struct Active {
    grant: RoleProfileGrant,
    /// Monotonic time of the last use, for the idle timeout.
    last_activity_mono: i64,
}

struct State {
    active: Option<Active>,
    /// Records opened during this unlocked session; dropped on lock, so a
    /// locked engine holds no decrypted data.
    records: HashMap<NhsNumber, PatientReplica>,
    /// The latest time seen, persisted with every audit record.
    clock_high_water: i64,
}

pub struct Engine {
    store: Store,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    local_changes: sync_support::LocalChanges,
    record_changed: tokio::sync::broadcast::Sender<NhsNumber>,
}

impl Engine {
    /// Opens the device store. The engine starts locked.
    pub fn open(
        path: impl AsRef<Path>,
        keys: &dyn KeyProvider,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EngineError> {
        Self::with_store(Store::open(path, keys)?, config, clock)
    }

    /// The engine over a store already open.
    pub fn with_store(
        store: Store,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, EngineError> {
        let store_for_changes = store.clone();
        let clock_high_water = store.read(|conn| session::clock_high_water(&store, conn))?;
        Ok(Self {
            store,
            config,
            clock,
            state: Mutex::new(State {
                active: None,
                records: HashMap::new(),
                clock_high_water,
            }),
            local_changes: sync_support::LocalChanges::load(&store_for_changes)?,
            record_changed: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// The NHS number of every record whose content changes from now on:
    /// merged from sync, written here, received or forgotten. Says nothing
    /// of the content; a lagging receiver skips to the newest (read the
    /// record again).
    pub fn watch_records(&self) -> tokio::sync::broadcast::Receiver<NhsNumber> {
        self.record_changed.subscribe()
    }

    pub(crate) fn record_changed(&self, nhs: &NhsNumber) {
        // Nobody listening is fine.
        let _ = self.record_changed.send(*nhs);
    }

    /// The store file (for diagnostics and tests; its contents are sealed).
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Whether this device holds the patient's record (says nothing of it).
    pub fn holds(&self, nhs: &NhsNumber) -> Result<bool, EngineError> {
        Ok(self.store.has_record(nhs)?)
    }

    /// The patients this device holds and why, for the app's caseload or
    /// incident list. Needs an unlocked session (the list names patients).
    pub fn holdings(&self) -> Result<Vec<crate::store::Holding>, EngineError> {
        let mut state = self.state()?;
        self.checked_active(&mut state, false)?;
        Ok(self.store.holdings()?)
    }

    /// Why the device holds the patient's record (a caseload, an incident,
    /// an encounter...), if it does.
    pub fn hold_reason(&self, nhs: &NhsNumber) -> Result<Option<HoldReason>, EngineError> {
        Ok(self
            .store
            .holdings()?
            .into_iter()
            .find(|h| h.nhs_number == *nhs)
            .map(|h| h.reason))
    }

    /// The audit events waiting for the server, oldest first (the uploader's
    /// view; not for display).
    pub fn audit_queue(&self) -> Result<Vec<AuditEvent>, EngineError> {
        Ok(self.store.queued_audit_events()?)
    }

    /// The oldest `limit` events waiting for the server.
    pub fn audit_batch(&self, limit: usize) -> Result<Vec<AuditEvent>, EngineError> {
        Ok(self.store.oldest_audit_events(Some(limit))?)
    }

    /// How many events wait for the server.
    pub fn audit_queue_len(&self) -> Result<u64, EngineError> {
        Ok(self.store.audit_queue_len()?)
    }

    /// What waits for the server, and whether its oldest event has waited
    /// longer than `overdue_after_ms` (the app says so to its user).
    pub fn audit_backlog(&self, overdue_after_ms: i64) -> Result<AuditBacklog, EngineError> {
        let queued = self.store.audit_queue_len()?;
        let oldest_ms = self
            .store
            .oldest_audit_events(Some(1))?
            .first()
            .map(|e| e.wall_time_ms);
        let overdue = oldest_ms.is_some_and(|t| self.clock.now_ms() - t > overdue_after_ms);
        Ok(AuditBacklog {
            queued,
            oldest_ms,
            overdue,
        })
    }

    /// Whether the queued events continue the device's hash chain.
    pub fn verify_audit_chain(&self) -> Result<Result<(), crate::audit::ChainError>, EngineError> {
        Ok(self.store.verify_audit_chain()?)
    }

    /// The server has stored every event up to `seq`: release them.
    pub fn acknowledge_audit(&self, seq: u64) -> Result<usize, EngineError> {
        Ok(self.store.release_audit_through(seq)?)
    }

    /// The store, for the sync layer's storage adapter.
    pub(crate) fn store_handle(&self) -> Store {
        self.store.clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, EngineError> {
        self.state
            .lock()
            .map_err(|_| EngineError::Store(crate::store::StoreError::Poisoned))
    }

    /// The current time, refused if the clock is behind a time already seen
    /// (winding the clock back must not revive an expired grant).
    fn now_checked(&self, state: &State) -> Result<i64, EngineError> {
        let now = self.clock.now_ms();
        if now + CLOCK_SKEW_MS < state.clock_high_water {
            return Err(EngineError::ClockWoundBack);
        }
        Ok(now)
    }

    /// Commits an audit event on its own.
    fn audit(
        &self,
        state: &mut State,
        draft: AuditDraft,
        now: i64,
    ) -> Result<AuditEvent, EngineError> {
        self.commit_audited(state, draft, now, |_| Ok(()))
    }

    /// Runs `also` and appends `draft` in one transaction, moving the clock
    /// high-water mark forward with them. If the audit cannot be written,
    /// nothing commits.
    fn commit_audited(
        &self,
        state: &mut State,
        draft: AuditDraft,
        now: i64,
        also: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), crate::store::StoreError>,
    ) -> Result<AuditEvent, EngineError> {
        let hw = state.clock_high_water.max(now);
        let event = self
            .store
            .write(|tx| {
                also(tx)?;
                let e = self
                    .store
                    .append_audit_tx(tx, draft, &self.config.device_id, now)?;
                session::set_clock_high_water(&self.store, tx, hw)?;
                Ok(e)
            })
            .map_err(EngineError::AuditFailed)?;
        state.clock_high_water = hw;
        Ok(event)
    }

    fn device_draft(
        &self,
        action: &str,
        patient: Option<NhsNumber>,
        detail: Option<String>,
    ) -> AuditDraft {
        AuditDraft {
            user: "device".into(),
            role: String::new(),
            organisation: String::new(),
            patient,
            action: action.into(),
            compartments: Vec::new(),
            entries: Vec::new(),
            outcome: Outcome::Recorded,
            basis: None,
            alerts: Vec::new(),
            detail,
        }
    }

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
        self.commit_audited(&mut state, draft, now, |tx| {
            session::save(&self.store, tx, &record)
        })?;
        state.records.clear();
        state.active = Some(Active {
            grant: grant.clone(),
            last_activity_mono: self.clock.monotonic_ms(),
        });
        self.close_incidents_not_on(&grant, now)?;
        self.apply_retention_locked(&mut state, now)?;
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
        let grant = match verify_grant(
            &record.grant,
            &self.config.server_key,
            &self.config.device_id,
            now,
        ) {
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
        Ok(SessionInfo {
            principal: grant.principal,
            expires_at_ms: grant.expires_at_ms,
        })
    }

    /// Drops the in-memory copy of a record, so the next use reads what sync
    /// (or another writer) has merged into the store since.
    pub fn reload(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        self.state()?.records.remove(nhs);
        Ok(())
    }

    /// Locks now: no data until the next unlock.
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
    fn active(&self, state: &mut State) -> Result<RoleProfileGrant, EngineError> {
        self.checked_active(state, true)
    }

    /// The acting grant, or locked: idle too long (monotonic time), grant
    /// expired, or the clock wound back all lock the session and drop every
    /// decrypted record.
    fn checked_active(
        &self,
        state: &mut State,
        touch: bool,
    ) -> Result<RoleProfileGrant, EngineError> {
        let now = self.clock.now_ms();
        let mono = self.clock.monotonic_ms();
        let Some(active) = state.active.as_mut() else {
            state.records.clear();
            return Err(EngineError::Locked);
        };
        let failure = if mono - active.last_activity_mono > self.config.idle_timeout_ms {
            Some(EngineError::Locked)
        } else if now + CLOCK_SKEW_MS < state.clock_high_water {
            Some(EngineError::ClockWoundBack)
        } else if now >= active.grant.expires_at_ms {
            Some(EngineError::Grant(crate::grant::GrantError::Expired))
        } else {
            if touch {
                active.last_activity_mono = mono;
            }
            None
        };
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

    /// Moves the clock high-water mark forward and stores it.
    fn persist_clock(&self, state: &mut State, now: i64) -> Result<(), EngineError> {
        if now <= state.clock_high_water {
            return Ok(());
        }
        self.store
            .write(|tx| session::set_clock_high_water(&self.store, tx, now))?;
        state.clock_high_water = now;
        Ok(())
    }

    /// Marks incidents this device holds but the new grant no longer lists
    /// as closed now, so the ambulance retention window starts.
    fn close_incidents_not_on(
        &self,
        grant: &RoleProfileGrant,
        now: i64,
    ) -> Result<usize, EngineError> {
        self.close_incidents_where(now, |_, nhs| grant.relationship_with(nhs).is_none())
    }

    /// Records that an incident has closed (its patients are forgotten after
    /// the retention window).
    pub fn close_incident(&self, incident_id: &str) -> Result<usize, EngineError> {
        self.close_incidents_where(self.clock.now_ms(), |id, _| id == incident_id)
    }

    fn close_incidents_where(
        &self,
        now: i64,
        closes: impl Fn(&str, &NhsNumber) -> bool,
    ) -> Result<usize, EngineError> {
        let mut closed = 0;
        for mut h in self.store.holdings()? {
            if let HoldReason::Incident {
                incident_id,
                closed_at_ms: closed_at_ms @ None,
            } = &mut h.reason
                && closes(incident_id, &h.nhs_number)
            {
                *closed_at_ms = Some(now);
                let draft = self.device_draft(
                    "incident-closed",
                    Some(h.nhs_number),
                    Some(incident_id.clone()),
                );
                self.store
                    .write(|tx| {
                        self.store.set_holding_tx(tx, &h)?;
                        self.store
                            .append_audit_tx(tx, draft, &self.config.device_id, now)
                            .map(|_| ())
                    })
                    .map_err(EngineError::AuditFailed)?;
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Forgets every patient the retention rules say this device must no
    /// longer hold. Returns how many were forgotten.
    pub fn apply_retention(&self) -> Result<usize, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        self.apply_retention_locked(&mut state, now)
    }

    fn apply_retention_locked(&self, state: &mut State, now: i64) -> Result<usize, EngineError> {
        let locked_out = self
            .store
            .read(|conn| session::load(&self.store, conn))?
            .is_some_and(|r| r.locked_out);
        let grant = state.active.as_ref().map(|a| a.grant.clone());
        let due = due_for_forgetting(
            self.config.device_class,
            &self.config.retention,
            &self.store.holdings()?,
            grant.as_ref(),
            locked_out,
            now,
        );
        let mut forgotten = 0;
        for (nhs, reason) in &due {
            // A record with edits the server does not have yet waits for
            // sync (lock-out is about a device in the wrong hands: it does not).
            if reason.waits_for_unsent() && self.is_unsent(nhs) {
                continue;
            }
            self.forget_locked(state, nhs, reason.code(), now)?;
            forgotten += 1;
        }
        Ok(forgotten)
    }

    /// Forgets every patient this device holds (a remote wipe of a revoked
    /// device: `ForgetReason::RemoteWipe`), each audited; unsent changes go too: a device
    /// revoked is a device in the wrong hands. The audit queue stays, to be
    /// uploaded. Returns how many records were forgotten.
    pub fn forget_everything(&self) -> Result<usize, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        let reason = ForgetReason::RemoteWipe.code();
        let mut forgotten = 0;
        for holding in self.store.holdings()? {
            if self.forget_locked(&mut state, &holding.nhs_number, reason, now)? {
                forgotten += 1;
            }
            self.confirm_sent(&holding.nhs_number)?;
        }
        Ok(forgotten)
    }

    /// Crypto-shreds the patient's record and deletes its rows, with the
    /// audit event in the same transaction. The audit queue is untouched.
    pub fn forget(&self, nhs: &NhsNumber, reason: &str) -> Result<bool, EngineError> {
        let mut state = self.state()?;
        let now = self.clock.now_ms();
        self.forget_locked(&mut state, nhs, reason, now)
    }

    fn forget_locked(
        &self,
        state: &mut State,
        nhs: &NhsNumber,
        reason: &str,
        now: i64,
    ) -> Result<bool, EngineError> {
        state.records.remove(nhs);
        let draft = self.device_draft("forget", Some(*nhs), Some(reason.to_owned()));
        let mut removed = false;
        self.commit_audited(state, draft, now, |tx| {
            removed = self.store.forget_record_tx(tx, nhs)?;
            Ok(())
        })?;
        self.store.checkpoint()?;
        if removed {
            self.record_changed(nhs);
        }
        Ok(removed)
    }
}
