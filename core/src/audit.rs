//! Audit events: every decision (permit or deny), write, export, unlock
//! failure, lock-out and forgetting. Each device chains its events by hash,
//! so a gap or an edit is visible; the store seals them under an audit key
//! separate from record keys, so forgetting a patient keeps the trail.

use serde::{Deserialize, Serialize};

use crate::NhsNumber;
use crate::access::{Alert, DenyReason};
use crate::record::Compartment;

/// The audit event format. Bump when the JSON shape changes.
pub const AUDIT_FORMAT: u8 = 1;

/// Hash of the event before the first one a device ever wrote.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Outcome {
    Permit,
    Deny {
        reason: DenyReason,
    },
    /// Not an access decision: a lock-out, a failed unlock, a forgetting.
    Recorded,
}

/// What the engine knows about an event; the queue adds its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    pub user: String,
    pub role: String,
    pub organisation: String,
    pub patient: Option<NhsNumber>,
    pub action: String,
    pub compartments: Vec<Compartment>,
    pub entries: Vec<String>,
    pub outcome: Outcome,
    /// How access was justified: permission, emergency, legal-override,
    /// self-claimed relationship.
    pub basis: Option<String>,
    pub alerts: Vec<Alert>,
    /// Codes and references only (never clinical text).
    pub detail: Option<String>,
}

/// One event as queued and uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "v")]
    pub format: u8,
    /// UUIDv7.
    pub id: String,
    /// The device's monotonic counter: 1, 2, 3... with no gaps.
    pub seq: u64,
    /// BLAKE3 (hex) of the previous event's encoding.
    pub prev_hash: String,
    pub device: String,
    pub user: String,
    pub role: String,
    pub organisation: String,
    pub patient: Option<NhsNumber>,
    pub action: String,
    pub compartments: Vec<Compartment>,
    pub entries: Vec<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub basis: Option<String>,
    pub alerts: Vec<Alert>,
    pub detail: Option<String>,
    pub wall_time_ms: i64,
}

impl AuditEvent {
    pub fn from_draft(
        draft: AuditDraft,
        device: &str,
        seq: u64,
        prev_hash: String,
        now_ms: i64,
    ) -> Self {
        Self {
            format: AUDIT_FORMAT,
            id: uuid::Uuid::now_v7().to_string(),
            seq,
            prev_hash,
            device: device.to_owned(),
            user: draft.user,
            role: draft.role,
            organisation: draft.organisation,
            patient: draft.patient,
            action: draft.action,
            compartments: draft.compartments,
            entries: draft.entries,
            outcome: draft.outcome,
            basis: draft.basis,
            alerts: draft.alerts,
            detail: draft.detail,
            wall_time_ms: now_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and enums always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let event: Self = serde_json::from_slice(bytes).ok()?;
        (event.format <= AUDIT_FORMAT).then_some(event)
    }

    /// The hash the next event must carry as `prev_hash`.
    pub fn hash(&self) -> String {
        blake3::hash(&self.encode()).to_hex().to_string()
    }

    /// A FHIR R4 AuditEvent. Emergency access carries the DICOM break-glass
    /// codes (110113 Security Alert, 110127 Emergency Override Started).
    pub fn to_fhir(&self) -> serde_json::Value {
        use serde_json::json;
        let (outcome, outcome_desc) = match &self.outcome {
            Outcome::Permit | Outcome::Recorded => ("0", None),
            Outcome::Deny { reason } => ("4", Some(reason.to_string())),
        };
        // The basis may combine routes ("self-claimed-relationship+emergency").
        let emergency = self
            .basis
            .as_deref()
            .is_some_and(|b| b.split('+').any(|part| part == "emergency"));
        let event_type = if emergency {
            json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113", "display": "Security Alert"})
        } else {
            json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"})
        };
        let mut subtype = vec![
            json!({"system": "https://scr-sync.example/CodeSystem/action", "code": self.action}),
        ];
        if emergency {
            subtype.push(json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110127", "display": "Emergency Override Started"}));
        }
        let action = match self.action.as_str() {
            "view" | "read-audit-trail" => "R",
            "add-entry" | "record-permission" => "C",
            "supersede" | "entered-in-error" | "change-choice" | "hide" | "unhide" => "U",
            "forget" => "D",
            _ => "E",
        };
        let recorded = chrono_like_rfc3339(self.wall_time_ms);
        let mut entity = Vec::new();
        if let Some(nhs) = &self.patient {
            entity.push(json!({
                "what": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs.digits()}},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"}
            }));
        }
        json!({
            "resourceType": "AuditEvent",
            "id": self.id,
            "type": event_type,
            "subtype": subtype,
            "action": action,
            "recorded": recorded,
            "outcome": outcome,
            "outcomeDesc": outcome_desc,
            "agent": [{
                "who": {"identifier": {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": self.user}},
                "role": [{"coding": [{"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-SDSJobRoleName", "code": self.role}]}],
                "requestor": true
            }],
            "source": {
                "observer": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": self.organisation}},
                "type": [{"code": "device", "display": self.device}]
            },
            "entity": entity
        })
    }
}

/// RFC 3339 UTC from Unix milliseconds, without a date library: days to a
/// civil date by Howard Hinnant's algorithm.
pub fn chrono_like_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Why a chain did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit event {seq} is missing (gap in the chain)")]
    Gap { seq: u64 },
    #[error("audit event {seq} does not follow the event before it")]
    Broken { seq: u64 },
}

/// Checks that `events` (in order) continue a chain whose last released
/// event had `base_seq` and `base_hash`.
pub fn verify_chain(
    base_seq: u64,
    base_hash: &str,
    events: &[AuditEvent],
) -> Result<(), ChainError> {
    let mut seq = base_seq;
    let mut hash = base_hash.to_owned();
    for e in events {
        if e.seq != seq + 1 {
            return Err(ChainError::Gap { seq: seq + 1 });
        }
        if e.prev_hash != hash {
            return Err(ChainError::Broken { seq: e.seq });
        }
        seq = e.seq;
        hash = e.hash();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AlertReason, AlertType};
    use crate::fixtures::test_nhs_number;
    use proptest::prelude::*;

    fn draft(action: &str) -> AuditDraft {
        AuditDraft {
            user: "555000000203".into(),
            role: "R1290".into(),
            organisation: "RYA".into(),
            patient: Some(test_nhs_number(1)),
            action: action.into(),
            compartments: vec![Compartment::Core],
            entries: vec![],
            outcome: Outcome::Permit,
            basis: Some("emergency".into()),
            alerts: vec![Alert::new(AlertType::AccessAlert, AlertReason::Emergency).unwrap()],
            detail: None,
        }
    }

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = AuditEvent::from_draft(
                    draft("view"),
                    "tablet-31",
                    seq,
                    prev.clone(),
                    1_800_000_000_000,
                );
                prev = e.hash();
                e
            })
            .collect()
    }

    #[test]
    fn a_chain_verifies_and_damage_is_found() {
        let events = chain(5);
        assert_eq!(verify_chain(0, GENESIS_HASH, &events), Ok(()));
        let mut gap = events.clone();
        gap.remove(2);
        assert_eq!(
            verify_chain(0, GENESIS_HASH, &gap),
            Err(ChainError::Gap { seq: 3 })
        );
        let mut edited = events.clone();
        edited[1].action = "export".into();
        assert_eq!(
            verify_chain(0, GENESIS_HASH, &edited),
            Err(ChainError::Broken { seq: 3 })
        );
        // Released prefix: the rest verifies from the stored head.
        assert_eq!(verify_chain(2, &events[1].hash(), &events[2..]), Ok(()));
    }

    #[test]
    fn fhir_form_names_the_break_glass_codes() {
        let e = &chain(1)[0];
        let fhir = e.to_fhir();
        assert_eq!(fhir["resourceType"], "AuditEvent");
        assert_eq!(fhir["type"]["code"], "110113");
        assert_eq!(fhir["subtype"][1]["code"], "110127");
        assert_eq!(fhir["action"], "R");
        assert_eq!(fhir["recorded"], "2027-01-15T08:00:00.000Z");
        assert_eq!(
            fhir["entity"][0]["what"]["identifier"]["value"],
            test_nhs_number(1).digits()
        );
    }

    #[test]
    fn combined_bases_still_carry_the_break_glass_codes() {
        let mut e = chain(1).remove(0);
        e.basis = Some("self-claimed-relationship+emergency".into());
        assert_eq!(e.to_fhir()["type"]["code"], "110113");
        e.basis = Some("permission".into());
        assert_eq!(e.to_fhir()["type"]["code"], "rest");
    }

    #[test]
    fn dates_are_right_at_the_edges() {
        assert_eq!(chrono_like_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            chrono_like_rfc3339(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            chrono_like_rfc3339(1_795_046_399_999),
            "2026-11-18T23:59:59.999Z"
        );
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(seq in 1u64..1_000_000, t in 0i64..4_000_000_000_000) {
            let e = AuditEvent::from_draft(draft("add-entry"), "d", seq, GENESIS_HASH.into(), t);
            prop_assert_eq!(AuditEvent::decode(&e.encode()), Some(e));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = AuditEvent::decode(&bytes);
        }
    }
}
