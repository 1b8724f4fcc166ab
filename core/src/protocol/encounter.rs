//! Access beyond the cached set: a clinician online finds a patient outside
//! their relationships by NHS number and date of birth, with the patient's
//! permission given now or with emergency access (or a legal override),
//! optionally self-claiming a relationship. The server matches the record,
//! makes the same access decision the device would, audits it and raises
//! the alerts it obliges, then opens an *encounter*: a relationship that
//! lasts until it is closed or the shift ends, named in a freshly signed
//! grant. The share policy and holdings list follow from that grant, so the
//! record arrives by the normal sync; closing the encounter signs a grant
//! without it, and the device forgets the patient.
//!
//! Offline there is no server to ask: only records already on the device
//! can be opened, under the same rules (`Engine::view`).

use serde::{Deserialize, Serialize};

use crate::NhsNumber;
use crate::access::{AlertReason, DenyReason, RequestedBasis, ViewBasis};

pub const ENCOUNTER_FORMAT: u8 = 1;

/// The most a request may carry (it is a few hundred bytes).
pub const MAX_ENCOUNTER_REQUEST: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum EncounterRequest {
    Open {
        #[serde(rename = "v")]
        format: u8,
        nhs_number: NhsNumber,
        /// ISO 8601 (`1948-03-12`), as the record's demographics hold it.
        date_of_birth: String,
        basis: EncounterBasis,
        /// A relationship claimed now, with its reason (alert type 1).
        #[serde(default)]
        self_claim: Option<AlertReason>,
    },
    Close {
        #[serde(rename = "v")]
        format: u8,
        encounter_id: String,
    },
}

/// On what basis the record is to be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EncounterBasis {
    /// The patient gave permission for this encounter. It is recorded on
    /// the device, in the record's governance compartment, before the first
    /// view (`Engine::record_permission`).
    Permission,
    /// The patient cannot consent (alert type 2, reason 5).
    Emergency,
    /// Public interest, statute or court order (alert type 2).
    LegalOverride { reason: AlertReason },
}

impl EncounterBasis {
    /// The basis the access decision weighs.
    pub fn view_basis(self) -> ViewBasis {
        match self {
            EncounterBasis::Permission => ViewBasis::PermissionRecorded,
            EncounterBasis::Emergency => ViewBasis::Emergency,
            EncounterBasis::LegalOverride { reason } => ViewBasis::LegalOverride(reason),
        }
    }
}

impl From<RequestedBasis> for EncounterBasis {
    fn from(basis: RequestedBasis) -> Self {
        match basis {
            RequestedBasis::Permission => EncounterBasis::Permission,
            RequestedBasis::Emergency => EncounterBasis::Emergency,
            RequestedBasis::LegalOverride(reason) => EncounterBasis::LegalOverride { reason },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum EncounterReply {
    /// The encounter is open; `grant_hex` names it.
    Opened {
        encounter_id: String,
        grant_hex: String,
    },
    /// The user already has a relationship with the patient: the record
    /// comes with the normal sync, no encounter needed.
    AlreadyShared,
    /// No record has that NHS number and date of birth. (The same answer
    /// whether the number is unknown or the date wrong.)
    NoMatch,
    Refused {
        reason: DenyReason,
    },
    /// The encounter is closed; `grant_hex` no longer names it.
    Closed {
        grant_hex: String,
    },
    Failed {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_garbage_is_refused() {
        let open = EncounterRequest::Open {
            format: ENCOUNTER_FORMAT,
            nhs_number: crate::fixtures::test_nhs_number(7),
            date_of_birth: "1948-03-12".into(),
            basis: EncounterBasis::LegalOverride {
                reason: AlertReason::CourtOrder,
            },
            self_claim: Some(AlertReason::SelfClaimEmergency),
        };
        let bytes = serde_json::to_vec(&open).unwrap();
        assert_eq!(
            serde_json::from_slice::<EncounterRequest>(&bytes).unwrap(),
            open
        );
        // An invalid NHS number does not decode.
        let bad = String::from_utf8(bytes)
            .unwrap()
            .replace(&crate::fixtures::test_nhs_number(7).digits(), "9990001234");
        assert!(serde_json::from_str::<EncounterRequest>(&bad).is_err());
        assert!(serde_json::from_slice::<EncounterReply>(b"{\"result\":\"opened\"}").is_err());
        let refused = EncounterReply::Refused {
            reason: DenyReason::RecordUnavailable,
        };
        let bytes = serde_json::to_vec(&refused).unwrap();
        assert_eq!(
            serde_json::from_slice::<EncounterReply>(&bytes).unwrap(),
            refused
        );
    }
}
