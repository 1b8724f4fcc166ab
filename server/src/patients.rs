//! Patients' own phones. A stand-in for NHS login with the same shape of
//! result: an operator (or the GP practice) issues an enrollment token bound
//! to one patient and a passcode the patient chose; the phone enrolls with
//! the token and logs in with the passcode, and the server issues a grant
//! naming that patient and no one else. The binding is sealed in the server
//! store under the token's hash: no NHS number in any SQLite key.

use scr_core::crypto::passcode::hash_passcode;
use scr_core::{NhsNumber, Store};

use crate::login::{Binding, binding_name};
use crate::users::UserError;

/// Binds an enrollment token (for a `patient-phone`) to the patient and
/// the passcode they chose.
pub fn bind_token(
    store: &Store,
    token: &str,
    nhs_number: NhsNumber,
    passcode: &str,
) -> Result<(), UserError> {
    if passcode.chars().count() < 6 {
        return Err(UserError::Invalid(
            "a patient's passcode has at least 6 characters",
        ));
    }
    let passcode_phc = hash_passcode(passcode).ok_or(UserError::Invalid("passcode"))?;
    let binding = serde_json::to_vec(&Binding {
        nhs_number,
        passcode_phc,
    })
    .map_err(|_| UserError::Invalid("binding"))?;
    store.put_secret(
        &binding_name(&crate::directory::token_hash(token)),
        &binding,
    )?;
    Ok(())
}
