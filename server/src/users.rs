//! Staff accounts and their legitimate relationships (stored with the
//! grants they go into: `grants`); logging in is `login`.

use rusqlite::{OptionalExtension, params};
use scr_core::crypto::passcode::hash_passcode;
use scr_core::grant::{GrantRelationship, RelationshipKind};
use scr_core::{NhsNumber, Store};

use crate::directory::{Directory, DirectoryError};

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
    #[error(transparent)]
    Grants(#[from] crate::grants::GrantsError),
}

impl Directory {
    pub fn add_user(&self, user: &NewUser, passcode: &str) -> Result<(), UserError> {
        if user.user_id.is_empty() || !user.user_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(UserError::Invalid("a user id is letters and digits"));
        }
        // The ids the trail uses for who is not staff.
        if ["patient", "device", "server", "admin", "unknown"].contains(&user.user_id.as_str()) {
            return Err(UserError::Invalid("that user id is reserved"));
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
        // (Re-adding a user is how an administrator lifts a lock-out.)
        self.conn()?.execute(
            "DELETE FROM login_attempts WHERE user_id = ?1",
            [&user.user_id],
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
}

/// Adds an encounter alongside whatever else the user has with the patient
/// (closing it must not end a caseload), dropping encounters that ended.
pub fn add_encounter(
    store: &Store,
    user_id: &str,
    encounter: GrantRelationship,
) -> Result<(), UserError> {
    let now = scr_core::clock::now_ms();
    crate::grants::edit_relationships(store, user_id, |r| r.holds_at(now), Some(encounter))?;
    Ok(())
}

/// Ends one encounter; true if it was open.
pub fn end_encounter(store: &Store, user_id: &str, encounter_id: &str) -> Result<bool, UserError> {
    Ok(crate::grants::edit_relationships(
        store,
        user_id,
        |r| !is_encounter(r, encounter_id),
        None,
    )?)
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
    crate::grants::edit_relationships(store, user_id, keep, Some(added))?;
    Ok(())
}

/// Ends a relationship (a patient leaves the caseload, an incident closes).
pub fn unassign(store: &Store, user_id: &str, nhs: NhsNumber) -> Result<bool, UserError> {
    Ok(crate::grants::edit_relationships(
        store,
        user_id,
        |r| r.nhs_number != nhs,
        None,
    )?)
}

/// The name a patient sees for a user id, if the directory knows it.
pub fn display_name(directory: &Directory, user_id: &str) -> Option<String> {
    directory
        .user(user_id)
        .ok()
        .flatten()
        .map(|(user, _, _)| user.display_name)
}
