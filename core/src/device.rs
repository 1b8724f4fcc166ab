//! A device as an app holds it: one data directory, enrolled once with the
//! server, then logged in online (which opens the engine), unlocked offline,
//! and synced in the background. What enrollment learnt (the device's
//! static key, the server's address and pinned keys) is sealed in the
//! device's own store, so a restart needs only the app's key provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::channel::{self, ChannelError, Hello, Purpose};
use crate::channel::{StaticKeypair, from_hex, hex_key};
use crate::clock::Clock;
use crate::crypto::KeyProvider;
use crate::engine::{Engine, EngineConfig, EngineError, SessionInfo};
use crate::protocol::{LoginRequest, LoginResponse};
use crate::retention::DeviceClass;
use crate::store::{Store, StoreError};
use crate::sync::{DeviceSync, SyncConfig, SyncError};

/// The store file inside the app's data directory.
pub const STORE_FILE: &str = "scr-sync.db";
const ENROLLMENT: &str = "device-enrollment";

/// What the app chooses; everything else comes from enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct DeviceSettings {
    pub device_class: DeviceClass,
    /// An unlocked session locks after this long without use.
    pub idle_timeout_ms: i64,
}

impl DeviceSettings {
    pub fn new(device_class: DeviceClass) -> Self {
        Self {
            device_class,
            idle_timeout_ms: 5 * 60 * 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("this device is not enrolled yet")]
    NotEnrolled,
    #[error("this device is already enrolled")]
    AlreadyEnrolled,
    #[error("log in online once before unlocking offline")]
    NeverLoggedIn,
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server's grant-signing key changed since enrollment")]
    GrantKeyChanged,
    #[error("the server's reply is malformed")]
    Malformed,
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    #[error("cannot reach the server: {0}")]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The store was damaged. It was renamed, never deleted (it may hold
    /// audit events not yet uploaded); the next open starts a new store,
    /// which must be enrolled again.
    #[error("the store was corrupt; it was moved aside as {moved_to} and kept")]
    StoreMovedAside { moved_to: String },
}

/// What enrollment established, sealed in the store.
#[derive(Serialize, Deserialize)]
struct Enrollment {
    device_private_key: [u8; 32],
    server_url: String,
    server_noise_key: [u8; 32],
    device_class: DeviceClass,
    /// Pinned at the first login, over the channel authenticated by
    /// `server_noise_key`.
    grant_key: Option<[u8; 32]>,
}

impl Drop for Enrollment {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.device_private_key);
    }
}

pub struct Device {
    store: Store,
    settings: DeviceSettings,
    clock: Arc<dyn Clock>,
    engine: Mutex<Option<Arc<Engine>>>,
    /// Written to start and stop; read by everything that uses sync, so a
    /// long call (a pass, an encounter) does not hold up the state.
    sync: tokio::sync::RwLock<Option<DeviceSync>>,
    dir: PathBuf,
}

impl Device {
    /// Opens (creating) the device's store in `dir`. If the device was
    /// enrolled and has logged in before, the engine opens too, locked.
    pub fn open(
        dir: &Path,
        keys: &dyn KeyProvider,
        settings: DeviceSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeviceError> {
        std::fs::create_dir_all(dir)
            .map_err(|_| DeviceError::InvalidInput("the data directory cannot be created"))?;
        let store = match Store::open_checked(dir.join(STORE_FILE), keys) {
            Ok(store) => store,
            // Found before anything was written: the file is kept as it was.
            Err(StoreError::Corrupt(_)) => return Err(move_aside(dir, clock.now_ms())),
            Err(e) => return Err(e.into()),
        };
        let device = Self {
            store,
            settings,
            clock,
            engine: Mutex::new(None),
            sync: tokio::sync::RwLock::new(None),
            dir: dir.to_owned(),
        };
        if let Some(enrollment) = device.enrollment()?
            && let Some(grant_key) = enrollment.grant_key
        {
            device.open_engine(&enrollment, grant_key)?;
        }
        Ok(device)
    }

    /// The data directory (its files are sealed).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_enrolled(&self) -> Result<bool, DeviceError> {
        Ok(self.enrollment()?.is_some())
    }

    /// This device's public key, hex: what an administrator revokes.
    pub fn device_key(&self) -> Result<String, DeviceError> {
        let e = self.enrollment()?.ok_or(DeviceError::NotEnrolled)?;
        Ok(hex_key(&keys_of(&e).public()))
    }

    /// Enrolls with the one-time token an administrator issued, pinning the
    /// server's static key (given out of band, with the token).
    pub async fn enroll(
        &self,
        server_url: &str,
        server_key_hex: &str,
        token: &str,
    ) -> Result<(), DeviceError> {
        if self.enrollment()?.is_some() {
            return Err(DeviceError::AlreadyEnrolled);
        }
        if !(server_url.starts_with("ws://") || server_url.starts_with("wss://")) {
            return Err(DeviceError::InvalidInput(
                "the server address must be a ws:// or wss:// URL",
            ));
        }
        let server_noise_key: [u8; 32] = from_hex(server_key_hex)
            .and_then(|k| k.try_into().ok())
            .ok_or(DeviceError::InvalidInput(
            "the server key must be 64 hex digits",
        ))?;
        let keys = StaticKeypair::generate().map_err(|_| DeviceError::Malformed)?;
        let ws = crate::channel::open_websocket(server_url)
            .await
            .map_err(|e| ChannelError::Io(e.to_string()))?;
        let hello = Hello::new(Purpose::Sync, Some(token)).encode();
        // Admitted means enrolled; the channel is not used further.
        drop(channel::connect(ws, &keys, &server_noise_key, &hello).await?);
        let enrollment = Enrollment {
            device_private_key: *keys.private_bytes(),
            server_url: server_url.to_owned(),
            server_noise_key,
            device_class: self.settings.device_class,
            grant_key: None,
        };
        self.save_enrollment(&enrollment)
    }

    /// Logs the user in online: the server checks the credentials and signs
    /// a grant; the engine verifies it and sets `passcode` for unlocking
    /// offline. The first login pins the server's grant key.
    pub async fn login(
        &self,
        user_id: &str,
        card_serial: &str,
        passcode: &str,
    ) -> Result<SessionInfo, DeviceError> {
        let mut enrollment = self.enrollment()?.ok_or(DeviceError::NotEnrolled)?;
        let keys = keys_of(&enrollment);
        let ws = crate::channel::open_websocket(enrollment.server_url.as_str())
            .await
            .map_err(|e| ChannelError::Io(e.to_string()))?;
        let request = LoginRequest {
            user_id: user_id.to_owned(),
            card_serial: card_serial.to_owned(),
            passcode: passcode.to_owned(),
        };
        let response =
            crate::sync::login(ws, &keys, &enrollment.server_noise_key, &request).await?;
        let (grant_hex, grant_key_hex, holdings_doc) = match response {
            LoginResponse::Granted {
                grant_hex,
                grant_key_hex,
                holdings_doc,
            } => (grant_hex, grant_key_hex, holdings_doc),
            LoginResponse::Refused { reason } => return Err(DeviceError::Refused(reason)),
        };
        let grant_key: [u8; 32] = from_hex(&grant_key_hex)
            .and_then(|k| k.try_into().ok())
            .ok_or(DeviceError::Malformed)?;
        match enrollment.grant_key {
            Some(pinned) if pinned != grant_key => return Err(DeviceError::GrantKeyChanged),
            Some(_) => {}
            None => {
                enrollment.grant_key = Some(grant_key);
                self.save_enrollment(&enrollment)?;
            }
        }
        let engine = match self.engine_if_open() {
            Some(engine) => engine,
            None => self.open_engine(&enrollment, grant_key)?,
        };
        let grant = from_hex(&grant_hex).ok_or(DeviceError::Malformed)?;
        let info = engine.login_online(&grant, passcode)?;
        if let Some(doc) = holdings_doc {
            engine.set_holdings_document(&doc)?;
        }
        Ok(info)
    }

    /// Logs the user out: the engine forgets the session (nothing works
    /// until an online login), then the server is told to retire the grant
    /// it issued to this device. Returns whether the server was told
    /// (offline, the grant lasts on the server until it expires; this
    /// device can no longer use it either way).
    pub async fn logout(&self) -> Result<bool, DeviceError> {
        if let Some(engine) = self.engine_if_open() {
            engine.logout()?;
        }
        let enrollment = self.enrollment()?.ok_or(DeviceError::NotEnrolled)?;
        let keys = keys_of(&enrollment);
        Ok(
            crate::sync::retire_grant(&enrollment.server_url, &keys, &enrollment.server_noise_key)
                .await
                .is_ok(),
        )
    }

    /// The engine, once the device has logged in online at least once.
    pub fn engine(&self) -> Result<Arc<Engine>, DeviceError> {
        self.engine_if_open().ok_or(DeviceError::NeverLoggedIn)
    }

    /// Starts background sync (a no-op if it runs already).
    pub async fn start_sync(&self) -> Result<(), DeviceError> {
        let mut sync = self.sync.write().await;
        if sync.is_some() {
            return Ok(());
        }
        let engine = self.engine()?;
        let enrollment = self.enrollment()?.ok_or(DeviceError::NotEnrolled)?;
        let config = SyncConfig::new(
            &enrollment.server_url,
            enrollment.server_noise_key,
            Arc::new(keys_of(&enrollment)),
        );
        *sync = Some(DeviceSync::start(engine, config).await?);
        Ok(())
    }

    /// Stops background sync (pending writes are flushed).
    pub async fn stop_sync(&self) {
        let running = self.sync.write().await.take();
        if let Some(sync) = running {
            sync.stop().await;
        }
    }

    /// When the server refused a change a document here still holds (later
    /// writes to it then wait on it): stops sync, rebuilds those documents
    /// from what the server took (the refused versions kept aside, the rest
    /// written again) and starts sync again. Returns what was rebuilt;
    /// nothing when sync is not running or nothing waits. Should sync not
    /// start again, it is left stopped and the error says why
    /// (`start_sync` tries again).
    pub async fn rebuild_refused(&self) -> Result<Vec<crate::engine::Rebuild>, DeviceError> {
        let mut slot = self.sync.write().await;
        let Some(sync) = slot.take() else {
            return Ok(Vec::new());
        };
        if !sync.holds_refused().await {
            *slot = Some(sync);
            return Ok(Vec::new());
        }
        let (sync, rebuilt) = sync.rebuild_refused().await?;
        *slot = Some(sync);
        Ok(rebuilt?)
    }

    /// Runs `f` with the running sync, or says it is not running.
    pub async fn with_sync<T>(
        &self,
        f: impl AsyncFnOnce(&DeviceSync) -> T,
    ) -> Result<T, DeviceError> {
        let sync = self.sync.read().await;
        let sync = sync.as_ref().ok_or(DeviceError::Sync(SyncError::Stopped))?;
        Ok(f(sync).await)
    }

    fn engine_if_open(&self) -> Option<Arc<Engine>> {
        self.engine.lock().ok().and_then(|e| e.clone())
    }

    fn open_engine(
        &self,
        enrollment: &Enrollment,
        grant_key: [u8; 32],
    ) -> Result<Arc<Engine>, DeviceError> {
        let mut config = EngineConfig::new(
            &hex_key(&keys_of(enrollment).public()),
            enrollment.device_class,
            grant_key,
        );
        config.idle_timeout_ms = self.settings.idle_timeout_ms;
        let engine = Arc::new(Engine::with_store(
            self.store.clone(),
            config,
            self.clock.clone(),
        )?);
        if let Ok(mut slot) = self.engine.lock() {
            *slot = Some(engine.clone());
        }
        Ok(engine)
    }

    fn enrollment(&self) -> Result<Option<Enrollment>, DeviceError> {
        let Some(bytes) = self.store.secret(ENROLLMENT)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| DeviceError::Store(StoreError::BadRow { table: "secrets" }))
    }

    fn save_enrollment(&self, enrollment: &Enrollment) -> Result<(), DeviceError> {
        let bytes =
            Zeroizing::new(serde_json::to_vec(enrollment).map_err(|_| DeviceError::Malformed)?);
        self.store.put_secret(ENROLLMENT, &bytes)?;
        Ok(())
    }
}

fn keys_of(enrollment: &Enrollment) -> StaticKeypair {
    StaticKeypair::from_private(enrollment.device_private_key)
}

/// Renames a damaged store (with its WAL and shared-memory files, so SQLite
/// can still read it for recovery) to `scr-sync-corrupt-<ms>.db`. Nothing
/// is deleted: it may hold audit events the server has not yet received.
fn move_aside(dir: &Path, now_ms: i64) -> DeviceError {
    let stem = format!("scr-sync-corrupt-{now_ms}.db");
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.join(format!("{STORE_FILE}{suffix}"));
        if from.exists()
            && let Err(e) = std::fs::rename(&from, dir.join(format!("{stem}{suffix}")))
        {
            return DeviceError::Store(StoreError::Io(e));
        }
    }
    tracing::error!(moved_to = %stem, "the device store was corrupt and was moved aside");
    DeviceError::StoreMovedAside { moved_to: stem }
}
