//! Staff accounts and their legitimate relationships, and online login: the
//! stand-in for smartcard / CIS2 that checks user id, card serial and
//! passcode and issues a signed role profile grant for one device.

use rusqlite::{OptionalExtension, params};
use scr_core::channel::{LoginRequest, LoginResponse, hex_key, to_hex};
use scr_core::crypto::passcode::{hash_passcode, passcode_matches};
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, MAX_GRANT_MS, RelationshipKind,
    RoleProfileGrant,
};
use scr_core::{NhsNumber, Store};

use crate::directory::{Directory, DirectoryError};

/// Failed logins before an account is locked (until an administrator resets it).
pub const MAX_FAILED_LOGINS: i64 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("no such user")]
    NoSuchUser,
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("directory database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("server store: {0}")]
    Store(#[from] scr_core::StoreError),
}

fn relationships_name(user_id: &str) -> String {
    format!("relationships:{user_id}")
}

impl Directory {
    pub fn add_user(&self, user: &NewUser, passcode: &str) -> Result<(), UserError> {
        if user.user_id.is_empty() || !user.user_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(UserError::Invalid("a user id is letters and digits"));
        }
        if passcode.chars().count() < 4 {
            return Err(UserError::Invalid("a passcode has at least 4 characters"));
        }
        let activities_ok = user.activities.iter().all(|a| {
            a.len() == 5 && a.starts_with('B') && a[1..].chars().all(|c| c.is_ascii_digit())
        });
        if !activities_ok {
            return Err(UserError::Invalid("activity codes look like B0264"));
        }
        let phc = hash_passcode(passcode).ok_or(UserError::Invalid("passcode"))?;
        self.conn()?.execute(
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
                phc
            ],
        )?;
        Ok(())
    }

    fn user(&self, user_id: &str) -> Result<Option<(NewUser, String, i64)>, UserError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT display_name, organisation, job_role, job_role_name, activities, privacy_officer,
                        card_serial, passcode_phc, failed_logins FROM users WHERE user_id = ?1",
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
                            activities: activities.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
                            privacy_officer: r.get::<_, i64>(5)? != 0,
                            card_serial: r.get(6)?,
                        },
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .optional()?)
    }

    fn set_failed_logins(&self, user_id: &str, n: i64) -> Result<(), UserError> {
        self.conn()?.execute(
            "UPDATE users SET failed_logins = ?1 WHERE user_id = ?2",
            params![n, user_id],
        )?;
        Ok(())
    }
}

/// A user's relationships, sealed in the server store (they hold NHS numbers).
pub fn relationships(store: &Store, user_id: &str) -> Result<Vec<GrantRelationship>, UserError> {
    match store.secret(&relationships_name(user_id))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|_| UserError::Invalid("stored relationships are damaged")),
        None => Ok(Vec::new()),
    }
}

/// Adds (or replaces) a relationship between a user and a patient.
pub fn assign(
    store: &Store,
    directory: &Directory,
    user_id: &str,
    nhs: NhsNumber,
    kind: RelationshipKind,
) -> Result<(), UserError> {
    if directory.user(user_id)?.is_none() {
        return Err(UserError::NoSuchUser);
    }
    let mut list = relationships(store, user_id)?;
    list.retain(|r| r.nhs_number != nhs);
    list.push(GrantRelationship {
        nhs_number: nhs,
        kind,
    });
    let bytes = serde_json::to_vec(&list).map_err(|_| UserError::Invalid("relationships"))?;
    store.put_secret(&relationships_name(user_id), &bytes)?;
    Ok(())
}

/// Ends a relationship (a patient leaves the caseload, an incident closes).
pub fn unassign(store: &Store, user_id: &str, nhs: NhsNumber) -> Result<bool, UserError> {
    let mut list = relationships(store, user_id)?;
    let before = list.len();
    list.retain(|r| r.nhs_number != nhs);
    let bytes = serde_json::to_vec(&list).map_err(|_| UserError::Invalid("relationships"))?;
    store.put_secret(&relationships_name(user_id), &bytes)?;
    Ok(list.len() < before)
}

/// Checks the credentials and issues a grant bound to `device_key`, valid
/// for one shift. Every refusal says only that the login failed.
pub fn login(
    directory: &Directory,
    store: &Store,
    signer: &GrantSigner,
    device_key: &[u8; 32],
    request: &LoginRequest,
    now_ms: i64,
) -> LoginResponse {
    let refused = |reason: &str| {
        // Every login attempt is audited; the reason stays on the server.
        let audited = crate::audit::record(
            store,
            &request.user_id,
            "login",
            None,
            scr_core::audit::Outcome::Deny {
                reason: scr_core::access::DenyReason::NotAllowed,
            },
            Some(reason.to_owned()),
        );
        if audited.is_err() {
            tracing::warn!("a refused login could not be audited");
        }
        LoginResponse::Refused {
            reason: reason.to_owned(),
        }
    };
    let Ok(Some((user, phc, failed))) = directory.user(&request.user_id) else {
        return refused("the user id, card or passcode is wrong");
    };
    if failed >= MAX_FAILED_LOGINS {
        return refused("the account is locked: ask an administrator");
    }
    if user.card_serial != request.card_serial || !passcode_matches(&request.passcode, &phc) {
        let _ = directory.set_failed_logins(&user.user_id, failed + 1);
        return refused("the user id, card or passcode is wrong");
    }
    let _ = directory.set_failed_logins(&user.user_id, 0);
    let Ok(relationships) = relationships(store, &user.user_id) else {
        return refused("the server could not read the user's relationships");
    };
    let grant = RoleProfileGrant {
        grant_id: uuid_like(now_ms, device_key),
        principal: GrantPrincipal::Staff {
            user_id: user.user_id,
            display_name: user.display_name,
            job_role: user.job_role,
            job_role_name: user.job_role_name,
            organisation: user.organisation,
            activities: user.activities,
            privacy_officer: user.privacy_officer,
        },
        device_id: hex_key(device_key),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + MAX_GRANT_MS,
        relationships,
    };
    // The share policy decides this device's documents from its current grant.
    let stored = serde_json::to_vec(&grant)
        .ok()
        .map(|bytes| store.put_secret(&crate::policy::grant_secret_name(device_key), &bytes));
    if !matches!(stored, Some(Ok(()))) {
        return refused("the server could not record the session");
    }
    let audited = crate::audit::record(
        store,
        &request.user_id,
        "login",
        None,
        scr_core::audit::Outcome::Permit,
        Some(format!("device {}", &hex_key(device_key)[..16])),
    );
    if audited.is_err() {
        return LoginResponse::Refused {
            reason: "the server could not audit the login".into(),
        };
    }
    LoginResponse::Granted {
        grant_hex: to_hex(&signer.sign(&grant)),
        grant_key_hex: to_hex(&signer.public_key()),
    }
}

fn uuid_like(now_ms: i64, device_key: &[u8; 32]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&now_ms.to_le_bytes());
    h.update(device_key);
    let mut random = [0u8; 16];
    let _ = getrandom::fill(&mut random);
    h.update(&random);
    h.finalize().to_hex()[..32].to_owned()
}
