//! The directory's rows in its own SQLite file (`directory.db`), the
//! default store: one connection, WAL, `synchronous=FULL`.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use scr_core::retention::DeviceClass;

use super::rows::{DirectoryRows, NewUser};
use super::{Device, DirectoryError};

const MIGRATIONS: &[&str] = &[
    include_str!("0001_directory.sql"),
    include_str!("0002_users.sql"),
    include_str!("0003_user_revocation.sql"),
    include_str!("0004_revocation_time.sql"),
    include_str!("0005_login_attempts.sql"),
    include_str!("0006_operators.sql"),
];

type R<T> = Result<T, DirectoryError>;

pub struct SqliteDirectory {
    conn: Mutex<Connection>,
}

impl SqliteDirectory {
    pub fn open(path: &Path) -> R<Self> {
        Ok(Self {
            conn: Mutex::new(crate::sqlite::open_durable(path, MIGRATIONS)?),
        })
    }

    fn conn(&self) -> R<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| DirectoryError::Poisoned)
    }
}

/// A device class as the directory stores it (its name).
fn class_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DeviceClass> {
    let name: String = row.get(i)?;
    name.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl DirectoryRows for SqliteDirectory {
    fn insert_token(
        &self,
        hash: &[u8; 32],
        organisation: &str,
        class: DeviceClass,
        expires_at_ms: i64,
    ) -> R<()> {
        self.conn()?.execute(
            "INSERT INTO enrollment_tokens (token_hash, organisation, device_class, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![hash.as_slice(), organisation, class.as_str(), expires_at_ms],
        )?;
        Ok(())
    }

    fn token_usable(&self, hash: &[u8; 32], now_ms: i64) -> R<bool> {
        let conn = self.conn()?;
        let usable: Option<i64> = conn
            .prepare_cached(
                "SELECT 1 FROM enrollment_tokens
                 WHERE token_hash = ?1 AND used_by IS NULL AND expires_at_ms > ?2",
            )?
            .query_row(params![hash.as_slice(), now_ms], |r| r.get(0))
            .optional()?;
        Ok(usable.is_some())
    }

    fn enroll(
        &self,
        key: &[u8; 32],
        hash: &[u8; 32],
        now_ms: i64,
        audit: &mut dyn FnMut(&Device) -> bool,
    ) -> R<Device> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row: Option<(String, DeviceClass)> = tx
            .query_row(
                "SELECT organisation, device_class FROM enrollment_tokens
                 WHERE token_hash = ?1 AND used_by IS NULL AND expires_at_ms > ?2",
                params![hash.as_slice(), now_ms],
                |r| Ok((r.get(0)?, class_at(r, 1)?)),
            )
            .optional()?;
        let (organisation, device_class) = row.ok_or(DirectoryError::BadToken)?;
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
            params![key.as_slice(), hash.as_slice()],
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

    fn token_used_by(&self, key: &[u8; 32]) -> R<Option<[u8; 32]>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT token_hash FROM enrollment_tokens WHERE used_by = ?1",
                [key.as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn device(&self, key: &[u8; 32]) -> R<Option<Device>> {
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

    fn revoke_device(&self, key: &[u8; 32], now_ms: i64) -> R<bool> {
        Ok(self.conn()?.execute(
            "UPDATE devices SET revoked = 1, revoked_at_ms = COALESCE(revoked_at_ms, ?2)
             WHERE key = ?1",
            params![key.as_slice(), now_ms],
        )? > 0)
    }

    fn device_revoked_at(&self, key: &[u8; 32]) -> R<Option<i64>> {
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

    fn revoke_user(&self, user_id: &str, now_ms: i64) -> R<bool> {
        Ok(self.conn()?.execute(
            "UPDATE users SET revoked = 1, revoked_at_ms = ?2 WHERE user_id = ?1 AND revoked = 0",
            params![user_id, now_ms],
        )? > 0)
    }

    fn user_revoked_at(&self, user_id: &str) -> R<Option<i64>> {
        let at: Option<Option<i64>> = self
            .conn()?
            .query_row(
                "SELECT revoked_at_ms FROM users WHERE user_id = ?1 AND revoked != 0",
                [user_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(at.map(|at| at.unwrap_or(0)))
    }

    fn user_revoked(&self, user_id: &str) -> R<bool> {
        let revoked: Option<i64> = self
            .conn()?
            .query_row(
                "SELECT revoked FROM users WHERE user_id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(revoked.unwrap_or(0) != 0)
    }

    fn change_marker(&self) -> R<i64> {
        Ok(self
            .conn()?
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    fn active_device_keys(&self) -> R<Vec<[u8; 32]>> {
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

    fn active_device_count(&self) -> R<i64> {
        Ok(self
            .conn()?
            .query_row("SELECT COUNT(*) FROM devices WHERE revoked = 0", [], |r| {
                r.get(0)
            })?)
    }

    fn put_user(&self, user: &NewUser, passcode_phc: &str) -> R<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO users (user_id, display_name, organisation, job_role, job_role_name, activities,
                                privacy_officer, card_serial, passcode_phc, failed_logins)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)
             ON CONFLICT(user_id) DO UPDATE SET display_name = excluded.display_name,
                 organisation = excluded.organisation, job_role = excluded.job_role,
                 job_role_name = excluded.job_role_name, activities = excluded.activities,
                 privacy_officer = excluded.privacy_officer, card_serial = excluded.card_serial,
                 passcode_phc = excluded.passcode_phc, failed_logins = 0",
            params![
                user.user_id,
                user.display_name,
                user.organisation,
                user.job_role,
                user.job_role_name,
                user.activities.join(","),
                i64::from(user.privacy_officer),
                user.card_serial,
                passcode_phc
            ],
        )?;
        tx.execute(
            "DELETE FROM login_attempts WHERE user_id = ?1",
            [&user.user_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn user(&self, user_id: &str) -> R<Option<(NewUser, String)>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT display_name, organisation, job_role, job_role_name, activities, privacy_officer,
                        card_serial, passcode_phc FROM users WHERE user_id = ?1",
                [user_id],
                |r| {
                    let activities: String = r.get(4)?;
                    Ok((
                        NewUser {
                            user_id: user_id.to_owned(),
                            display_name: r.get(0)?,
                            organisation: r.get(1)?,
                            job_role: r.get(2)?,
                            job_role_name: r.get(3)?,
                            activities: super::split_activities(&activities),
                            privacy_officer: r.get::<_, i64>(5)? != 0,
                            card_serial: r.get(6)?,
                        },
                        r.get(7)?,
                    ))
                },
            )
            .optional()?)
    }

    fn begin_login_attempt(&self, user_id: &str, device: &[u8; 32], max: i64) -> R<bool> {
        Ok(self.conn()?.execute(
            "INSERT INTO login_attempts (user_id, device, failed) VALUES (?1, ?2, 1)
             ON CONFLICT (user_id, device) DO UPDATE SET failed = failed + 1
             WHERE failed < ?3",
            params![user_id, device.as_slice(), max],
        )? == 1)
    }

    fn reset_login_attempts(&self, user_id: &str, device: &[u8; 32]) -> R<()> {
        self.conn()?.execute(
            "DELETE FROM login_attempts WHERE user_id = ?1 AND device = ?2",
            params![user_id, device.as_slice()],
        )?;
        Ok(())
    }

    fn operator_count(&self) -> R<u64> {
        let n: i64 = self
            .conn()?
            .query_row("SELECT COUNT(*) FROM operators", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn put_operator(&self, id: &str, name: &str, passcode_phc: &str, now_ms: i64) -> R<()> {
        self.conn()?.execute(
            "INSERT INTO operators (operator_id, display_name, passcode_phc, failed, added_at_ms)
             VALUES (?1, ?2, ?3, 0, ?4)
             ON CONFLICT(operator_id) DO UPDATE SET display_name = excluded.display_name,
                 passcode_phc = excluded.passcode_phc, failed = 0",
            params![id, name, passcode_phc, now_ms],
        )?;
        Ok(())
    }

    fn count_operator_attempt(&self, id: &str, max: i64) -> R<bool> {
        Ok(self.conn()?.execute(
            "UPDATE operators SET failed = failed + 1 WHERE operator_id = ?1 AND failed < ?2",
            params![id, max],
        )? == 1)
    }

    fn operator_phc(&self, id: &str) -> R<Option<String>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT passcode_phc FROM operators WHERE operator_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn reset_operator_attempts(&self, id: &str) -> R<()> {
        self.conn()?.execute(
            "UPDATE operators SET failed = 0 WHERE operator_id = ?1",
            [id],
        )?;
        Ok(())
    }
}
