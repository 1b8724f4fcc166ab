//! The catalogue exchange (ADR 0016, part 2): before samod is asked about
//! any document, the device says in one message what it holds, as one
//! digest per record, and the server answers in the same round trip which
//! documents differ. Only those run Automerge's sync; an unchanged caseload
//! costs one round trip and a few kilobytes.
//!
//! Carried as an *ask* on the sync session (`channel::Session::ask`,
//! the envelope: `protocol::fetch::Ask`), not as a samod message. A record is named by one of its documents' ids (the
//! smallest the device holds), never by its NHS number. The digests and
//! the list digest are pure functions here, computed the same way by both
//! sides.

use serde::{Deserialize, Serialize};

use super::{HoldingsList, PushRefusal};

pub const CATALOGUE_FORMAT: u32 = 1;
/// The most records one request may name (a caseload is in the hundreds).
pub const MAX_CATALOGUE_RECORDS: usize = 10_000;
/// The largest request the server reads.
pub const MAX_CATALOGUE_REQUEST: usize = 1024 * 1024;

/// A record as the device holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDigest {
    /// The smallest id among the record's documents the device holds.
    pub doc: String,
    /// [`record_digest`] over those documents, hex.
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueRequest {
    pub format: u32,
    /// [`list_digest`] of the holdings list the device last applied (hex);
    /// the server sends the list only when its own differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    pub records: Vec<RecordDigest>,
}

/// One document the device should bring in step, with the server's heads
/// (hex change hashes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeads {
    pub doc: String,
    pub heads: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "catalogue", rename_all = "kebab-case")]
pub enum CatalogueReply {
    Answered {
        /// The device's current list, when it differs from the one the
        /// device applied; absent when the device has no current grant too
        /// (`has_grant` then says so).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list: Option<HoldingsList>,
        has_grant: bool,
        /// Every document of a listed record whose digest differed (or
        /// that the device did not name), with the server's heads (none for
        /// a record the device did not name: it holds nothing to compare).
        differing: Vec<DocHeads>,
        /// The keys (as the device sent them) of the records whose digest
        /// matched: only these, and what differed, were compared.
        #[serde(default)]
        matched: Vec<String>,
        /// The device's pushes the server refused (as in the holdings reply).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        refused: Vec<PushRefusal>,
    },
    /// The request could not be read; names what, never a value.
    Refused { reason: String },
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogueError {
    #[error("the catalogue {0} is malformed")]
    Malformed(&'static str),
    #[error("the catalogue request is too large")]
    TooLarge,
    #[error("the catalogue has format {0}, which this build does not read")]
    Format(u32),
}

impl CatalogueRequest {
    /// Reads a device's request, bounded.
    pub fn decode(bytes: &[u8]) -> Result<Self, CatalogueError> {
        if bytes.len() > MAX_CATALOGUE_REQUEST {
            return Err(CatalogueError::TooLarge);
        }
        let r: Self =
            serde_json::from_slice(bytes).map_err(|_| CatalogueError::Malformed("request"))?;
        r.validate()?;
        Ok(r)
    }

    /// What a request read whole must also be.
    pub fn validate(&self) -> Result<(), CatalogueError> {
        if self.format != CATALOGUE_FORMAT {
            return Err(CatalogueError::Format(self.format));
        }
        if self.records.len() > MAX_CATALOGUE_RECORDS {
            return Err(CatalogueError::TooLarge);
        }
        if self
            .records
            .iter()
            .any(|d| d.doc.len() > 64 || d.digest.len() != 32)
        {
            return Err(CatalogueError::Malformed("record digest"));
        }
        Ok(())
    }
}

impl CatalogueReply {
    pub fn decode(bytes: &[u8]) -> Result<Self, CatalogueError> {
        serde_json::from_slice(bytes).map_err(|_| CatalogueError::Malformed("reply"))
    }
}

/// The digest of one record as held: its documents in id order, each with
/// its heads in order. Equal digests mean the same documents at the same
/// heads (16 bytes of BLAKE3: a collision would need 2^64 work, and a
/// device gains nothing by one but skipping its own sync).
pub fn record_digest(docs: &[(String, Vec<automerge::ChangeHash>)]) -> String {
    let mut docs: Vec<_> = docs.iter().collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = blake3::Hasher::new_derive_key("scr-sync catalogue record digest v1");
    for (doc, heads) in docs {
        let mut heads = heads.clone();
        heads.sort();
        h.update(&(doc.len() as u64).to_be_bytes());
        h.update(doc.as_bytes());
        h.update(&(heads.len() as u64).to_be_bytes());
        for head in heads {
            h.update(&head.0);
        }
    }
    crate::channel::to_hex(&h.finalize().as_bytes()[..16])
}

/// The digest of a holdings list, as the server would send it.
pub fn list_digest(list: &HoldingsList) -> String {
    let json = serde_json::to_vec(list).unwrap_or_default();
    let hash = blake3::Hasher::new_derive_key("scr-sync catalogue list digest v1")
        .update(&json)
        .finalize();
    crate::channel::to_hex(&hash.as_bytes()[..16])
}

/// Change hashes as hex, and back (a bad one is refused, not skipped).
pub fn heads_to_hex(heads: &[automerge::ChangeHash]) -> Vec<String> {
    heads.iter().map(|h| crate::channel::to_hex(&h.0)).collect()
}

pub fn heads_from_hex(heads: &[String]) -> Result<Vec<automerge::ChangeHash>, CatalogueError> {
    heads
        .iter()
        .map(|h| {
            crate::channel::from_hex(h)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(automerge::ChangeHash)
                .ok_or(CatalogueError::Malformed("heads"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(b: u8) -> automerge::ChangeHash {
        automerge::ChangeHash([b; 32])
    }

    #[test]
    fn a_record_digest_ignores_order_and_sees_every_head() {
        let a = vec![
            ("doc-a".to_owned(), vec![hash(1), hash(2)]),
            ("doc-b".to_owned(), vec![hash(3)]),
        ];
        let b = vec![
            ("doc-b".to_owned(), vec![hash(3)]),
            ("doc-a".to_owned(), vec![hash(2), hash(1)]),
        ];
        assert_eq!(record_digest(&a), record_digest(&b));
        let more = vec![
            ("doc-a".to_owned(), vec![hash(1), hash(2)]),
            ("doc-b".to_owned(), vec![hash(4)]),
        ];
        assert_ne!(record_digest(&a), record_digest(&more));
        // A document moved between ids is not the same holding.
        let moved = vec![
            ("doc-a".to_owned(), vec![hash(1), hash(2), hash(3)]),
            ("doc-b".to_owned(), vec![]),
        ];
        assert_ne!(record_digest(&a), record_digest(&moved));
        assert_eq!(record_digest(&a).len(), 32);
    }

    #[test]
    fn requests_are_bounded_and_typed() {
        let ok = CatalogueRequest {
            format: CATALOGUE_FORMAT,
            list: None,
            records: vec![RecordDigest {
                doc: "d".into(),
                digest: "0".repeat(32),
            }],
        };
        let bytes = serde_json::to_vec(&ok).unwrap_or_default();
        assert_eq!(CatalogueRequest::decode(&bytes), Ok(ok.clone()));
        assert_eq!(
            CatalogueRequest::decode(b"{\"format\":1}"),
            Err(CatalogueError::Malformed("request"))
        );
        let mut newer = ok.clone();
        newer.format = 9;
        let bytes = serde_json::to_vec(&newer).unwrap_or_default();
        assert_eq!(
            CatalogueRequest::decode(&bytes),
            Err(CatalogueError::Format(9))
        );
        let mut bad = ok;
        bad.records[0].digest = "zz".into();
        let bytes = serde_json::to_vec(&bad).unwrap_or_default();
        assert_eq!(
            CatalogueRequest::decode(&bytes),
            Err(CatalogueError::Malformed("record digest"))
        );
        assert_eq!(
            CatalogueRequest::decode(&vec![b' '; MAX_CATALOGUE_REQUEST + 1]),
            Err(CatalogueError::TooLarge)
        );
    }

    #[test]
    fn heads_round_trip_and_bad_hex_is_refused() {
        let heads = vec![hash(7), hash(9)];
        assert_eq!(heads_from_hex(&heads_to_hex(&heads)), Ok(heads));
        assert_eq!(
            heads_from_hex(&["ab".into()]),
            Err(CatalogueError::Malformed("heads"))
        );
    }
}
