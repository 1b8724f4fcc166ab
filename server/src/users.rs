//! Staff accounts and their legitimate relationships (stored with the
//! grants they go into: `grants`); logging in is `login`.

use scr_core::crypto::passcode::hash_passcode;
use scr_core::grant::{GrantRelationship, RelationshipKind};
use scr_core::{NhsNumber, Store};

use crate::directory::{Directory, DirectoryError};

pub use crate::directory::NewUser;

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
        // (Re-adding a user is how an administrator lifts a lock-out: their
        // failed logins are cleared in the same transaction.)
        self.rows().put_user(user, &phc)?;
        Ok(())
    }

    /// The user and their passcode verifier.
    pub(crate) fn user(&self, user_id: &str) -> Result<Option<(NewUser, String)>, UserError> {
        Ok(self.rows().user(user_id)?)
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
        .map(|(user, _)| user.display_name)
}
