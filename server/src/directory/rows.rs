//! The directory's storage interface (ADR 0017): the rows it reads and
//! writes, one method each, implemented by the embedded SQLite file
//! (`sqlite.rs`) and by PostgreSQL (`postgres.rs`). What a row means, and
//! every check made before one is written, stays in `Directory`.
//!
//! Each method is one transaction. Blocking: call off the async runtime.

use scr_core::retention::DeviceClass;

use super::{Device, DirectoryError};

/// A member of staff as the directory records them.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    pub user_id: String,
    pub display_name: String,
    pub organisation: String,
    pub job_role: String,
    pub job_role_name: String,
    pub activities: Vec<String>,
    pub privacy_officer: bool,
    pub card_serial: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

type R<T> = Result<T, DirectoryError>;

pub trait DirectoryRows: Send + Sync {
    /// Records an enrollment token by its hash.
    fn insert_token(
        &self,
        hash: &[u8; 32],
        organisation: &str,
        class: DeviceClass,
        expires_at_ms: i64,
    ) -> R<()>;
    /// Whether the token is unused and unexpired (a read: no lock taken).
    fn token_usable(&self, hash: &[u8; 32], now_ms: i64) -> R<bool>;
    /// Uses the token for `key` and records the device, in one transaction
    /// that holds the token's row: of two nodes presenting one token, one
    /// enrolls. A revoked key is refused whatever its token (`BadToken`).
    /// `audit` runs before the commit; false rolls it all back.
    fn enroll(
        &self,
        key: &[u8; 32],
        hash: &[u8; 32],
        now_ms: i64,
        audit: &mut dyn FnMut(&Device) -> bool,
    ) -> R<Device>;
    /// The hash of the token `key` enrolled with.
    fn token_used_by(&self, key: &[u8; 32]) -> R<Option<[u8; 32]>>;
    fn device(&self, key: &[u8; 32]) -> R<Option<Device>>;
    /// Marks the device revoked (its first revocation time kept).
    fn revoke_device(&self, key: &[u8; 32], now_ms: i64) -> R<bool>;
    fn device_revoked_at(&self, key: &[u8; 32]) -> R<Option<i64>>;
    /// False if unknown or already revoked.
    fn revoke_user(&self, user_id: &str, now_ms: i64) -> R<bool>;
    /// When the user was revoked (0 if before times were kept); `None` if
    /// unknown or not revoked.
    fn user_revoked_at(&self, user_id: &str) -> R<Option<i64>>;
    /// Whether the user is revoked (false if unknown).
    fn user_revoked(&self, user_id: &str) -> R<bool>;
    /// A number that moves when what other processes or nodes must see
    /// changes (SQLite: another connection committed; PostgreSQL: a
    /// counter bumped in every such transaction).
    fn change_marker(&self) -> R<i64>;
    fn active_device_keys(&self) -> R<Vec<[u8; 32]>>;
    fn active_device_count(&self) -> R<i64>;
    /// Adds or replaces a user (with the passcode verifier) and clears
    /// their failed logins, in one transaction.
    fn put_user(&self, user: &NewUser, passcode_phc: &str) -> R<()>;
    /// The user and their passcode verifier.
    fn user(&self, user_id: &str) -> R<Option<(NewUser, String)>>;
    /// Counts one attempt of `user_id` on `device` unless `max` are
    /// outstanding; false then (atomically: parallel guesses cannot
    /// exceed it).
    fn begin_login_attempt(&self, user_id: &str, device: &[u8; 32], max: i64) -> R<bool>;
    fn reset_login_attempts(&self, user_id: &str, device: &[u8; 32]) -> R<()>;
    fn operator_count(&self) -> R<u64>;
    /// Adds or resets (unlocking) an operator account.
    fn put_operator(&self, id: &str, name: &str, passcode_phc: &str, now_ms: i64) -> R<()>;
    /// Counts one attempt unless `max` are outstanding; false then (or
    /// if unknown).
    fn count_operator_attempt(&self, id: &str, max: i64) -> R<bool>;
    fn operator_phc(&self, id: &str) -> R<Option<String>>;
    fn reset_operator_attempts(&self, id: &str) -> R<()>;
}
