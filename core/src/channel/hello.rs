//! The first words on a channel: what the device wants, carried encrypted
//! in the last handshake message (the login exchange that may follow:
//! `protocol::login`). JSON, versioned.

use serde::{Deserialize, Serialize};

/// Why the device connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Hand the channel to samod.
    Sync,
    /// One login exchange, then close.
    Login,
    /// The device's current holdings list, then close.
    Holdings,
    /// One batch of the device's audit queue and its acknowledgement, then
    /// close. Admitted for a revoked device too: its trail is still owed.
    Audit,
    /// The recorded accesses to one patient's record (the patient's own
    /// phone, or a privacy officer), then close.
    AccessLog,
    /// Open or close an encounter with a patient found online, then close.
    Encounter,
    /// The device's user logged out: the server retires the grant it
    /// issued to the device (it authorises nothing more), then close.
    Logout,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    #[serde(rename = "v")]
    pub version: u8,
    pub purpose: Purpose,
    /// A one-time enrollment token, on a device's first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_token: Option<String>,
    /// A sync session to resume (ADR 0005), on a reconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// The record layout the app reads (ADR 0011); apps that do not say
    /// read layout 1, and are never sent a compartment it lacks.
    #[serde(default = "layout_1")]
    pub layout: u8,
}

/// The record layout this build reads: permissions in their own
/// compartment.
pub const RECORD_LAYOUT: u8 = 2;

fn layout_1() -> u8 {
    1
}

/// Which session to go on with, and how many of the server's messages the
/// device already has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Hex of the session id the server gave.
    pub session: String,
    pub received: u64,
}

impl Hello {
    pub fn new(purpose: Purpose, enrollment_token: Option<&str>) -> Self {
        Self {
            version: 1,
            purpose,
            enrollment_token: enrollment_token.map(str::to_owned),
            resume: None,
            layout: RECORD_LAYOUT,
        }
    }

    /// A hello resuming a sync session.
    pub fn resuming(session: &[u8], received: u64) -> Self {
        Self {
            resume: Some(Resume {
                session: to_hex(session),
                received,
            }),
            ..Self::new(Purpose::Sync, None)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// An empty payload is a plain sync hello; anything else must parse.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::new(Purpose::Sync, None));
        }
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|h| h.version == 1)
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let h = Hello::new(Purpose::Login, Some("abc"));
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        assert_eq!(Hello::decode(b""), Some(Hello::new(Purpose::Sync, None)));
        assert_eq!(Hello::decode(b"not json"), None);
        let r = Hello::resuming(&[1, 2], 5);
        assert_eq!(Hello::decode(&r.encode()), Some(r));
        // An older app's hello, without a layout: layout 1.
        let old = Hello::decode(br#"{"v":1,"purpose":"holdings"}"#).unwrap();
        assert_eq!((old.purpose, old.layout), (Purpose::Holdings, 1));
        assert_eq!(Hello::decode(br#"{"v":2,"purpose":"sync"}"#), None);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
