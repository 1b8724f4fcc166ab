//! The one error an app sees: what it can act on, with a message to show.
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
    /// Refused by the access rules; `message` is for the user.
    #[error("access denied: {message}")]
    AccessDenied { reason: DenyReason, message: String },
    #[error("not found: {message}")]
    NotFound { message: String },
    #[error("invalid input: {message}")]
    InvalidInput { message: String },
    /// The server cannot be reached; what is on the device still works.
    #[error("offline: {message}")]
    Offline { message: String },
    /// The server answered no (a failed login, a revoked device...).
    #[error("refused by the server: {message}")]
    Refused { message: String },
    /// The grant was refused or has expired: log in online.
    #[error("log in online again: {message}")]
    LoginNeeded { message: String },
    #[error("the device's storage is full")]
    StorageFull,
    #[error("the device's storage is damaged: {message}")]
    StorageCorrupt { message: String },
    /// The app's key provider gave no key; try again once it can.
    #[error("the key is unavailable: {message}")]
    KeyUnavailable { message: String },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl ScrError {
    pub(crate) fn internal(message: &str) -> Self {
        ScrError::Internal {
            message: message.to_owned(),
        }
    }

    fn denied(reason: DenyReason) -> Self {
        ScrError::AccessDenied {
            reason,
            message: reason.to_string(),
        }
    }
}

impl From<StoreError> for ScrError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::Full(_) => ScrError::StorageFull,
            StoreError::KeyUnavailable(_) => ScrError::KeyUnavailable { message },
            StoreError::WrongKey
            | StoreError::Tampered { .. }
            | StoreError::BadRow { .. }
            | StoreError::Corrupt(_)
            | StoreError::NewerSchema { .. }
            | StoreError::Document(_) => ScrError::StorageCorrupt { message },
            StoreError::RecordNotFound
            | StoreError::EntryNotFound
            | StoreError::CompartmentNotHeld(_) => ScrError::NotFound { message },
            StoreError::RecordExists | StoreError::InvalidEdit(_) => {
                ScrError::InvalidInput { message }
            }
            StoreError::Crypto(_)
            | StoreError::Io(_)
            | StoreError::Sqlite(_)
            | StoreError::Poisoned => ScrError::Internal { message },
        }
    }
}

impl From<EngineError> for ScrError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::Locked => ScrError::Locked,
            EngineError::LockedOut => ScrError::LockedOut,
            EngineError::WrongPasscode { remaining } => ScrError::WrongPasscode { remaining },
            EngineError::Grant(_) | EngineError::ClockWoundBack => {
                ScrError::LoginNeeded { message }
            }
            EngineError::Denied(reason) => ScrError::denied(reason),
            EngineError::NotHeld => ScrError::NotFound { message },
            EngineError::InvalidInput(_) => ScrError::InvalidInput { message },
            EngineError::AuditFailed(store) | EngineError::Store(store) => store.into(),
        }
    }
}

impl From<ChannelError> for ScrError {
    fn from(e: ChannelError) -> Self {
        let message = e.to_string();
        match e {
            ChannelError::NotAdmitted | ChannelError::UnknownPeer => ScrError::Refused { message },
            _ => ScrError::Offline { message },
        }
    }
}

impl From<SyncError> for ScrError {
    fn from(e: SyncError) -> Self {
        let message = e.to_string();
        match e {
            SyncError::Engine(e) => e.into(),
            SyncError::BadServerUrl => ScrError::InvalidInput { message },
            SyncError::Timeout(_) | SyncError::Holdings(_) => ScrError::Offline { message },
            SyncError::Stopped => ScrError::Offline {
                message: "sync is not running".to_owned(),
            },
            SyncError::Internal => ScrError::Internal { message },
        }
    }
}

impl From<DeviceError> for ScrError {
    fn from(e: DeviceError) -> Self {
        let message = e.to_string();
        match e {
            DeviceError::NotEnrolled | DeviceError::NeverLoggedIn => ScrError::Locked,
            DeviceError::AlreadyEnrolled | DeviceError::InvalidInput(_) => {
                ScrError::InvalidInput { message }
            }
            DeviceError::Refused(_) | DeviceError::GrantKeyChanged => ScrError::Refused { message },
            DeviceError::Malformed => ScrError::Internal { message },
            DeviceError::Channel(e) => e.into(),
            DeviceError::Engine(e) => e.into(),
            DeviceError::Store(e) => e.into(),
            DeviceError::Sync(e) => e.into(),
        }
    }
}

impl From<EncounterError> for ScrError {
    fn from(e: EncounterError) -> Self {
        let message = e.to_string();
        match e {
            EncounterError::Offline(_) | EncounterError::NotYetArrived => {
                ScrError::Offline { message }
            }
            EncounterError::NoMatch | EncounterError::NoSuchEncounter => {
                ScrError::NotFound { message }
            }
            EncounterError::Denied(reason) => ScrError::denied(reason),
            EncounterError::Server(_) => ScrError::Refused { message },
            EncounterError::Malformed => ScrError::Internal { message },
            EncounterError::Engine(e) => e.into(),
        }
    }
}

impl From<AccessLogError> for ScrError {
    fn from(e: AccessLogError) -> Self {
        let message = e.to_string();
        match e {
            AccessLogError::Channel(e) => e.into(),
            AccessLogError::Refused(_) => ScrError::Refused { message },
            AccessLogError::Malformed => ScrError::Internal { message },
            AccessLogError::Engine(e) => e.into(),
        }
    }
}

/// An NHS number from the app, checked (Modulus 11): a typed error, with
/// the number left out of the message.
pub(crate) fn nhs_number(input: &str) -> Result<scr_core::NhsNumber, ScrError> {
    scr_core::NhsNumber::parse(input).map_err(|_| ScrError::InvalidInput {
        message: "not a valid NHS number".to_owned(),
    })
}
