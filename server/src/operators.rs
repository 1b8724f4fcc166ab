//! Who runs the admin commands: named operator accounts, each with an
//! Argon2id passcode as staff have, and the privacy officers, who prove
//! who they are with their own staff passcode. Every admin action is
//! audited under the id that proved itself; an attempt that does not
//! prove itself is refused (and audited by the caller). Failed attempts
//! are counted before each check; five lock the account until another
//! operator adds it again.

use scr_core::crypto::passcode::{hash_passcode, passcode_matches};

use crate::directory::Directory;
use crate::login::MAX_FAILED_LOGINS;
use crate::users::UserError;

/// The device key the admin command line counts staff attempts under: a
/// hash, whose private key nobody knows, so no device can share it.
fn command_line() -> [u8; 32] {
    *blake3::hash(b"scr-sync: the admin command line counts attempts here").as_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The same words whatever failed: no such id, a wrong passcode, locked.
    #[error("not authenticated: check the id and passcode, or ask another operator")]
    NotAuthenticated,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("directory: {0}")]
    Users(#[from] UserError),
    #[error("directory database error")]
    Sqlite(#[from] rusqlite::Error),
}

/// An operator id: lower-case letters, digits, dots and dashes, with a
/// letter (never taken for a member of staff's numeric id), and none of
/// the ids the trail uses for who is not a person.
fn valid_id(id: &str) -> bool {
    (2..=32).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && id.chars().any(|c| c.is_ascii_lowercase())
        && !["patient", "device", "server", "admin", "unknown"].contains(&id)
}

impl Directory {
    /// How many operator accounts there are (none: the first may be added
    /// by whoever holds the data directory).
    pub fn operator_count(&self) -> Result<u64, OperatorError> {
        Ok(self.rows().operator_count().map_err(UserError::from)?)
    }

    /// Adds (or resets, unlocking it) an operator account.
    pub fn add_operator(&self, id: &str, name: &str, passcode: &str) -> Result<(), OperatorError> {
        if !valid_id(id) {
            return Err(OperatorError::Invalid(
                "an operator id is 2 to 32 lower-case letters, digits, dots and dashes, with a letter, and not a reserved id",
            ));
        }
        if passcode.chars().count() < 8 {
            return Err(OperatorError::Invalid(
                "an operator passcode has at least 8 characters",
            ));
        }
        let phc = hash_passcode(passcode).ok_or(OperatorError::Invalid("passcode"))?;
        self.rows()
            .put_operator(id, name, &phc, scr_core::clock::now_ms())
            .map_err(UserError::from)?;
        Ok(())
    }

    /// Checks an operator's passcode, counting the attempt first (at most
    /// `MAX_FAILED_LOGINS` outstanding); a success resets the count.
    pub fn authenticate_operator(&self, id: &str, passcode: &str) -> Result<(), OperatorError> {
        let counted = self
            .rows()
            .count_operator_attempt(id, MAX_FAILED_LOGINS)
            .map_err(UserError::from)?;
        let phc = self.rows().operator_phc(id).map_err(UserError::from)?;
        let matches = passcode_matches(passcode, phc.as_deref().unwrap_or(dummy()));
        if !(counted && matches && phc.is_some()) {
            return Err(OperatorError::NotAuthenticated);
        }
        self.rows()
            .reset_operator_attempts(id)
            .map_err(UserError::from)?;
        Ok(())
    }

    /// Checks a member of staff's own passcode at the command line (a
    /// privacy officer reviewing alerts), counted as their logins are, on
    /// the command line as one device.
    pub fn authenticate_staff(&self, user_id: &str, passcode: &str) -> Result<(), OperatorError> {
        let found = self.user(user_id)?;
        let counted = found.is_some()
            && !self.user_revoked(user_id)
            && self.begin_login_attempt(user_id, &command_line())?;
        let phc = found
            .as_ref()
            .map(|(_, phc)| phc.as_str())
            .unwrap_or(dummy());
        if !(passcode_matches(passcode, phc) && counted) {
            return Err(OperatorError::NotAuthenticated);
        }
        self.reset_login_attempts(user_id, &command_line())?;
        Ok(())
    }
}

/// A verifier checked when the id is unknown: the same work either way.
fn dummy() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_passcode("scr-sync: no such operator").unwrap_or_default())
}
