//! The role profile grant: what the server issues at online login and the
//! device verifies offline, against the server key pinned at enrollment.
//!
//! Wire format, version 1 (Ed25519 through `ed25519-dalek`):
//! ```text
//! [0x01][8-byte signer key id][u32 LE payload length][payload: JSON][64-byte signature]
//! ```
//! The signature covers `"scr-sync/grant" || version || key id || payload`.
//! The key id (first 8 bytes of BLAKE3 of the public key) lets a device tell
//! an unknown signer from a forged signature. The payload bytes are verified
//! as sent, never re-serialised.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::NhsNumber;
use crate::access::{Principal, StaffRole};

pub const GRANT_V1: u8 = 1;
const DOMAIN: &[u8] = b"scr-sync/grant";
/// A grant lasts a shift at most.
pub const MAX_GRANT_MS: i64 = 12 * 60 * 60 * 1000;
/// Device clocks drift: a grant issued this far in the future still counts.
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Who the grant is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum GrantPrincipal {
    Staff {
        user_id: String,
        display_name: String,
        job_role: String,
        job_role_name: String,
        organisation: String,
        activities: Vec<String>,
        #[serde(default)]
        privacy_officer: bool,
    },
    /// The patient on their own phone.
    Patient { nhs_number: NhsNumber },
}

/// Why the user may see a patient without self-claiming.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RelationshipKind {
    Caseload,
    Incident {
        incident_id: String,
    },
    Registration,
    Referral,
    /// Opened online for one encounter with a patient outside the user's
    /// relationships (permission given now, or emergency access). Ends when
    /// the encounter is closed, or at `ends_at_ms` (the end of the shift)
    /// if it never is.
    Encounter {
        encounter_id: String,
        ends_at_ms: i64,
    },
}

impl GrantRelationship {
    /// Whether the relationship still holds at `now_ms` (only an encounter
    /// ends by itself).
    pub fn holds_at(&self, now_ms: i64) -> bool {
        match &self.kind {
            RelationshipKind::Encounter { ends_at_ms, .. } => now_ms < *ends_at_ms,
            _ => true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRelationship {
    pub nhs_number: NhsNumber,
    #[serde(flatten)]
    pub kind: RelationshipKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleProfileGrant {
    pub grant_id: String,
    pub principal: GrantPrincipal,
    pub device_id: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub relationships: Vec<GrantRelationship>,
}

impl RoleProfileGrant {
    pub fn principal(&self) -> Principal {
        match &self.principal {
            GrantPrincipal::Staff {
                user_id,
                job_role,
                organisation,
                activities,
                privacy_officer,
                ..
            } => Principal::Staff(StaffRole {
                user_id: user_id.clone(),
                job_role: job_role.clone(),
                organisation: organisation.clone(),
                activities: activities.clone(),
                privacy_officer: *privacy_officer,
            }),
            GrantPrincipal::Patient { .. } => Principal::Patient,
        }
    }

    /// [`Self::actor`], borrowed (the push check compares it with every
    /// new version's provenance).
    pub fn actor_ref(&self) -> (&str, &str, &str) {
        match &self.principal {
            GrantPrincipal::Staff {
                user_id,
                job_role,
                organisation,
                ..
            } => (user_id, job_role, organisation),
            GrantPrincipal::Patient { .. } => ("patient", "patient", ""),
        }
    }

    /// (user id, role, organisation) for audit records.
    pub fn actor(&self) -> (String, String, String) {
        match &self.principal {
            GrantPrincipal::Staff {
                user_id,
                job_role,
                organisation,
                ..
            } => (user_id.clone(), job_role.clone(), organisation.clone()),
            GrantPrincipal::Patient { .. } => ("patient".into(), "patient".into(), String::new()),
        }
    }

    /// Whether a grant in use for `in_use_ms` (monotonic time on the
    /// device, which winding the wall clock back does not touch) has
    /// outlived what it was issued for: it expires then, or at its wall-
    /// clock expiry, whichever comes first.
    pub fn outlived_by(&self, in_use_ms: i64) -> bool {
        in_use_ms >= self.expires_at_ms.saturating_sub(self.issued_at_ms)
    }

    pub fn relationship_with(&self, nhs: &NhsNumber) -> Option<&GrantRelationship> {
        self.relationships.iter().find(|r| r.nhs_number == *nhs)
    }

    pub fn is_patient(&self, nhs: &NhsNumber) -> bool {
        matches!(&self.principal, GrantPrincipal::Patient { nhs_number } if nhs_number == nhs)
    }
}

/// Why a grant was refused. Each failure is distinct so the app can say
/// what to do (log in online again, fix the clock, re-enroll).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the grant is malformed")]
    Malformed,
    #[error("the grant has unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("the grant was signed by a key this device does not trust")]
    UnknownSigner,
    #[error("the grant's signature does not verify (tampered or forged)")]
    BadSignature,
    #[error("the grant is not valid yet")]
    NotYetValid,
    #[error("the grant has expired; log in online again")]
    Expired,
    #[error("the grant was issued for another device")]
    WrongDevice,
    #[error("the grant lasts longer than a 12-hour shift")]
    TooLong,
    #[error("the new grant is for another user or role than the session's")]
    OtherUser,
}

fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let hash = blake3::hash(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&hash.as_bytes()[..8]);
    id
}

fn signed_message(version: u8, key_id: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 9 + payload.len());
    m.extend_from_slice(DOMAIN);
    m.push(version);
    m.extend_from_slice(key_id);
    m.extend_from_slice(payload);
    m
}

/// The server's signing side.
pub struct GrantSigner {
    key: SigningKey,
}

impl GrantSigner {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn generate() -> Result<Self, crate::crypto::CryptoError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| crate::crypto::CryptoError::Random)?;
        let signer = Self::from_seed(seed);
        zeroize::Zeroize::zeroize(&mut seed);
        Ok(signer)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, grant: &RoleProfileGrant) -> Vec<u8> {
        // Serialising a struct of strings, numbers and enums cannot fail.
        let payload = serde_json::to_vec(grant).unwrap_or_default();
        let id = key_id(&self.key.verifying_key());
        let sig = self.key.sign(&signed_message(GRANT_V1, &id, &payload));
        let mut out = Vec::with_capacity(1 + 8 + 4 + payload.len() + 64);
        out.push(GRANT_V1);
        out.extend_from_slice(&id);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&sig.to_bytes());
        out
    }
}

/// Verifies a grant for `device_id` at time `now_ms`, against the pinned
/// server key. Checks run in an order that never trusts unverified content:
/// format, signer, signature, then the claims.
pub fn verify_grant(
    bytes: &[u8],
    pinned_server_key: &[u8; 32],
    device_id: &str,
    now_ms: i64,
) -> Result<RoleProfileGrant, GrantError> {
    let (&version, rest) = bytes.split_first().ok_or(GrantError::Malformed)?;
    if version != GRANT_V1 {
        return Err(GrantError::UnsupportedVersion(version));
    }
    if rest.len() < 8 + 4 + 64 {
        return Err(GrantError::Malformed);
    }
    let (id, rest) = rest.split_at(8);
    let (len, rest) = rest.split_at(4);
    let len = u32::from_le_bytes(len.try_into().map_err(|_| GrantError::Malformed)?) as usize;
    if Some(rest.len()) != len.checked_add(64) {
        return Err(GrantError::Malformed);
    }
    let (payload, sig) = rest.split_at(len);
    let pinned =
        VerifyingKey::from_bytes(pinned_server_key).map_err(|_| GrantError::UnknownSigner)?;
    let id: [u8; 8] = id.try_into().map_err(|_| GrantError::Malformed)?;
    if id != key_id(&pinned) {
        return Err(GrantError::UnknownSigner);
    }
    let sig: [u8; 64] = sig.try_into().map_err(|_| GrantError::Malformed)?;
    pinned
        .verify_strict(
            &signed_message(version, &id, payload),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| GrantError::BadSignature)?;
    let grant: RoleProfileGrant =
        serde_json::from_slice(payload).map_err(|_| GrantError::Malformed)?;
    if grant.device_id != device_id {
        return Err(GrantError::WrongDevice);
    }
    if grant.expires_at_ms - grant.issued_at_ms > MAX_GRANT_MS
        || grant.expires_at_ms < grant.issued_at_ms
    {
        return Err(GrantError::TooLong);
    }
    if now_ms + CLOCK_SKEW_MS < grant.issued_at_ms {
        return Err(GrantError::NotYetValid);
    }
    if now_ms >= grant.expires_at_ms {
        return Err(GrantError::Expired);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::test_nhs_number;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn grant() -> RoleProfileGrant {
        RoleProfileGrant {
            grant_id: "g-1".into(),
            principal: GrantPrincipal::Staff {
                user_id: "555000000203".into(),
                display_name: "Sam Paramedic".into(),
                job_role: "R1290".into(),
                job_role_name: "Paramedic".into(),
                organisation: "RYA".into(),
                activities: vec!["B0264".into(), "B0370".into(), "B0168".into()],
                privacy_officer: false,
            },
            device_id: "tablet-31".into(),
            issued_at_ms: NOW,
            expires_at_ms: NOW + 12 * HOUR,
            relationships: vec![GrantRelationship {
                nhs_number: test_nhs_number(1),
                kind: RelationshipKind::Incident {
                    incident_id: "INC-9".into(),
                },
            }],
        }
    }

    fn signer() -> GrantSigner {
        GrantSigner::from_seed([3; 32])
    }

    #[test]
    fn a_good_grant_verifies() {
        let bytes = signer().sign(&grant());
        let got = verify_grant(&bytes, &signer().public_key(), "tablet-31", NOW + HOUR).unwrap();
        assert_eq!(got, grant());
        assert!(got.relationship_with(&test_nhs_number(1)).is_some());
        assert!(got.relationship_with(&test_nhs_number(2)).is_none());
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let s = signer();
        let key = s.public_key();
        let bytes = s.sign(&grant());
        let check = |b: &[u8], device: &str, now: i64| verify_grant(b, &key, device, now).err();
        assert_eq!(
            check(&bytes, "tablet-31", NOW + 12 * HOUR),
            Some(GrantError::Expired)
        );
        assert_eq!(
            check(&bytes, "tablet-31", NOW - HOUR),
            Some(GrantError::NotYetValid)
        );
        assert_eq!(
            check(&bytes, "tablet-31", NOW - 60_000),
            None,
            "small skew tolerated"
        );
        assert_eq!(
            check(&bytes, "tablet-99", NOW),
            Some(GrantError::WrongDevice)
        );
        let mut tampered = bytes.clone();
        let i = 1 + 8 + 4 + 20;
        tampered[i] ^= 0x20;
        assert_eq!(
            check(&tampered, "tablet-31", NOW),
            Some(GrantError::BadSignature)
        );
        let other = GrantSigner::from_seed([4; 32]).sign(&grant());
        assert_eq!(
            check(&other, "tablet-31", NOW),
            Some(GrantError::UnknownSigner)
        );
        // Signed by another key but claiming the pinned key's id: forged.
        let mut forged = other.clone();
        forged[1..9].copy_from_slice(&bytes[1..9]);
        assert_eq!(
            check(&forged, "tablet-31", NOW),
            Some(GrantError::BadSignature)
        );
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            check(&v2, "tablet-31", NOW),
            Some(GrantError::UnsupportedVersion(2))
        );
        assert_eq!(
            check(&bytes[..40], "tablet-31", NOW),
            Some(GrantError::Malformed)
        );
        let mut long = grant();
        long.expires_at_ms = NOW + 13 * HOUR;
        assert_eq!(
            check(&s.sign(&long), "tablet-31", NOW),
            Some(GrantError::TooLong)
        );
    }

    #[test]
    fn a_grant_never_carries_its_nhs_numbers_in_debug_output() {
        assert!(!format!("{:?}", grant()).contains(&test_nhs_number(1).digits()));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_verify_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(verify_grant(&bytes, &signer().public_key(), "tablet-31", NOW).is_err());
        }

        #[test]
        fn any_bit_flip_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = signer().sign(&grant());
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(verify_grant(&bytes, &signer().public_key(), "tablet-31", NOW + HOUR).is_err());
        }
    }
}
