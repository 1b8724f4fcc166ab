//! The login exchange: what a device sends when its user logs in online,
//! and the signed grant (or the refusal) the server answers with.

use serde::{Deserialize, Serialize};

/// The stand-in for smartcard / CIS2 authentication: same shape of result.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub user_id: String,
    pub card_serial: String,
    pub passcode: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum LoginResponse {
    /// The signed role profile grant (hex), and the key that signed it.
    Granted {
        grant_hex: String,
        grant_key_hex: String,
        /// The device's holdings document (what it should hold and why),
        /// which the server keeps up to date for the device to sync.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holdings_doc: Option<String>,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_request_never_prints_its_passcode() {
        let r = LoginRequest {
            user_id: "u".into(),
            card_serial: "c".into(),
            passcode: "secret-1234".into(),
        };
        assert!(!format!("{r:?}").contains("secret"));
    }
}
