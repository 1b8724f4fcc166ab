//! What a user asks for when they open a record they may not otherwise
//! see: the basis (permission, emergency, legal override) and a
//! relationship claimed now. Pure data; `decide` weighs it.

use super::AlertReason;

/// How the user justifies opening a record they may not otherwise see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum RequestedBasis {
    /// Use the permission to view recorded for this encounter or organisation.
    Permission,
    /// The patient cannot consent (alert type 2, reason 5).
    Emergency,
    /// Public interest, statute or court order (alert type 2).
    LegalOverride(AlertReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct AccessRequest {
    pub basis: RequestedBasis,
    /// A legitimate relationship claimed now, with its reason (alert type 1),
    /// for a patient not on the user's grant.
    pub self_claim: Option<AlertReason>,
}

impl AccessRequest {
    pub fn with_permission() -> Self {
        Self {
            basis: RequestedBasis::Permission,
            self_claim: None,
        }
    }

    pub fn emergency() -> Self {
        Self {
            basis: RequestedBasis::Emergency,
            self_claim: None,
        }
    }
}
