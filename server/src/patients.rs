//! Patients' own phones. A stand-in for NHS login with the same shape of
//! result: an operator (or the GP practice) issues an enrollment token bound
//! to one patient and a passcode the patient chose; the phone enrolls with
//! the token and logs in with the passcode, and the server issues a grant
//! naming that patient and no one else. The binding is sealed in the server
//! store under the token's hash: no NHS number in any SQLite key.

use scr_core::access::DenyReason;
use scr_core::audit::Outcome;
use scr_core::channel::{LoginRequest, LoginResponse, hex_key, to_hex};
use scr_core::crypto::passcode::{hash_passcode, passcode_matches};
use scr_core::grant::{GrantPrincipal, GrantSigner, RoleProfileGrant};
use scr_core::{NhsNumber, Store};
use serde::{Deserialize, Serialize};

use crate::directory::{Device, Directory};
use crate::users::UserError;

#[derive(Serialize, Deserialize)]
struct Binding {
    nhs_number: NhsNumber,
    passcode_phc: String,
}

fn binding_name(token_hash: &[u8; 32]) -> String {
    format!("patient-token:{}", to_hex(token_hash))
}

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

/// A patient's phone logs in: the passcode bound to the token it enrolled
/// with. Every refusal reads the same.
pub fn login(
    directory: &Directory,
    store: &Store,
    signer: &GrantSigner,
    device: &Device,
    request: &LoginRequest,
    now_ms: i64,
) -> LoginResponse {
    const WRONG: &str = "the login failed: check your passcode, or ask your GP practice";
    let binding = directory
        .token_used_by(&device.key)
        .ok()
        .flatten()
        .and_then(|hash| store.secret(&binding_name(&hash)).ok().flatten())
        .and_then(|bytes| serde_json::from_slice::<Binding>(&bytes).ok());
    let accepted = binding
        .as_ref()
        .is_some_and(|b| passcode_matches(&request.passcode, &b.passcode_phc));
    let patient = binding.map(|b| b.nhs_number);
    let outcome = if accepted {
        Outcome::Permit
    } else {
        Outcome::Deny {
            reason: DenyReason::NotAllowed,
        }
    };
    let audited = crate::audit::record(
        store,
        "patient",
        "login",
        patient.filter(|_| accepted),
        outcome,
        Some(format!("device {}", &hex_key(&device.key)[..16])),
    );
    let (Some(nhs_number), true, Ok(())) = (patient, accepted, audited) else {
        return LoginResponse::Refused {
            reason: WRONG.to_owned(),
        };
    };
    let grant = RoleProfileGrant {
        grant_id: crate::users::grant_id(now_ms, &device.key),
        principal: GrantPrincipal::Patient { nhs_number },
        device_id: hex_key(&device.key),
        issued_at_ms: now_ms,
        // Grants last a shift at most, a patient's too: the phone logs in again.
        expires_at_ms: now_ms + scr_core::grant::MAX_GRANT_MS,
        relationships: Vec::new(),
    };
    let stored = serde_json::to_vec(&grant)
        .ok()
        .map(|bytes| store.put_secret(&crate::policy::grant_secret_name(&device.key), &bytes));
    if !matches!(stored, Some(Ok(()))) {
        return LoginResponse::Refused {
            reason: WRONG.to_owned(),
        };
    }
    LoginResponse::Granted {
        grant_hex: to_hex(&signer.sign(&grant)),
        grant_key_hex: to_hex(&signer.public_key()),
        holdings_doc: None,
    }
}
