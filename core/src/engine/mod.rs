//! The engine a device app holds: the encrypted store, the session (who is
//! acting, unlocked or not), and every record operation gated by the access
//! decision and recorded in the audit queue before anything is released.

mod audit_queue;
mod audited;
mod catalogue;
mod encounter;
mod error;
mod forgetting;
mod login;
mod rebuild;
mod records;
mod session;
mod sync_status;
mod sync_support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::NhsNumber;
use crate::clock::Clock;
use crate::crypto::KeyProvider;
use crate::grant::{CLOCK_SKEW_MS, GrantPrincipal, RoleProfileGrant};
use crate::replica::PatientReplica;
use crate::retention::{DeviceClass, RetentionPolicy};
use crate::store::{HoldReason, Store};

pub use audit_queue::AuditBacklog;
pub use catalogue::HeldRecord;
pub use error::EngineError;
pub use rebuild::{QuarantinedVersion, Rebuild};
pub use records::ReleasedView;
pub use sync_status::RecordSyncStatus;
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
    /// A record opened in the app stays one encounter (its alerts raised
    /// once) until this long passes without a view of it
    /// (`access::Encounter`).
    pub encounter_window_ms: i64,
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
            encounter_window_ms: crate::access::ENCOUNTER_MS,
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
    /// How long the current grant has been in use (monotonic time),
    /// persisted with every audit record committed on its own or with a
    /// change.
    grant_age: session::GrantAge,
    /// The encounter with each patient this session is in (in memory: a
    /// restart begins new ones).
    encounters: HashMap<NhsNumber, crate::access::Encounter>,
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
        let grant_age = session::GrantAge {
            stored_ms: store.read(|conn| session::grant_age(&store, conn))?,
            mono_at: clock.monotonic_ms(),
        };
        Ok(Self {
            store,
            config,
            clock,
            state: Mutex::new(State {
                active: None,
                records: HashMap::new(),
                clock_high_water,
                grant_age,
                encounters: HashMap::new(),
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

    /// Drops the in-memory copy of a record, so the next use reads what sync
    /// (or another writer) has merged into the store since.
    pub fn reload(&self, nhs: &NhsNumber) -> Result<(), EngineError> {
        self.state()?.records.remove(nhs);
        Ok(())
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
}
