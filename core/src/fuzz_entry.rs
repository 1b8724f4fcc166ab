//! One entry point per decoder that takes bytes from outside the device:
//! the fuzz targets in `fuzz/` call these, and `core/tests/fuzz_regressions.rs`
//! replays every input a fuzzer ever found through the same functions, so a
//! crasher stays fixed. Each must return (an `Err`, `None` or a value),
//! never panic, whatever the bytes; where a value decodes, it must survive
//! being encoded and decoded again unchanged.

use crate::audit::AuditEvent;
use crate::channel::Hello;
use crate::crypto::{self, SecretKey};
use crate::record::{Compartment, CompartmentDoc};

/// A sealed value (a store row, an archived event): opened with a key the
/// bytes were never sealed with, they must not open.
pub fn sealed_envelope(data: &[u8]) {
    let key = SecretKey::from_bytes([7; 32]);
    let opened = crypto::open(&key, &[b"records", b"row"], data);
    assert!(opened.is_err(), "bytes nobody sealed opened");
}

/// A role profile grant, as cached at login or received over the channel.
pub fn role_profile_grant(data: &[u8]) {
    let pinned = [9u8; 32];
    // Nothing signed by this key exists: no input may verify.
    assert!(crate::grant::verify_grant(data, &pinned, "device", 0).is_err());
}

/// An audit event (a store row, an uploaded event).
pub fn audit_event(data: &[u8]) {
    if let Some(event) = AuditEvent::decode(data) {
        let again = AuditEvent::decode(&event.encode());
        assert_eq!(
            again.as_ref(),
            Some(&event),
            "an event changed in a round trip"
        );
        // The FHIR mapping takes any event that decodes.
        let _ = event.to_fhir();
    }
}

/// A batch of uploaded audit events, and the server's acknowledgement.
pub fn audit_batch(data: &[u8]) {
    if let Ok(upload) = serde_json::from_slice::<crate::protocol::AuditUpload>(data) {
        let bytes = serde_json::to_vec(&upload).unwrap_or_default();
        let again: Option<crate::protocol::AuditUpload> = serde_json::from_slice(&bytes).ok();
        assert_eq!(again.as_ref(), Some(&upload));
    }
    let _ = serde_json::from_slice::<crate::protocol::AuditReply>(data);
}

/// The first words on a channel, and a sync session's frames.
pub fn channel_hello_and_frames(data: &[u8]) {
    if let Some(hello) = Hello::decode(data) {
        assert_eq!(Hello::decode(&hello.encode()), Some(hello));
    }
    let _ = crate::channel::session_frame_parts(data);
    let _ = crate::channel::SessionReply::decode(data);
}

/// The one-shot requests and replies (holdings, access log, encounters,
/// login) a device or the server reads off the channel.
pub fn channel_requests(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::protocol::HoldingsReply>(data);
    let _ = serde_json::from_slice::<crate::protocol::AccessLogRequest>(data);
    let _ = serde_json::from_slice::<crate::protocol::AccessLogReply>(data);
    let _ = serde_json::from_slice::<crate::protocol::EncounterRequest>(data);
    let _ = serde_json::from_slice::<crate::protocol::EncounterReply>(data);
    let _ = serde_json::from_slice::<crate::protocol::LoginRequest>(data);
    let _ = serde_json::from_slice::<crate::protocol::LoginResponse>(data);
}

/// A compartment document as it arrives by sync or from the store: if it
/// loads, every version in it can be materialised into a view.
pub fn compartment_document(data: &[u8]) {
    if let Ok(doc) = CompartmentDoc::load(Compartment::Core, data) {
        let _ = doc.view();
    }
}

/// An NHS number typed or scanned in.
pub fn nhs_number(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(n) = crate::NhsNumber::parse(text)
    {
        assert_eq!(crate::NhsNumber::parse(&n.digits()), Ok(n));
    }
}
