//! `ScrDevice`: the object an app holds. Opening, enrolling, logging in
//! and the session; records, sync and observers are in their own files.

use std::path::Path;
use std::sync::Arc;

use scr_core::clock::SystemClock;
use scr_core::device::{Device, DeviceSettings};
use scr_core::engine::{Engine, SessionInfo};
use scr_core::store::Holding;

use crate::ScrError;
use crate::keys::{Foreign, KeyProvider};
use crate::runtime::run;

#[derive(uniffi::Object)]
pub struct ScrDevice {
    pub(crate) inner: Arc<Device>,
}

impl ScrDevice {
    pub(crate) fn engine(&self) -> Result<Arc<Engine>, ScrError> {
        Ok(self.inner.engine()?)
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl ScrDevice {
    /// Opens (creating) the device's store in `data_dir`, its keys wrapped
    /// by the key from `key_provider`.
    #[uniffi::constructor]
    pub fn open(
        data_dir: String,
        key_provider: Arc<dyn KeyProvider>,
        settings: DeviceSettings,
    ) -> Result<Arc<Self>, ScrError> {
        let device = Device::open(
            Path::new(&data_dir),
            &Foreign(key_provider),
            settings,
            Arc::new(SystemClock),
        )?;
        Ok(Arc::new(Self {
            inner: Arc::new(device),
        }))
    }

    pub fn is_enrolled(&self) -> Result<bool, ScrError> {
        Ok(self.inner.is_enrolled()?)
    }

    /// This device's public key (hex), which an administrator revokes.
    pub fn device_key(&self) -> Result<String, ScrError> {
        Ok(self.inner.device_key()?)
    }

    /// Enrolls with an administrator's one-time token, pinning the server key.
    pub async fn enroll(
        &self,
        server_url: String,
        server_key_hex: String,
        token: String,
    ) -> Result<(), ScrError> {
        let device = self.inner.clone();
        run(async move { Ok(device.enroll(&server_url, &server_key_hex, &token).await?) }).await
    }

    /// Logs in online; `passcode` also unlocks the device offline later.
    pub async fn login(
        &self,
        user_id: String,
        card_serial: String,
        passcode: String,
    ) -> Result<SessionInfo, ScrError> {
        let device = self.inner.clone();
        run(async move { Ok(device.login(&user_id, &card_serial, &passcode).await?) }).await
    }

    /// Logs out: nothing works again until an online login, and the server
    /// retires the grant it issued to this device. True when the server was
    /// told (offline, its copy lasts until it expires).
    pub async fn logout(&self) -> Result<bool, ScrError> {
        let device = self.inner.clone();
        run(async move { Ok(device.logout().await?) }).await
    }

    /// Unlocks offline with the passcode set at the last online login.
    pub fn unlock(&self, passcode: String) -> Result<SessionInfo, ScrError> {
        Ok(self.engine()?.unlock(&passcode)?)
    }

    /// Locks: no decrypted record stays in memory.
    pub fn lock(&self) -> Result<(), ScrError> {
        Ok(self.engine()?.lock()?)
    }

    /// Who is signed in and until when, if the session is unlocked.
    pub fn session(&self) -> Result<Option<SessionInfo>, ScrError> {
        Ok(self.engine()?.session()?)
    }

    /// The patients on this device and why (the caseload, the incidents,
    /// encounters opened online, or the patient's own record).
    pub fn holdings(&self) -> Result<Vec<Holding>, ScrError> {
        Ok(self.engine()?.holdings()?)
    }
}
