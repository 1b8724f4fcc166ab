//! The engine's error: what went wrong, in terms an app can act on, with
//! the store's detail kept as a source. No patient data in any message.

use crate::access::DenyReason;
use crate::grant::GrantError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the session is locked")]
    Locked,
    #[error("too many wrong passcodes: log in online to continue")]
    LockedOut,
    #[error("wrong passcode; {remaining} tries left")]
    WrongPasscode { remaining: u32 },
    #[error("the role profile grant was refused: {0}")]
    Grant(#[from] GrantError),
    #[error("the device clock is behind a time it has already seen; fix the clock")]
    ClockWoundBack,
    #[error("access denied: {0}")]
    Denied(DenyReason),
    #[error("this device does not hold that patient's record")]
    NotHeld,
    #[error("the audit record could not be written, so nothing was released")]
    AuditFailed(#[source] StoreError),
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    #[error("storage error")]
    Store(#[from] StoreError),
}
