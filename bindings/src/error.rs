//! The one error an app sees: what it can act on, with a detail to show.
//! Mapped once here from the core's rich errors; messages carry no patient
//! data, keys or raw database text.

use scr_core::access::DenyReason;
use scr_core::channel::ChannelError;
use scr_core::device::DeviceError;
use scr_core::engine::EngineError;
use scr_core::store::StoreError;
use scr_core::sync::{AccessLogError, EncounterError, SyncError};

#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ScrError {
    /// Unlock with the passcode, or log in online.
    #[error("the session is locked")]
    Locked,
    /// Too many wrong passcodes: log in online.
    #[error("too many wrong passcodes: log in online")]
    LockedOut,
    #[error("wrong passcode; {remaining} tries left")]
    WrongPasscode { remaining: u32 },
    /// Refused by the access rules; `detail` is for the user.
    #[error("access denied: {detail}")]
    AccessDenied { reason: DenyReason, detail: String },
    #[error("not found: {detail}")]
    NotFound { detail: String },
    #[error("invalid input: {detail}")]
    InvalidInput { detail: String },
    /// The server cannot be reached; what is on the device still works.
    #[error("offline: {detail}")]
    Offline { detail: String },
    /// The server answered no (a failed login, a revoked device...).
    #[error("refused by the server: {detail}")]
    Refused { detail: String },
    /// The grant was refused or has expired: log in online.
    #[error("log in online again: {detail}")]
    LoginNeeded { detail: String },
    #[error("the device's storage is full")]
    StorageFull,
    /// The store is damaged. Found on opening, it was moved aside (kept,
    /// never deleted) and opening again starts a new store to enroll.
    #[error("the device's storage is damaged: {detail}")]
    StorageCorrupt { detail: String },
    /// The app's key provider gave no key; try again once it can.
    #[error("the key is unavailable: {detail}")]
    KeyUnavailable { detail: String },
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

impl ScrError {
    pub(crate) fn internal(detail: &str) -> Self {
        ScrError::Internal {
            detail: detail.to_owned(),
        }
    }

    fn denied(reason: DenyReason) -> Self {
        ScrError::AccessDenied {
            reason,
            detail: reason.to_string(),
        }
    }
}

impl From<StoreError> for ScrError {
    fn from(e: StoreError) -> Self {
        let detail = e.to_string();
        match e {
            StoreError::Full(_) => ScrError::StorageFull,
            StoreError::KeyUnavailable(_) => ScrError::KeyUnavailable { detail },
            StoreError::WrongKey
            | StoreError::Tampered { .. }
            | StoreError::BadRow { .. }
            | StoreError::Corrupt(_)
            | StoreError::NewerSchema { .. }
            | StoreError::Document(_) => ScrError::StorageCorrupt { detail },
            StoreError::RecordNotFound
            | StoreError::EntryNotFound
            | StoreError::CompartmentNotHeld(_) => ScrError::NotFound { detail },
            StoreError::RecordExists | StoreError::InvalidEdit(_) => {
                ScrError::InvalidInput { detail }
            }
            StoreError::Crypto(_)
            | StoreError::Io(_)
            | StoreError::Sqlite(_)
            | StoreError::Unreachable
            | StoreError::Statement(_)
            | StoreError::Poisoned => ScrError::Internal { detail },
        }
    }
}

impl From<EngineError> for ScrError {
    fn from(e: EngineError) -> Self {
        let detail = e.to_string();
        match e {
            EngineError::Locked => ScrError::Locked,
            EngineError::LockedOut => ScrError::LockedOut,
            EngineError::WrongPasscode { remaining } => ScrError::WrongPasscode { remaining },
            EngineError::Grant(_) | EngineError::ClockWoundBack => ScrError::LoginNeeded { detail },
            EngineError::Denied(reason) => ScrError::denied(reason),
            EngineError::NotHeld => ScrError::NotFound { detail },
            EngineError::InvalidInput(_) => ScrError::InvalidInput { detail },
            EngineError::AuditFailed(store) | EngineError::Store(store) => store.into(),
        }
    }
}

impl From<ChannelError> for ScrError {
    fn from(e: ChannelError) -> Self {
        let detail = e.to_string();
        match e {
            ChannelError::NotAdmitted | ChannelError::UnknownPeer => ScrError::Refused { detail },
            _ => ScrError::Offline { detail },
        }
    }
}

impl From<SyncError> for ScrError {
    fn from(e: SyncError) -> Self {
        let detail = e.to_string();
        match e {
            SyncError::Engine(e) => e.into(),
            SyncError::BadServerUrl => ScrError::InvalidInput { detail },
            SyncError::Timeout(_) | SyncError::Holdings(_) => ScrError::Offline { detail },
            SyncError::Stopped => ScrError::Offline {
                detail: "sync is not running".to_owned(),
            },
            SyncError::Internal => ScrError::Internal { detail },
        }
    }
}

impl From<DeviceError> for ScrError {
    fn from(e: DeviceError) -> Self {
        let detail = e.to_string();
        match e {
            DeviceError::NotEnrolled | DeviceError::NeverLoggedIn => ScrError::Locked,
            DeviceError::AlreadyEnrolled | DeviceError::InvalidInput(_) => {
                ScrError::InvalidInput { detail }
            }
            DeviceError::Refused(_) | DeviceError::GrantKeyChanged => ScrError::Refused { detail },
            DeviceError::Malformed => ScrError::Internal { detail },
            DeviceError::StoreMovedAside { .. } => ScrError::StorageCorrupt { detail },
            DeviceError::Channel(e) => e.into(),
            DeviceError::Engine(e) => e.into(),
            DeviceError::Store(e) => e.into(),
            DeviceError::Sync(e) => e.into(),
        }
    }
}

impl From<EncounterError> for ScrError {
    fn from(e: EncounterError) -> Self {
        let detail = e.to_string();
        match e {
            EncounterError::Offline(_) | EncounterError::NotYetArrived => {
                ScrError::Offline { detail }
            }
            EncounterError::NoMatch | EncounterError::NoSuchEncounter => {
                ScrError::NotFound { detail }
            }
            EncounterError::Denied(reason) => ScrError::denied(reason),
            EncounterError::Server(_) => ScrError::Refused { detail },
            EncounterError::Malformed => ScrError::Internal { detail },
            EncounterError::Engine(e) => e.into(),
        }
    }
}

impl From<AccessLogError> for ScrError {
    fn from(e: AccessLogError) -> Self {
        let detail = e.to_string();
        match e {
            AccessLogError::Channel(e) => e.into(),
            AccessLogError::Refused(_) => ScrError::Refused { detail },
            AccessLogError::Malformed => ScrError::Internal { detail },
            AccessLogError::Engine(e) => e.into(),
        }
    }
}

/// An NHS number from the app, checked (Modulus 11): a typed error, with
/// the number left out of the detail.
pub(crate) fn nhs_number(input: &str) -> Result<scr_core::NhsNumber, ScrError> {
    scr_core::NhsNumber::parse(input).map_err(|_| ScrError::InvalidInput {
        detail: "not a valid NHS number".to_owned(),
    })
}
