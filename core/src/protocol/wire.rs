//! Reading samod's wire messages (CBOR maps) just far enough to guard
//! either end (the server against devices, a device against what it
//! receives): which kind of message, which document, and the Automerge
//! sync message inside. samod decodes them fully afterwards.

use crate::record::untrusted::{Parsed, parse_changes, uleb128};
use automerge::sync::Message;

pub struct Incoming {
    pub kind: String,
    pub document_id: Option<String>,
    /// The Automerge sync message of a `sync` or `request`, decoded once
    /// here for both the guard and the push check (`Err` if it does not
    /// decode).
    pub sync: Option<Result<Message, ()>>,
}

/// `None` when the message is not a CBOR map of the expected shape (samod
/// then refuses it itself).
pub fn parse(message: &[u8]) -> Option<Incoming> {
    let mut d = minicbor::Decoder::new(message);
    let entries = d.map().ok()??;
    let (mut kind, mut document_id, mut data) = (None, None, None);
    for _ in 0..entries {
        match d.str().ok()? {
            "type" => kind = Some(d.str().ok()?.to_owned()),
            "documentId" => document_id = Some(document_id_at(&mut d)?),
            "data" => data = Some(d.bytes().ok()?),
            _ => d.skip().ok()?,
        }
    }
    let kind: String = kind?;
    let sync = match kind.as_str() {
        "sync" | "request" => data.map(|b| Message::decode(b).map_err(|_| ())),
        _ => None,
    };
    Some(Incoming {
        kind,
        document_id,
        sync,
    })
}

/// A message's type and document, without decoding its data (what the
/// server reads of each message it sends, to log which documents went to
/// which device).
pub fn kind_and_document(message: &[u8]) -> Option<(String, Option<String>)> {
    let mut d = minicbor::Decoder::new(message);
    let entries = d.map().ok()??;
    let (mut kind, mut document_id) = (None, None);
    for _ in 0..entries {
        match d.str().ok()? {
            "type" => kind = Some(d.str().ok()?.to_owned()),
            "documentId" => document_id = Some(document_id_at(&mut d)?),
            _ => d.skip().ok()?,
        }
    }
    Some((kind?, document_id))
}

/// The document id at the decoder: samod accepts one as text or as bytes.
fn document_id_at(d: &mut minicbor::Decoder<'_>) -> Option<String> {
    Some(match d.datatype().ok()? {
        minicbor::data::Type::Bytes => bs58_of(d.bytes().ok()?),
        _ => d.str().ok()?.to_owned(),
    })
}

/// A document id given as bytes, in the text form samod uses elsewhere.
fn bs58_of(bytes: &[u8]) -> String {
    samod::DocumentId::try_from(bytes.to_vec())
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// Whether the server passes the message on to samod. Refused:
/// - `ephemeral` messages: unused by SCR Sync, and samod keeps every
///   session id a peer sends for as long as it runs;
/// - sync messages whose Bloom filter would make automerge divide by zero
///   (no bits) or allocate without bound (a huge probe count) when it
///   answers them;
/// - sync messages whose changes do not parse, or make automerge's parser
///   panic (`scr_core::record::untrusted`), which in samod would take a
///   document's actor down, or whose deflated parts inflate past
///   `untrusted::MAX_INFLATED_MESSAGE` (a deflate bomb).
pub fn acceptable(incoming: &Incoming) -> bool {
    vet(incoming).is_some()
}

/// [`acceptable`], keeping what it parsed: the message's changes, each
/// parsed once (for the push check, which reads them next); `None` when
/// the message is refused.
pub fn vet(incoming: &Incoming) -> Option<Vec<Parsed>> {
    match incoming.kind.as_str() {
        "ephemeral" => None,
        _ => match &incoming.sync {
            Some(Ok(message)) => {
                let sane = message
                    .have
                    .iter()
                    .all(|have| sane_bloom(&have.bloom.to_bytes()));
                sane.then(|| parse_changes(message.changes.iter()))?
            }
            Some(Err(())) => None,
            None => Some(Vec::new()),
        },
    }
}

/// The encoded filter is `num_entries`, `bits_per_entry`, `probes` (LEB128)
/// then the bits; empty means no entries. automerge itself writes 10 bits
/// per entry and 7 probes.
fn sane_bloom(encoded: &[u8]) -> bool {
    let mut rest = encoded;
    let mut next = || uleb128(&mut rest);
    match (next(), next(), next()) {
        _ if encoded.is_empty() => true,
        (Some(0), _, _) => true,
        (Some(_), Some(bits), Some(probes)) => {
            (1..=32).contains(&bits) && (1..=16).contains(&probes)
        }
        _ => false,
    }
}

/// The document an incoming wire message carries changes for, if any (a
/// `sync` or `request` message whose Automerge sync message has changes).
pub fn document_with_changes(incoming: &Incoming) -> Option<String> {
    let Some(Ok(sync)) = &incoming.sync else {
        return None;
    };
    (!sync.changes.is_empty())
        .then(|| incoming.document_id.clone())
        .flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bloom(entries: u8, bits: u8, probes: u8) -> Vec<u8> {
        vec![entries, bits, probes, 0xff]
    }

    #[test]
    fn filters_automerge_writes_pass_and_degenerate_ones_do_not() {
        assert!(sane_bloom(&[]));
        assert!(sane_bloom(&bloom(1, 10, 7)));
        assert!(sane_bloom(&bloom(0, 0, 0)));
        assert!(!sane_bloom(&bloom(1, 0, 7)), "no bits: divide by zero");
        assert!(!sane_bloom(&bloom(1, 10, 0)));
        assert!(
            !sane_bloom(&[1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            "u32::MAX probes"
        );
        assert!(!sane_bloom(&[1, 10]), "truncated");
    }

    /// A sync message carrying `chunk` as its changes, as a device would
    /// send it after a real local change.
    fn sync_carrying(chunk: &[u8]) -> Incoming {
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        automerge::transaction::Transactable::put(&mut tx, automerge::ROOT, "k", "v").unwrap();
        tx.commit();
        let mut state = automerge::sync::State::new();
        let mut message =
            automerge::sync::SyncDoc::generate_sync_message(&doc, &mut state).unwrap();
        message.changes = vec![chunk.to_vec()].into();
        Incoming {
            kind: "sync".into(),
            document_id: None,
            sync: Some(Message::decode(&message.encode()).map_err(|_| ())),
        }
    }

    #[test]
    fn changes_that_break_automerges_parser_are_refused() {
        let crasher = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/regressions/compartment_document/crash-hexane-leb128-unwrap"),
        )
        .unwrap();
        assert!(!acceptable(&sync_carrying(&crasher)));
        // The same, as a whole samod message (the fuzz regression input).
        let wire = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/regressions/sync_wire_message/crash-hexane-in-sync-changes"),
        )
        .unwrap();
        let incoming = parse(&wire).unwrap();
        assert!(matches!(&incoming.sync, Some(Ok(m)) if m.changes.len() == 1));
        assert!(!acceptable(&incoming));
        assert!(!acceptable(&sync_carrying(b"garbage")));
        let mut doc = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "n", 1).unwrap();
        assert!(acceptable(&sync_carrying(&doc.save_incremental())));
    }

    #[test]
    fn ephemeral_messages_are_refused() {
        let incoming = Incoming {
            kind: "ephemeral".into(),
            document_id: None,
            sync: None,
        };
        assert!(!acceptable(&incoming));
    }
}
