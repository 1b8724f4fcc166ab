//! What the server refused of a device's pushes, as it tells that device
//! (in its holdings reply, after bumping its notice): which document, why,
//! which change. Names a document and a rule, never a value or a patient.

use serde::{Deserialize, Serialize};

use crate::record::Compartment;

/// Refusals the server keeps per device, newest last.
pub const KEPT_REFUSALS: usize = 32;

/// One refused push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRefusal {
    /// The compartment document's id (as samod names it).
    pub document: String,
    pub compartment: Compartment,
    /// The rule it broke, in words (`push_rules::Refusal`'s).
    pub reason: String,
    /// The hash (hex) of the first change the rules refused.
    pub change: String,
    /// When the server refused it (the server's clock).
    pub refused_at_ms: i64,
}
