//! The directory's rows in PostgreSQL (`server/src/pg/0001_directory.sql`),
//! shared by every node. What another node must see (an enrollment, a
//! revocation, a user changed) bumps the `directory` change counter in the
//! same transaction.

use deadpool_postgres::GenericClient;
use scr_core::retention::DeviceClass;

use super::rows::{DirectoryRows, NewUser};
use super::{Device, DirectoryError};
use crate::pg::{Pg, PgError, client, failed};

type R<T> = Result<T, DirectoryError>;

pub struct PgDirectory {
    pg: Pg,
}

impl PgDirectory {
    pub fn new(pg: Pg) -> Self {
        Self { pg }
    }
}

/// How long an enrollment holds its token's row for the caller's audit.
const AUDIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What other nodes must see changed: the directory's counter bumped and
/// a notice sent, both in the caller's transaction (`pg::listen`).
async fn bump(c: &impl GenericClient) -> Result<(), PgError> {
    c.batch_execute(&format!(
        "UPDATE change_counters SET seq = seq + 1 WHERE concern = 'directory'; {}",
        crate::pg::listen::notify_sql("directory")
    ))
    .await
    .map_err(failed("directory change"))
}

fn class(name: &str) -> Result<DeviceClass, PgError> {
    name.parse()
        .map_err(|_| PgError::Statement("a device class the directory does not know"))
}

fn key32(bytes: &[u8]) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).ok()
}

/// One statement's affected rows.
async fn exec(
    c: &impl GenericClient,
    what: &'static str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, PgError> {
    c.execute(sql, params).await.map_err(failed(what))
}

impl DirectoryRows for PgDirectory {
    fn insert_token(
        &self,
        hash: &[u8; 32],
        organisation: &str,
        class: DeviceClass,
        expires_at_ms: i64,
    ) -> R<()> {
        let (hash, organisation) = (hash.to_vec(), organisation.to_owned());
        let class = class.as_str().to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            exec(
                &c,
                "insert token",
                "INSERT INTO enrollment_tokens (token_hash, organisation, device_class, expires_at_ms)
                 VALUES ($1, $2, $3, $4)",
                &[&hash, &organisation, &class, &expires_at_ms],
            )
            .await
            .map(|_| ())
        })?)
    }

    fn token_usable(&self, hash: &[u8; 32], now_ms: i64) -> R<bool> {
        let hash = hash.to_vec();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT 1 FROM enrollment_tokens
                     WHERE token_hash = $1 AND used_by IS NULL AND expires_at_ms > $2",
                    &[&hash, &now_ms],
                )
                .await
                .map_err(failed("token"))?;
            Ok(row.is_some())
        })?)
    }

    fn enroll(
        &self,
        key: &[u8; 32],
        hash: &[u8; 32],
        now_ms: i64,
        audit: &mut dyn FnMut(&Device) -> bool,
    ) -> R<Device> {
        // The token's row is locked (FOR UPDATE) by a transaction held open
        // until the caller's audit says yes: a second node presenting the
        // same token waits for it, then finds the token used.
        let (k, h, device_key) = (key.to_vec(), hash.to_vec(), *key);
        let (to_caller, proposed) = std::sync::mpsc::sync_channel::<R<Device>>(1);
        let (decide, decided) = tokio::sync::oneshot::channel::<bool>();
        let done = self.pg.spawn(|pool| async move {
            let mut c = match client(&pool).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = to_caller.send(Err(e.into()));
                    return Ok(false);
                }
            };
            let tx = match c.transaction().await {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = to_caller.send(Err(failed("enroll begin")(e).into()));
                    return Ok(false);
                }
            };
            let staged: R<Device> = async {
                let row = tx
                    .query_opt(
                        "SELECT organisation, device_class FROM enrollment_tokens
                         WHERE token_hash = $1 AND used_by IS NULL AND expires_at_ms > $2
                         FOR UPDATE",
                        &[&h, &now_ms],
                    )
                    .await
                    .map_err(failed("enroll token"))?;
                let Some(row) = row else {
                    return Err(DirectoryError::BadToken);
                };
                let (organisation, class_name): (String, String) = (row.get(0), row.get(1));
                let revoked = tx
                    .query_opt("SELECT revoked FROM devices WHERE key = $1", &[&k])
                    .await
                    .map_err(failed("enroll device"))?
                    .is_some_and(|r| r.get::<_, bool>(0));
                if revoked {
                    return Err(DirectoryError::BadToken);
                }
                exec(
                    &tx,
                    "enroll use token",
                    "UPDATE enrollment_tokens SET used_by = $1 WHERE token_hash = $2",
                    &[&k, &h],
                )
                .await?;
                exec(
                    &tx,
                    "enroll device",
                    "INSERT INTO devices (key, organisation, device_class, enrolled_at_ms, revoked)
                     VALUES ($1, $2, $3, $4, FALSE)
                     ON CONFLICT (key) DO UPDATE SET organisation = excluded.organisation,
                         device_class = excluded.device_class,
                         enrolled_at_ms = excluded.enrolled_at_ms",
                    &[&k, &organisation, &class_name, &now_ms],
                )
                .await?;
                Ok(Device {
                    key: device_key,
                    organisation,
                    device_class: class(&class_name)?,
                    enrolled_at_ms: now_ms,
                    revoked: false,
                })
            }
            .await;
            let staged_ok = staged.is_ok();
            let _ = to_caller.send(staged);
            // Rolled back unless the caller's audit recorded it (in time:
            // the token's row is held meanwhile). The change counter, a
            // row every node's writes share, is taken only now.
            let audited = tokio::time::timeout(AUDIT_WAIT, decided).await;
            if staged_ok && matches!(audited, Ok(Ok(true))) {
                bump(&tx).await?;
                tx.commit().await.map_err(failed("enroll commit"))?;
                return Ok(true);
            }
            Ok::<bool, PgError>(false)
        });
        let device = proposed.recv().map_err(|_| PgError::Runtime)??;
        let audited = audit(&device);
        let _ = decide.send(audited);
        let committed = done.recv().map_err(|_| PgError::Runtime)??;
        if !audited {
            return Err(DirectoryError::NotAudited);
        }
        if !committed {
            // The audit came after the token's row was let go.
            return Err(PgError::Statement("enroll commit").into());
        }
        Ok(device)
    }

    fn token_used_by(&self, key: &[u8; 32]) -> R<Option<[u8; 32]>> {
        let key = key.to_vec();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT token_hash FROM enrollment_tokens WHERE used_by = $1 LIMIT 1",
                    &[&key],
                )
                .await
                .map_err(failed("token used by"))?;
            Ok(row.and_then(|r| key32(r.get::<_, &[u8]>(0))))
        })?)
    }

    fn device(&self, key: &[u8; 32]) -> R<Option<Device>> {
        let k = key.to_vec();
        let row = self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT organisation, device_class, enrolled_at_ms, revoked
                     FROM devices WHERE key = $1",
                    &[&k],
                )
                .await
                .map_err(failed("device"))?;
            Ok(row.map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, bool>(3),
                )
            }))
        })?;
        let Some((organisation, class_name, enrolled_at_ms, revoked)) = row else {
            return Ok(None);
        };
        Ok(Some(Device {
            key: *key,
            organisation,
            device_class: class(&class_name)?,
            enrolled_at_ms,
            revoked,
        }))
    }

    fn revoke_device(&self, key: &[u8; 32], now_ms: i64) -> R<bool> {
        let key = key.to_vec();
        Ok(self.pg.run(|pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(failed("revoke begin"))?;
            let n = exec(
                &tx,
                "revoke device",
                "UPDATE devices SET revoked = TRUE, revoked_at_ms = COALESCE(revoked_at_ms, $2)
                 WHERE key = $1",
                &[&key, &now_ms],
            )
            .await?;
            bump(&tx).await?;
            tx.commit().await.map_err(failed("revoke commit"))?;
            Ok(n > 0)
        })?)
    }

    fn device_revoked_at(&self, key: &[u8; 32]) -> R<Option<i64>> {
        let key = key.to_vec();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT revoked_at_ms FROM devices WHERE key = $1 AND revoked",
                    &[&key],
                )
                .await
                .map_err(failed("device revoked at"))?;
            Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
        })?)
    }

    fn revoke_user(&self, user_id: &str, now_ms: i64) -> R<bool> {
        let user_id = user_id.to_owned();
        Ok(self.pg.run(|pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(failed("revoke user begin"))?;
            let n = exec(
                &tx,
                "revoke user",
                "UPDATE users SET revoked = TRUE, revoked_at_ms = $2
                 WHERE user_id = $1 AND NOT revoked",
                &[&user_id, &now_ms],
            )
            .await?;
            bump(&tx).await?;
            tx.commit().await.map_err(failed("revoke user commit"))?;
            Ok(n > 0)
        })?)
    }

    fn user_revoked_at(&self, user_id: &str) -> R<Option<i64>> {
        let user_id = user_id.to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT revoked_at_ms FROM users WHERE user_id = $1 AND revoked",
                    &[&user_id],
                )
                .await
                .map_err(failed("user revoked at"))?;
            Ok(row.map(|r| r.get::<_, Option<i64>>(0).unwrap_or(0)))
        })?)
    }

    fn user_revoked(&self, user_id: &str) -> R<bool> {
        let user_id = user_id.to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt("SELECT revoked FROM users WHERE user_id = $1", &[&user_id])
                .await
                .map_err(failed("user revoked"))?;
            Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
        })?)
    }

    fn change_marker(&self) -> R<i64> {
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_one(
                    "SELECT seq FROM change_counters WHERE concern = 'directory'",
                    &[],
                )
                .await
                .map_err(failed("change counter"))?;
            Ok(row.get::<_, i64>(0))
        })?)
    }

    fn active_device_keys(&self) -> R<Vec<[u8; 32]>> {
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query("SELECT key FROM devices WHERE NOT revoked", &[])
                .await
                .map_err(failed("active devices"))?;
            Ok(rows
                .iter()
                .filter_map(|r| key32(r.get::<_, &[u8]>(0)))
                .collect())
        })?)
    }

    fn active_device_count(&self) -> R<i64> {
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_one("SELECT COUNT(*) FROM devices WHERE NOT revoked", &[])
                .await
                .map_err(failed("active device count"))?;
            Ok(row.get::<_, i64>(0))
        })?)
    }

    fn put_user(&self, user: &NewUser, passcode_phc: &str) -> R<()> {
        let (user, phc) = (user.clone(), passcode_phc.to_owned());
        Ok(self.pg.run(|pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(failed("user begin"))?;
            exec(
                &tx,
                "put user",
                "INSERT INTO users (user_id, display_name, organisation, job_role, job_role_name,
                                    activities, privacy_officer, card_serial, passcode_phc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name,
                     organisation = excluded.organisation, job_role = excluded.job_role,
                     job_role_name = excluded.job_role_name, activities = excluded.activities,
                     privacy_officer = excluded.privacy_officer,
                     card_serial = excluded.card_serial, passcode_phc = excluded.passcode_phc",
                &[
                    &user.user_id,
                    &user.display_name,
                    &user.organisation,
                    &user.job_role,
                    &user.job_role_name,
                    &user.activities.join(","),
                    &user.privacy_officer,
                    &user.card_serial,
                    &phc,
                ],
            )
            .await?;
            exec(
                &tx,
                "clear attempts",
                "DELETE FROM login_attempts WHERE user_id = $1",
                &[&user.user_id],
            )
            .await?;
            bump(&tx).await?;
            tx.commit().await.map_err(failed("user commit"))
        })?)
    }

    fn user(&self, user_id: &str) -> R<Option<(NewUser, String)>> {
        let id = user_id.to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT display_name, organisation, job_role, job_role_name, activities,
                            privacy_officer, card_serial, passcode_phc
                     FROM users WHERE user_id = $1",
                    &[&id],
                )
                .await
                .map_err(failed("user"))?;
            Ok(row.map(|r| {
                (
                    NewUser {
                        user_id: id.clone(),
                        display_name: r.get(0),
                        organisation: r.get(1),
                        job_role: r.get(2),
                        job_role_name: r.get(3),
                        activities: super::split_activities(r.get::<_, &str>(4)),
                        privacy_officer: r.get(5),
                        card_serial: r.get(6),
                    },
                    r.get::<_, String>(7),
                )
            }))
        })?)
    }

    fn begin_login_attempt(&self, user_id: &str, device: &[u8; 32], max: i64) -> R<bool> {
        let (user_id, device) = (user_id.to_owned(), device.to_vec());
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let n = exec(
                &c,
                "login attempt",
                "INSERT INTO login_attempts AS a (user_id, device, failed) VALUES ($1, $2, 1)
                 ON CONFLICT (user_id, device) DO UPDATE SET failed = a.failed + 1
                 WHERE a.failed < $3",
                &[&user_id, &device, &max],
            )
            .await?;
            Ok(n == 1)
        })?)
    }

    fn reset_login_attempts(&self, user_id: &str, device: &[u8; 32]) -> R<()> {
        let (user_id, device) = (user_id.to_owned(), device.to_vec());
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            exec(
                &c,
                "reset attempts",
                "DELETE FROM login_attempts WHERE user_id = $1 AND device = $2",
                &[&user_id, &device],
            )
            .await
            .map(|_| ())
        })?)
    }

    fn operator_count(&self) -> R<u64> {
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM operators", &[])
                .await
                .map_err(failed("operator count"))?
                .get(0);
            Ok(n.max(0) as u64)
        })?)
    }

    fn put_operator(&self, id: &str, name: &str, passcode_phc: &str, now_ms: i64) -> R<()> {
        let (id, name, phc) = (id.to_owned(), name.to_owned(), passcode_phc.to_owned());
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            exec(
                &c,
                "put operator",
                "INSERT INTO operators (operator_id, display_name, passcode_phc, failed, added_at_ms)
                 VALUES ($1, $2, $3, 0, $4)
                 ON CONFLICT (operator_id) DO UPDATE SET display_name = excluded.display_name,
                     passcode_phc = excluded.passcode_phc, failed = 0",
                &[&id, &name, &phc, &now_ms],
            )
            .await
            .map(|_| ())
        })?)
    }

    fn count_operator_attempt(&self, id: &str, max: i64) -> R<bool> {
        let id = id.to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let n = exec(
                &c,
                "operator attempt",
                "UPDATE operators SET failed = failed + 1 WHERE operator_id = $1 AND failed < $2",
                &[&id, &max],
            )
            .await?;
            Ok(n == 1)
        })?)
    }

    fn operator_phc(&self, id: &str) -> R<Option<String>> {
        let id = id.to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt(
                    "SELECT passcode_phc FROM operators WHERE operator_id = $1",
                    &[&id],
                )
                .await
                .map_err(failed("operator"))?;
            Ok(row.map(|r| r.get::<_, String>(0)))
        })?)
    }

    fn reset_operator_attempts(&self, id: &str) -> R<()> {
        let id = id.to_owned();
        Ok(self.pg.run(|pool| async move {
            let c = client(&pool).await?;
            exec(
                &c,
                "reset operator",
                "UPDATE operators SET failed = 0 WHERE operator_id = $1",
                &[&id],
            )
            .await
            .map(|_| ())
        })?)
    }
}
