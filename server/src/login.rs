//! Logging in online: the stand-in for smartcard / CIS2 (staff: user id,
//! card serial and passcode) and for NHS login (a patient's phone: the
//! passcode bound to the token it enrolled with). How an attempt is
//! counted, what every refusal reads, and the grant issued for one device.

use rusqlite::params;
use scr_core::access::DenyReason;
use scr_core::audit::Outcome;
use scr_core::channel::{hex_key, to_hex};
use scr_core::crypto::passcode::{hash_passcode, passcode_matches};
use scr_core::grant::{GrantPrincipal, GrantSigner, MAX_GRANT_MS, RoleProfileGrant};
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::retention::DeviceClass;
use scr_core::{NhsNumber, Store};
use serde::{Deserialize, Serialize};

use crate::directory::{Device, Directory};
use crate::users::UserError;

/// Failed logins before an account is locked (until an administrator resets it).
pub const MAX_FAILED_LOGINS: i64 = 5;

/// How a login attempt is counted: against the named user, before it is
/// checked, at most `MAX_FAILED_LOGINS` outstanding (atomically, so
/// parallel guesses cannot exceed it); a success resets the count.
impl Directory {
    /// Takes one of the user's allowed attempts; false once they are used up.
    pub(crate) fn begin_login_attempt(&self, user_id: &str) -> Result<bool, UserError> {
        Ok(self.conn()?.execute(
            "UPDATE users SET failed_logins = failed_logins + 1
             WHERE user_id = ?1 AND failed_logins < ?2 AND revoked = 0",
            params![user_id, MAX_FAILED_LOGINS],
        )? == 1)
    }

    pub(crate) fn reset_login_attempts(&self, user_id: &str) -> Result<(), UserError> {
        self.conn()?.execute(
            "UPDATE users SET failed_logins = 0 WHERE user_id = ?1",
            [user_id],
        )?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Binding {
    pub(crate) nhs_number: NhsNumber,
    pub(crate) passcode_phc: String,
}

pub(crate) fn binding_name(token_hash: &[u8; 32]) -> String {
    format!("patient-token:{}", to_hex(token_hash))
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
    if device.device_class == DeviceClass::PatientPhone {
        return patient_login(directory, store, signer, device, request, now_ms);
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
    if device.device_class == DeviceClass::PatientPhone || device.organisation != user.organisation
    {
        return refuse("device does not belong to the user's organisation");
    }
    let _ = directory.reset_login_attempts(&user.user_id);
    let Ok(relationships) = crate::grants::relationships(store, &user.user_id) else {
        return refuse("relationships unreadable");
    };
    let grant = RoleProfileGrant {
        grant_id: crate::grants::grant_id(now_ms, &device.key),
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
    if crate::grants::store_issued(store, &device.key, &grant).is_err() {
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

/// A patient's phone logs in: the passcode bound to the token it enrolled
/// with. Every refusal reads the same.
fn patient_login(
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
        grant_id: crate::grants::grant_id(now_ms, &device.key),
        principal: GrantPrincipal::Patient { nhs_number },
        device_id: hex_key(&device.key),
        issued_at_ms: now_ms,
        // Grants last a shift at most, a patient's too: the phone logs in again.
        expires_at_ms: now_ms + scr_core::grant::MAX_GRANT_MS,
        relationships: Vec::new(),
    };
    if crate::grants::store_issued(store, &device.key, &grant).is_err() {
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
