//! The server's directory of enrolled devices, enrollment tokens, users
//! and operators: what each row means and every check made before one is
//! written. Where the rows live is `rows::DirectoryRows`: the embedded
//! SQLite file (`sqlite.rs`, the default) or PostgreSQL, shared by several
//! nodes (`postgres.rs`; ADR 0017). Tokens are stored only as BLAKE3
//! hashes: a token is 128 random bits, so its hash cannot be reversed, and
//! neither database ever holds a usable token.

pub mod postgres;
pub mod rows;
pub mod sqlite;

use std::path::Path;

use scr_core::retention::DeviceClass;

pub use rows::{DirectoryRows, NewUser};

/// What a device was enrolled as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub key: [u8; 32],
    pub organisation: String,
    pub device_class: DeviceClass,
    pub enrolled_at_ms: i64,
    pub revoked: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("an ODS organisation code is 3 to 6 letters and digits")]
    BadOrganisation,
    #[error("the enrollment token is unknown, used or expired")]
    BadToken,
    #[error("the enrollment could not be audited, so it was not made")]
    NotAudited,
    #[error("directory database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("directory database: {0}")]
    Postgres(#[from] crate::pg::PgError),
    #[error("the directory lock was poisoned")]
    Poisoned,
    #[error("the system random number generator failed")]
    Random,
}

/// Activity codes as the directory keeps them (comma-separated).
pub(crate) fn split_activities(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

pub struct Directory {
    rows: Box<dyn DirectoryRows>,
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.trim().as_bytes()).as_bytes()
}

impl Directory {
    /// The directory in its own SQLite file (created if missing).
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        Ok(Self::over(Box::new(sqlite::SqliteDirectory::open(path)?)))
    }

    /// The directory in PostgreSQL, shared with every node on it.
    pub fn on_postgres(pg: crate::pg::Pg) -> Self {
        Self::over(Box::new(postgres::PgDirectory::new(pg)))
    }

    pub fn over(rows: Box<dyn DirectoryRows>) -> Self {
        Self { rows }
    }

    pub(crate) fn rows(&self) -> &dyn DirectoryRows {
        self.rows.as_ref()
    }

    /// A one-time token that enrolls one device for `organisation` as
    /// `device_class`, valid until `expires_at_ms`. Returned once, never stored.
    pub fn create_enrollment_token(
        &self,
        organisation: &str,
        device_class: DeviceClass,
        expires_at_ms: i64,
    ) -> Result<String, DirectoryError> {
        let ods_ok = (3..=6).contains(&organisation.len())
            && organisation.chars().all(|c| c.is_ascii_alphanumeric());
        if !ods_ok {
            return Err(DirectoryError::BadOrganisation);
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|_| DirectoryError::Random)?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.rows.insert_token(
            &token_hash(&token),
            organisation,
            device_class,
            expires_at_ms,
        )?;
        Ok(token)
    }

    /// Enrolls `key` with a token, atomically using the token up. `audit`
    /// runs before the commit: if it cannot record the enrollment, nothing
    /// commits (the token stays unused, the device unenrolled).
    pub fn enroll(
        &self,
        key: &[u8; 32],
        token: &str,
        now_ms: i64,
        mut audit: impl FnMut(&Device) -> bool,
    ) -> Result<Device, DirectoryError> {
        let hash = token_hash(token);
        // A made-up token is refused on a read, without the write lock
        // every enrollment (and every admin command) waits for.
        if !self.rows.token_usable(&hash, now_ms)? {
            return Err(DirectoryError::BadToken);
        }
        self.rows.enroll(key, &hash, now_ms, &mut audit)
    }

    /// The hash of the enrollment token `key` enrolled with.
    pub fn token_used_by(&self, key: &[u8; 32]) -> Result<Option<[u8; 32]>, DirectoryError> {
        self.rows.token_used_by(key)
    }

    pub fn device(&self, key: &[u8; 32]) -> Result<Option<Device>, DirectoryError> {
        self.rows.device(key)
    }

    /// Whether `key` may connect: enrolled and not revoked.
    pub fn is_active(&self, key: &[u8; 32]) -> bool {
        matches!(self.device(key), Ok(Some(d)) if !d.revoked)
    }

    /// Revokes a device (a lost tablet). Returns false if it was unknown.
    pub fn revoke(&self, key: &[u8; 32]) -> Result<bool, DirectoryError> {
        self.rows.revoke_device(key, scr_core::clock::now_ms())
    }

    /// When `key` was revoked, if it was: what it uploads dated after that
    /// is not believed. `Err` when the directory cannot say.
    pub fn device_revoked_at(&self, key: &[u8; 32]) -> Result<Option<i64>, DirectoryError> {
        self.rows.device_revoked_at(key)
    }

    /// Revokes a user: no more logins, and devices holding their grant
    /// are told to wipe themselves. Returns false if unknown or already
    /// revoked.
    pub fn revoke_user(&self, user_id: &str) -> Result<bool, DirectoryError> {
        self.rows.revoke_user(user_id, scr_core::clock::now_ms())
    }

    /// When each of `users` was revoked, for those who were.
    pub fn users_revoked_at(
        &self,
        users: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, DirectoryError> {
        let mut out = std::collections::HashMap::new();
        for u in users {
            if let Some(at) = self.rows.user_revoked_at(u)? {
                out.insert((*u).to_owned(), at);
            }
        }
        Ok(out)
    }

    /// Whether the user was revoked (true if the directory cannot say:
    /// fail closed).
    pub fn user_revoked(&self, user_id: &str) -> bool {
        self.rows.user_revoked(user_id).unwrap_or(true)
    }

    /// Moves when another process or node changed what this one must see.
    pub fn data_version(&self) -> Result<i64, DirectoryError> {
        self.rows.change_marker()
    }

    /// The keys of every enrolled device not revoked.
    pub fn active_device_keys(&self) -> Result<Vec<[u8; 32]>, DirectoryError> {
        self.rows.active_device_keys()
    }

    pub fn active_device_count(&self) -> Result<i64, DirectoryError> {
        self.rows.active_device_count()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_enrollment_that_cannot_be_audited_is_not_made_and_the_token_survives() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::open(&dir.path().join("d.db")).unwrap();
        let now = 1_000;
        let token = directory
            .create_enrollment_token("RX1", DeviceClass::NurseTablet, now + 60_000)
            .unwrap();
        let key = [7u8; 32];
        assert!(matches!(
            directory.enroll(&key, &token, now, |_| false),
            Err(DirectoryError::NotAudited)
        ));
        assert!(!directory.is_active(&key), "not enrolled");
        let mut audited = None;
        let device = directory
            .enroll(&key, &token, now, |d| {
                audited = Some(d.organisation.clone());
                true
            })
            .unwrap();
        assert_eq!(audited.as_deref(), Some("RX1"));
        assert_eq!(device.device_class, DeviceClass::NurseTablet);
        assert!(directory.is_active(&key));
        assert!(matches!(
            directory.enroll(&[8u8; 32], &token, now, |_| true),
            Err(DirectoryError::BadToken)
        ));
    }
}
