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

use crate::directory::{Device, Directory, DirectoryError};
use scr_core::access::DenyReason;
use scr_core::audit::Outcome;

/// Failed logins before an account is locked (until an administrator resets it).
pub const MAX_FAILED_LOGINS: i64 = 5;

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

    pub(crate) fn user(&self, user_id: &str) -> Result<Option<(NewUser, String, i64)>, UserError> {
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

    /// Takes one of the user's allowed attempts; false once they are used up.
    fn begin_login_attempt(&self, user_id: &str) -> Result<bool, UserError> {
        Ok(self.conn()?.execute(
            "UPDATE users SET failed_logins = failed_logins + 1
             WHERE user_id = ?1 AND failed_logins < ?2 AND revoked = 0",
            params![user_id, MAX_FAILED_LOGINS],
        )? == 1)
    }

    fn reset_login_attempts(&self, user_id: &str) -> Result<(), UserError> {
        self.conn()?.execute(
            "UPDATE users SET failed_logins = 0 WHERE user_id = ?1",
            [user_id],
        )?;
        Ok(())
    }
}

/// A user's relationships, sealed in the server store (they hold NHS numbers).
/// Encounters past their end are left out.
pub fn relationships(store: &Store, user_id: &str) -> Result<Vec<GrantRelationship>, UserError> {
    let mut list: Vec<GrantRelationship> = match store.secret(&relationships_name(user_id))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|_| UserError::Invalid("stored relationships are damaged"))?,
        None => Vec::new(),
    };
    let now = scr_core::clock::now_ms();
    list.retain(|r| r.holds_at(now));
    Ok(list)
}

/// Changes a user's stored relationships in one read-modify-write; `keep`
/// decides which stay, `add` is appended. Returns whether any was dropped.
fn edit_relationships(
    store: &Store,
    user_id: &str,
    keep: impl Fn(&GrantRelationship) -> bool,
    add: Option<GrantRelationship>,
) -> Result<bool, UserError> {
    let mut dropped = false;
    store.update_secret(&relationships_name(user_id), |old| {
        let mut list: Vec<GrantRelationship> = old
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let before = list.len();
        list.retain(|r| keep(r));
        dropped = list.len() < before;
        list.extend(add);
        serde_json::to_vec(&list).unwrap_or_default()
    })?;
    Ok(dropped)
}

/// Adds an encounter alongside whatever else the user has with the patient
/// (closing it must not end a caseload), dropping encounters that ended.
pub fn add_encounter(
    store: &Store,
    user_id: &str,
    encounter: GrantRelationship,
) -> Result<(), UserError> {
    let now = scr_core::clock::now_ms();
    edit_relationships(store, user_id, |r| r.holds_at(now), Some(encounter)).map(|_| ())
}

/// Ends one encounter; true if it was open.
pub fn end_encounter(store: &Store, user_id: &str, encounter_id: &str) -> Result<bool, UserError> {
    edit_relationships(store, user_id, |r| !is_encounter(r, encounter_id), None)
}

pub fn is_encounter(r: &GrantRelationship, id: &str) -> bool {
    matches!(&r.kind, RelationshipKind::Encounter { encounter_id, .. } if encounter_id == id)
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
    let added = GrantRelationship {
        nhs_number: nhs,
        kind,
    };
    // An open encounter is kept: it ends by itself.
    let keep = |r: &GrantRelationship| {
        r.nhs_number != nhs || matches!(r.kind, RelationshipKind::Encounter { .. })
    };
    edit_relationships(store, user_id, keep, Some(added)).map(|_| ())
}

/// Ends a relationship (a patient leaves the caseload, an incident closes).
pub fn unassign(store: &Store, user_id: &str, nhs: NhsNumber) -> Result<bool, UserError> {
    edit_relationships(store, user_id, |r| r.nhs_number != nhs, None)
}

/// Checks the credentials and issues a grant bound to `device`, valid for
/// one shift. Every refusal reads the same, whatever failed, and costs the
/// same Argon2 work, so neither message nor timing says which user ids exist.
pub fn login(
    directory: &Directory,
    store: &Store,
    signer: &GrantSigner,
    device: &Device,
    request: &LoginRequest,
    now_ms: i64,
) -> LoginResponse {
    const WRONG: &str =
        "the login failed: check the user id, card and passcode, or ask an administrator";
    let audit = |outcome: Outcome, detail: &str| {
        crate::audit::record(
            store,
            &request.user_id,
            "login",
            None,
            outcome,
            Some(detail.to_owned()),
        )
    };
    let refuse = |detail: &str| {
        if audit(
            Outcome::Deny {
                reason: DenyReason::NotAllowed,
            },
            detail,
        )
        .is_err()
        {
            tracing::warn!("a refused login could not be audited");
        }
        LoginResponse::Refused {
            reason: WRONG.to_owned(),
        }
    };
    let found = directory.user(&request.user_id).ok().flatten();
    // Count the attempt before checking it (at most MAX_FAILED_LOGINS
    // outstanding, atomically), so parallel guesses cannot exceed it.
    let allowed = found.is_some()
        && directory
            .begin_login_attempt(&request.user_id)
            .unwrap_or(false);
    // A patient's own phone logs in as that patient.
    if device.device_class == "patient-phone" {
        return crate::patients::login(directory, store, signer, device, request, now_ms);
    }
    let dummy =
        DUMMY_PHC.get_or_init(|| hash_passcode("scr-sync: no such user").unwrap_or_default());
    let phc = found
        .as_ref()
        .map(|(_, phc, _)| phc.as_str())
        .unwrap_or(dummy);
    let passcode_ok = passcode_matches(&request.passcode, phc);
    let Some((user, _, _)) = found else {
        return refuse("unknown user");
    };
    if !allowed {
        return refuse("account locked or revoked");
    }
    if user.card_serial != request.card_serial || !passcode_ok {
        return refuse("wrong card or passcode");
    }
    // The device must suit the user: staff on a staff device of their own
    // organisation (patients log in through their own phone's enrollment).
    if device.device_class == "patient-phone" || device.organisation != user.organisation {
        return refuse("device does not belong to the user's organisation");
    }
    let _ = directory.reset_login_attempts(&user.user_id);
    let Ok(relationships) = relationships(store, &user.user_id) else {
        return refuse("relationships unreadable");
    };
    let grant = RoleProfileGrant {
        grant_id: grant_id(now_ms, &device.key),
        principal: GrantPrincipal::Staff {
            user_id: user.user_id,
            display_name: user.display_name,
            job_role: user.job_role,
            job_role_name: user.job_role_name,
            organisation: user.organisation,
            activities: user.activities,
            privacy_officer: user.privacy_officer,
        },
        device_id: hex_key(&device.key),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + MAX_GRANT_MS,
        relationships,
    };
    // Audit first: a grant the trail does not show is never issued.
    if audit(
        Outcome::Permit,
        &format!("device {}", &hex_key(&device.key)[..16]),
    )
    .is_err()
    {
        return LoginResponse::Refused {
            reason: WRONG.to_owned(),
        };
    }
    // The share policy decides this device's documents from its current grant.
    let stored = serde_json::to_vec(&grant)
        .ok()
        .map(|bytes| store.put_secret(&crate::policy::grant_secret_name(&device.key), &bytes));
    if !matches!(stored, Some(Ok(()))) {
        return refuse("the session could not be recorded");
    }
    LoginResponse::Granted {
        grant_hex: to_hex(&signer.sign(&grant)),
        grant_key_hex: to_hex(&signer.public_key()),
        holdings_doc: None,
    }
}

/// A verifier checked when the user id is unknown, so the work done is the
/// same as for a real account.
static DUMMY_PHC: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A grant's id: unique per login.
pub(crate) fn grant_id(now_ms: i64, device_key: &[u8; 32]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&now_ms.to_le_bytes());
    h.update(device_key);
    let mut random = [0u8; 16];
    let _ = getrandom::fill(&mut random);
    h.update(&random);
    h.finalize().to_hex()[..32].to_owned()
}

/// The name a patient sees for a user id, if the directory knows it.
pub fn display_name(directory: &Directory, user_id: &str) -> Option<String> {
    directory
        .user(user_id)
        .ok()
        .flatten()
        .map(|(user, _, _)| user.display_name)
}
