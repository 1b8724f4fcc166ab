//! Logging in online: the stand-in for smartcard / CIS2 (staff: user id,
//! card serial and passcode) and for NHS login (a patient's phone: the
//! passcode bound to the token it enrolled with). How an attempt is
//! counted, what every refusal reads, and the grant issued for one device.

use scr_core::access::DenyReason;
use scr_core::audit::Outcome;
use scr_core::channel::{hex_key, to_hex};
use scr_core::crypto::passcode::{PasscodeChecker, hash_passcode};
use scr_core::grant::{GrantPrincipal, GrantSigner, MAX_GRANT_MS, RoleProfileGrant};
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::retention::DeviceClass;
use scr_core::{NhsNumber, Store};
use serde::{Deserialize, Serialize};

use crate::directory::{Device, Directory};
use crate::users::UserError;

/// Failed logins of one user on one device before that device is locked
/// for them (until an administrator adds the user again).
pub const MAX_FAILED_LOGINS: i64 = 5;
/// The user id a patient's phone logs in with: its own patient, the one
/// its enrollment token was bound to, and nobody else.
pub const PATIENT_USER: &str = "patient";

/// How a login attempt is counted: against the named user on this device
/// (so a device that guesses locks that user out of it alone), before it
/// is checked, at most `MAX_FAILED_LOGINS` outstanding (atomically, so
/// parallel guesses cannot exceed it); a success resets the count.
impl Directory {
    /// Takes one of the attempts `user_id` has left on `device`; false
    /// once they are used up.
    pub(crate) fn begin_login_attempt(
        &self,
        user_id: &str,
        device: &[u8; 32],
    ) -> Result<bool, UserError> {
        Ok(self
            .rows()
            .begin_login_attempt(user_id, device, MAX_FAILED_LOGINS)?)
    }

    pub(crate) fn reset_login_attempts(
        &self,
        user_id: &str,
        device: &[u8; 32],
    ) -> Result<(), UserError> {
        Ok(self.rows().reset_login_attempts(user_id, device)?)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Binding {
    pub(crate) nhs_number: NhsNumber,
    pub(crate) passcode_phc: String,
}

/// Argon2's working memory (19 MiB a check), one for each login running at
/// once (the server runs as many as it has login slots), kept between
/// logins rather than allocated for each: what a busy server's allocator
/// otherwise kept resident.
static CHECKERS: std::sync::Mutex<Vec<PasscodeChecker>> = std::sync::Mutex::new(Vec::new());

fn passcode_ok(passcode: &str, phc: &str) -> bool {
    let mut checker = CHECKERS
        .lock()
        .ok()
        .and_then(|mut kept| kept.pop())
        .unwrap_or_default();
    let ok = checker.matches(passcode, phc);
    if let Ok(mut kept) = CHECKERS.lock() {
        kept.push(checker);
    }
    ok
}

pub(crate) fn binding_name(token_hash: &[u8; 32]) -> String {
    format!("patient-token:{}", to_hex(token_hash))
}

/// What a login needs: where users and devices are, the server store
/// (relationships, the grants issued, the trail), the grant signer, and
/// how long a grant lasts (at most a shift, [`MAX_GRANT_MS`]).
pub struct LoginDesk<'a> {
    pub directory: &'a Directory,
    pub store: &'a Store,
    /// Where every grant issued is kept, as long as the audit events.
    pub archive: &'a crate::archive::Archive,
    pub signer: &'a GrantSigner,
    pub grant_lifetime_ms: i64,
}

impl LoginDesk<'_> {
    fn expires(&self, now_ms: i64) -> i64 {
        now_ms + self.grant_lifetime_ms.clamp(1, MAX_GRANT_MS)
    }

    /// Checks the credentials and issues a grant bound to `device`. Every
    /// refusal reads the same, whatever failed, and costs the same Argon2
    /// work, so neither message nor timing says which user ids exist.
    pub fn login(&self, device: &Device, request: &LoginRequest, now_ms: i64) -> LoginResponse {
        // A patient's own phone logs in as that patient, and as nobody else.
        if device.device_class == DeviceClass::PatientPhone {
            return self.patient_login(device, request, now_ms);
        }
        let (directory, store) = (self.directory, self.store);
        let refuse = |detail: &str| refuse_staff(store, &request.user_id, detail);
        let found = directory.user(&request.user_id).ok().flatten();
        // Staff log in on a staff device of their own organisation: only
        // such a device's attempts count against them. Counted before it
        // is checked (at most MAX_FAILED_LOGINS outstanding per device,
        // atomically), so parallel guesses cannot exceed it.
        let suits = found
            .as_ref()
            .is_some_and(|(u, _)| u.organisation == device.organisation);
        let allowed = suits
            && !directory.user_revoked(&request.user_id)
            && directory
                .begin_login_attempt(&request.user_id, &device.key)
                .unwrap_or(false);
        let dummy =
            DUMMY_PHC.get_or_init(|| hash_passcode("scr-sync: no such user").unwrap_or_default());
        let phc = found.as_ref().map(|(_, phc)| phc.as_str()).unwrap_or(dummy);
        let passcode_ok = passcode_ok(&request.passcode, phc);
        let Some((user, _)) = found else {
            // (What was typed is not kept: it may be a passcode.)
            return refuse_staff(store, "unknown", "unknown user");
        };
        if !suits {
            return refuse("device does not belong to the user's organisation");
        }
        if !allowed {
            return refuse("account locked on this device, or revoked");
        }
        if user.card_serial != request.card_serial || !passcode_ok {
            return refuse("wrong card or passcode");
        }
        let _ = directory.reset_login_attempts(&user.user_id, &device.key);
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
            expires_at_ms: self.expires(now_ms),
            relationships,
        };
        // Audit first: a grant the trail does not show is never issued.
        let detail = format!("device {}", &hex_key(&device.key)[..16]);
        if audit_login(store, &request.user_id, None, Outcome::Permit, &detail).is_err() {
            return LoginResponse::Refused {
                reason: WRONG_STAFF.to_owned(),
            };
        }
        self.issue(device, &grant)
            .unwrap_or_else(|| refuse("the session could not be recorded"))
    }

    /// Keeps `grant` in the archive and records it as the device's current
    /// grant (the share policy decides its documents from it), then signs
    /// it.
    fn issue(&self, device: &Device, grant: &RoleProfileGrant) -> Option<LoginResponse> {
        // Kept first: a grant the server could not judge uploads against
        // later is never issued.
        self.archive.record_grant(&device.key, grant).ok()?;
        crate::grants::store_issued(self.store, &device.key, grant).ok()?;
        Some(LoginResponse::Granted {
            grant_hex: to_hex(&self.signer.sign(grant)),
            grant_key_hex: to_hex(&self.signer.public_key()),
            holdings_doc: None,
        })
    }

    /// A patient's phone logs in: the passcode bound to the token it
    /// enrolled with, under [`PATIENT_USER`] only; attempts counted on the
    /// phone. Every refusal reads the same.
    fn patient_login(&self, device: &Device, request: &LoginRequest, now_ms: i64) -> LoginResponse {
        const WRONG: &str = "the login failed: check your passcode, or ask your GP practice";
        let (directory, store) = (self.directory, self.store);
        let binding = directory
            .token_used_by(&device.key)
            .ok()
            .flatten()
            .and_then(|hash| store.secret(&binding_name(&hash)).ok().flatten())
            .and_then(|bytes| serde_json::from_slice::<Binding>(&bytes).ok());
        // Naming anyone else counts against nobody.
        let own = request.user_id == PATIENT_USER;
        let allowed = own
            && directory
                .begin_login_attempt(PATIENT_USER, &device.key)
                .unwrap_or(false);
        let matches = binding
            .as_ref()
            .is_some_and(|b| passcode_ok(&request.passcode, &b.passcode_phc));
        let accepted = allowed && matches;
        let patient = binding.map(|b| b.nhs_number);
        let outcome = if accepted {
            Outcome::Permit
        } else {
            Outcome::Deny {
                reason: DenyReason::NotAllowed,
            }
        };
        let detail = match (own, allowed, matches) {
            (false, _, _) => "a patient's phone named another user".to_owned(),
            (true, false, _) => "locked on this phone".to_owned(),
            (true, true, false) => "wrong passcode".to_owned(),
            (true, true, true) => format!("device {}", &hex_key(&device.key)[..16]),
        };
        let audited = audit_login(
            store,
            PATIENT_USER,
            patient.filter(|_| accepted),
            outcome,
            &detail,
        );
        let (Some(nhs_number), true, Ok(())) = (patient, accepted, audited) else {
            return LoginResponse::Refused {
                reason: WRONG.to_owned(),
            };
        };
        let _ = directory.reset_login_attempts(PATIENT_USER, &device.key);
        let grant = RoleProfileGrant {
            grant_id: crate::grants::grant_id(now_ms, &device.key),
            principal: GrantPrincipal::Patient { nhs_number },
            device_id: hex_key(&device.key),
            issued_at_ms: now_ms,
            // Grants last a shift at most, a patient's too: the phone logs in again.
            expires_at_ms: self.expires(now_ms),
            relationships: Vec::new(),
        };
        self.issue(device, &grant)
            .unwrap_or_else(|| LoginResponse::Refused {
                reason: WRONG.to_owned(),
            })
    }
}

const WRONG_STAFF: &str =
    "the login failed: check the user id, card and passcode, or ask an administrator";

fn audit_login(
    store: &Store,
    user: &str,
    patient: Option<NhsNumber>,
    outcome: Outcome,
    detail: &str,
) -> Result<(), scr_core::StoreError> {
    crate::audit::record(
        store,
        user,
        "login",
        patient,
        outcome,
        Some(detail.to_owned()),
    )
}

/// A staff login refused: audited, and the same words whatever failed.
fn refuse_staff(store: &Store, user: &str, detail: &str) -> LoginResponse {
    let denied = Outcome::Deny {
        reason: DenyReason::NotAllowed,
    };
    if audit_login(store, user, None, denied, detail).is_err() {
        tracing::warn!("a refused login could not be audited");
    }
    LoginResponse::Refused {
        reason: WRONG_STAFF.to_owned(),
    }
}

/// A verifier checked when the user id is unknown, so the work done is the
/// same as for a real account.
static DUMMY_PHC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
