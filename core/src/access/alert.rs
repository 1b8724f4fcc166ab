//! Privacy-officer alerts. Codes from `https://fhir.nhs.uk/CodeSystem/SCR-AlertType`
//! and `.../SCR-AlertReason`. An [`Alert`] can only be built from an allowed
//! type/reason pair, so no other pair can ever be produced.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum AlertType {
    /// 1: a user self-claimed a legitimate relationship.
    SelfClaimedRelationship,
    /// 2: access without permission (emergency or legal override).
    AccessAlert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum AlertReason {
    PublicInterest,
    Statute,
    CourtOrder,
    SelfClaimEmergency,
    Emergency,
    Other,
}

impl AlertType {
    pub fn code(self) -> u8 {
        match self {
            AlertType::SelfClaimedRelationship => 1,
            AlertType::AccessAlert => 2,
        }
    }
}

impl AlertReason {
    pub const ALL: [AlertReason; 6] = [
        AlertReason::PublicInterest,
        AlertReason::Statute,
        AlertReason::CourtOrder,
        AlertReason::SelfClaimEmergency,
        AlertReason::Emergency,
        AlertReason::Other,
    ];

    pub fn code(self) -> u8 {
        match self {
            AlertReason::PublicInterest => 1,
            AlertReason::Statute => 2,
            AlertReason::CourtOrder => 3,
            AlertReason::SelfClaimEmergency => 4,
            AlertReason::Emergency => 5,
            AlertReason::Other => 6,
        }
    }
}

/// An allowed (type, reason) pair. Decoding goes through [`Alert::new`]
/// too, so an event from outside cannot carry any other pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "AlertParts")]
pub struct Alert {
    alert_type: AlertType,
    reason: AlertReason,
}

#[derive(Deserialize)]
struct AlertParts {
    alert_type: AlertType,
    reason: AlertReason,
}

impl TryFrom<AlertParts> for Alert {
    type Error = &'static str;

    fn try_from(p: AlertParts) -> Result<Self, Self::Error> {
        Alert::new(p.alert_type, p.reason).ok_or("this alert type and reason may not go together")
    }
}

impl Alert {
    /// Type 1 allows reasons 1, 2, 3, 4, 6; type 2 allows 1, 2, 3, 5.
    pub fn new(alert_type: AlertType, reason: AlertReason) -> Option<Self> {
        use AlertReason::*;
        let allowed = match alert_type {
            AlertType::SelfClaimedRelationship => {
                matches!(
                    reason,
                    PublicInterest | Statute | CourtOrder | SelfClaimEmergency | Other
                )
            }
            AlertType::AccessAlert => {
                matches!(reason, PublicInterest | Statute | CourtOrder | Emergency)
            }
        };
        allowed.then_some(Self { alert_type, reason })
    }

    pub fn alert_type(&self) -> AlertType {
        self.alert_type
    }

    pub fn reason(&self) -> AlertReason {
        self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disallowed_pair_does_not_decode() {
        let ok = Alert::new(AlertType::AccessAlert, AlertReason::Emergency).unwrap();
        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), ok);
        let bad = json.replace("\"emergency\"", "\"self-claim-emergency\"");
        assert_ne!(bad, json);
        assert!(serde_json::from_str::<Alert>(&bad).is_err());
    }

    #[test]
    fn only_the_allowed_pairs_exist() {
        let allowed: Vec<(u8, u8)> = [AlertType::SelfClaimedRelationship, AlertType::AccessAlert]
            .into_iter()
            .flat_map(|t| AlertReason::ALL.into_iter().map(move |r| (t, r)))
            .filter_map(|(t, r)| Alert::new(t, r))
            .map(|a| (a.alert_type().code(), a.reason().code()))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 6),
                (2, 1),
                (2, 2),
                (2, 3),
                (2, 5)
            ]
        );
    }
}
