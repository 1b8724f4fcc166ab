//! The server's directory of enrolled devices and enrollment tokens, in its
//! own SQLite file. Tokens are stored only as BLAKE3 hashes:
//! a token is 128 random bits, so its hash cannot be reversed, and the
//! database never holds a usable token.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use scr_core::retention::DeviceClass;

const MIGRATIONS: &[&str] = &[
    include_str!("0001_directory.sql"),
    include_str!("0002_users.sql"),
    include_str!("0003_user_revocation.sql"),
    include_str!("0004_revocation_time.sql"),
    include_str!("0005_login_attempts.sql"),
    include_str!("0006_operators.sql"),
];

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
    #[error("the directory lock was poisoned")]
    Poisoned,
    #[error("the system random number generator failed")]
    Random,
}

/// A device class as the directory stores it (its name).
fn class_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DeviceClass> {
    let name: String = row.get(i)?;
    name.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub struct Directory {
    conn: Mutex<Connection>,
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.trim().as_bytes()).as_bytes()
}

impl Directory {
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        let conn = crate::sqlite::open_durable(path, MIGRATIONS)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, DirectoryError> {
        self.conn.lock().map_err(|_| DirectoryError::Poisoned)
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
        self.conn()?.execute(
            "INSERT INTO enrollment_tokens (token_hash, organisation, device_class, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                token_hash(&token),
                organisation,
                device_class.as_str(),
                expires_at_ms
            ],
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
        audit: impl FnOnce(&Device) -> bool,
    ) -> Result<Device, DirectoryError> {
        let mut conn = self.conn()?;
        // A made-up token is refused on a read, without the write lock
        // every enrollment (and every admin command) waits for.
        let usable: Option<i64> = conn
            .prepare_cached(
                "SELECT 1 FROM enrollment_tokens
                 WHERE token_hash = ?1 AND used_by IS NULL AND expires_at_ms > ?2",
            )?
            .query_row(params![token_hash(token), now_ms], |r| r.get(0))
            .optional()?;
        if usable.is_none() {
            return Err(DirectoryError::BadToken);
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row: Option<(String, DeviceClass)> = tx
            .query_row(
                "SELECT organisation, device_class FROM enrollment_tokens
                 WHERE token_hash = ?1 AND used_by IS NULL AND expires_at_ms > ?2",
                params![token_hash(token), now_ms],
                |r| Ok((r.get(0)?, class_at(r, 1)?)),
            )
            .optional()?;
        let (organisation, device_class) = row.ok_or(DirectoryError::BadToken)?;
        // A revoked key never comes back, whatever token it presents.
        let revoked: Option<i64> = tx
            .query_row(
                "SELECT revoked FROM devices WHERE key = ?1",
                [key.as_slice()],
                |r| r.get(0),
            )
            .optional()?;
        if revoked.is_some_and(|r| r != 0) {
            return Err(DirectoryError::BadToken);
        }
        tx.execute(
            "UPDATE enrollment_tokens SET used_by = ?1 WHERE token_hash = ?2",
            params![key.as_slice(), token_hash(token)],
        )?;
        tx.execute(
            "INSERT INTO devices (key, organisation, device_class, enrolled_at_ms, revoked)
             VALUES (?1, ?2, ?3, ?4, 0)
             ON CONFLICT(key) DO UPDATE SET organisation = excluded.organisation,
                 device_class = excluded.device_class, enrolled_at_ms = excluded.enrolled_at_ms",
            params![key.as_slice(), organisation, device_class.as_str(), now_ms],
        )?;
        let device = Device {
            key: *key,
            organisation,
            device_class,
            enrolled_at_ms: now_ms,
            revoked: false,
        };
        if !audit(&device) {
            return Err(DirectoryError::NotAudited);
        }
        tx.commit()?;
        Ok(device)
    }

    /// The hash of the enrollment token `key` enrolled with.
    pub fn token_used_by(&self, key: &[u8; 32]) -> Result<Option<[u8; 32]>, DirectoryError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT token_hash FROM enrollment_tokens WHERE used_by = ?1",
                [key.as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn device(&self, key: &[u8; 32]) -> Result<Option<Device>, DirectoryError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT organisation, device_class, enrolled_at_ms, revoked FROM devices WHERE key = ?1",
                [key.as_slice()],
                |r| {
                    Ok(Device {
                        key: *key,
                        organisation: r.get(0)?,
                        device_class: class_at(r, 1)?,
                        enrolled_at_ms: r.get(2)?,
                        revoked: r.get::<_, i64>(3)? != 0,
                    })
                },
            )
            .optional()?)
    }

    /// Whether `key` may connect: enrolled and not revoked.
    pub fn is_active(&self, key: &[u8; 32]) -> bool {
        matches!(self.device(key), Ok(Some(d)) if !d.revoked)
    }

    /// Revokes a device (a lost tablet). Returns false if it was unknown.
    pub fn revoke(&self, key: &[u8; 32]) -> Result<bool, DirectoryError> {
        Ok(self.conn()?.execute(
            "UPDATE devices SET revoked = 1, revoked_at_ms = COALESCE(revoked_at_ms, ?2)
             WHERE key = ?1",
            params![key.as_slice(), scr_core::clock::now_ms()],
        )? > 0)
    }

    /// When `key` was revoked, if it was: what it uploads dated after that
    /// is not believed. `Err` when the directory cannot say.
    pub fn device_revoked_at(&self, key: &[u8; 32]) -> Result<Option<i64>, DirectoryError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT revoked_at_ms FROM devices WHERE key = ?1 AND revoked != 0",
                [key.as_slice()],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Revokes a user: no more logins, and devices holding their grant
    /// are told to wipe themselves. Returns false if unknown or already
    /// revoked.
    pub fn revoke_user(&self, user_id: &str) -> Result<bool, DirectoryError> {
        Ok(self.conn()?.execute(
            "UPDATE users SET revoked = 1, revoked_at_ms = ?2 WHERE user_id = ?1 AND revoked = 0",
            params![user_id, scr_core::clock::now_ms()],
        )? > 0)
    }

    /// When each of `users` was revoked, for those who were.
    pub fn users_revoked_at(
        &self,
        users: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, DirectoryError> {
        let conn = self.conn()?;
        let mut out = std::collections::HashMap::new();
        for u in users {
            let at: Option<Option<i64>> = conn
                .query_row(
                    "SELECT revoked_at_ms FROM users WHERE user_id = ?1 AND revoked != 0",
                    [u],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(at) = at {
                out.insert((*u).to_owned(), at.unwrap_or(0));
            }
        }
        Ok(out)
    }

    /// Whether the user was revoked (true if the directory cannot say:
    /// fail closed).
    pub fn user_revoked(&self, user_id: &str) -> bool {
        let Ok(conn) = self.conn() else {
            return true;
        };
        conn.query_row(
            "SELECT revoked FROM users WHERE user_id = ?1",
            [user_id],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map(|r| r.unwrap_or(0) != 0)
        .unwrap_or(true)
    }

    /// Changes when another connection commits (an admin command).
    pub fn data_version(&self) -> Result<i64, DirectoryError> {
        Ok(self
            .conn()?
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// The keys of every enrolled device not revoked.
    pub fn active_device_keys(&self) -> Result<Vec<[u8; 32]>, DirectoryError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT key FROM devices WHERE revoked = 0")?;
        let keys = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys
            .into_iter()
            .filter_map(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .collect())
    }

    pub fn active_device_count(&self) -> Result<i64, DirectoryError> {
        Ok(self
            .conn()?
            .query_row("SELECT COUNT(*) FROM devices WHERE revoked = 0", [], |r| {
                r.get(0)
            })?)
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
