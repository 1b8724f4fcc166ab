//! What a device asks on its sync session (`channel::Session::ask`), and
//! the fetch: the stored documents a fresh device lacks altogether, sent as
//! they are stored (whole Automerge chunks), many to one answer, instead
//! of one samod sync exchange each (ADR 0016, part 2). The device reads
//! each through the `untrusted` guard before its engine takes it, as it
//! does a first sync message.
//!
//! An ask is JSON, tagged: `{"ask": "catalogue", ...}` or
//! `{"ask": "fetch", "docs": [...]}`. A fetch's answer is binary (the
//! documents' bytes, not inflated by an encoding): a version byte, a u32
//! count, then per document `[kind][u16 id length][id][u32 length][bytes]`,
//! big-endian; version 0 is a refusal, its reason following as UTF-8.

use serde::{Deserialize, Serialize};

use super::catalogue::{CatalogueError, CatalogueRequest, MAX_CATALOGUE_REQUEST};

/// Documents one fetch may ask for.
pub const MAX_FETCH_DOCS: usize = 4096;
/// The server stops adding documents to an answer past this many bytes
/// (the device asks again for the rest).
pub const FETCH_ANSWER_BUDGET: usize = 512 * 1024;

const VERSION: u8 = 1;
const REFUSED: u8 = 0;
const BYTES: u8 = 0;
const WITHHELD: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub docs: Vec<String>,
}

/// Everything a device may ask on its sync session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "kebab-case")]
pub enum Ask {
    Catalogue(CatalogueRequest),
    Fetch(FetchRequest),
}

impl Ask {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a device's ask, bounded and checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, CatalogueError> {
        if bytes.len() > MAX_CATALOGUE_REQUEST {
            return Err(CatalogueError::TooLarge);
        }
        let ask: Self =
            serde_json::from_slice(bytes).map_err(|_| CatalogueError::Malformed("ask"))?;
        match &ask {
            Ask::Catalogue(r) => r.validate()?,
            Ask::Fetch(f) => {
                if f.docs.len() > MAX_FETCH_DOCS {
                    return Err(CatalogueError::TooLarge);
                }
                if f.docs.iter().any(|d| d.is_empty() || d.len() > 64) {
                    return Err(CatalogueError::Malformed("document id"));
                }
            }
        }
        Ok(ask)
    }
}

/// One document of a fetch's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// As stored at the server.
    Bytes { doc: String, bytes: Vec<u8> },
    /// Not this device's to hold now (or unknown): left to samod's sync,
    /// which the share policy decides alike.
    Withheld { doc: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchAnswer {
    Documents(Vec<Fetched>),
    Refused(String),
}

impl FetchAnswer {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            FetchAnswer::Refused(reason) => {
                let mut out = vec![REFUSED];
                out.extend_from_slice(reason.as_bytes());
                out
            }
            FetchAnswer::Documents(docs) => {
                let mut out = vec![VERSION];
                out.extend_from_slice(&(docs.len() as u32).to_be_bytes());
                for d in docs {
                    let (kind, doc, bytes) = match d {
                        Fetched::Bytes { doc, bytes } => (BYTES, doc, bytes.as_slice()),
                        Fetched::Withheld { doc } => (WITHHELD, doc, &[][..]),
                    };
                    out.push(kind);
                    out.extend_from_slice(&(doc.len() as u16).to_be_bytes());
                    out.extend_from_slice(doc.as_bytes());
                    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
                out
            }
        }
    }

    /// Reads the server's answer; anything short, overlong or unknown is
    /// refused whole.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, CatalogueError> {
        let bad = CatalogueError::Malformed("fetch answer");
        let (&version, rest) = bytes.split_first().ok_or(bad.clone())?;
        bytes = rest;
        if version == REFUSED {
            return Ok(FetchAnswer::Refused(
                String::from_utf8_lossy(bytes).into_owned(),
            ));
        }
        if version != VERSION {
            return Err(bad);
        }
        let (count, rest) = take_u32(bytes).ok_or(bad.clone())?;
        bytes = rest;
        if count > MAX_FETCH_DOCS {
            return Err(bad);
        }
        let mut docs = Vec::with_capacity(count);
        for _ in 0..count {
            let (&kind, rest) = bytes.split_first().ok_or(bad.clone())?;
            let (len, rest) = take_u16(rest).ok_or(bad.clone())?;
            let (doc, rest) = take(rest, len).ok_or(bad.clone())?;
            let doc = std::str::from_utf8(doc)
                .map_err(|_| bad.clone())?
                .to_owned();
            let (len, rest) = take_u32(rest).ok_or(bad.clone())?;
            let (body, rest) = take(rest, len).ok_or(bad.clone())?;
            bytes = rest;
            docs.push(match kind {
                BYTES => Fetched::Bytes {
                    doc,
                    bytes: body.to_vec(),
                },
                WITHHELD if body.is_empty() => Fetched::Withheld { doc },
                _ => return Err(bad),
            });
        }
        if !bytes.is_empty() {
            return Err(bad);
        }
        Ok(FetchAnswer::Documents(docs))
    }
}

fn take(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

fn take_u16(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (n, rest) = take(bytes, 2)?;
    Some((usize::from(u16::from_be_bytes([n[0], n[1]])), rest))
}

fn take_u32(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (n, rest) = take(bytes, 4)?;
    let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
    Some((usize::try_from(n).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_round_trips_and_damage_is_refused_whole() {
        let answer = FetchAnswer::Documents(vec![
            Fetched::Bytes {
                doc: "doc-a".into(),
                bytes: vec![1, 2, 3],
            },
            Fetched::Withheld {
                doc: "doc-b".into(),
            },
        ]);
        let bytes = answer.encode();
        assert_eq!(FetchAnswer::decode(&bytes), Ok(answer));
        for cut in 1..bytes.len() {
            assert!(
                FetchAnswer::decode(&bytes[..cut]).is_err(),
                "cut at {cut} read as whole"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(FetchAnswer::decode(&longer).is_err(), "trailing bytes");
        let mut unknown = bytes.clone();
        unknown[5] = 7;
        assert!(FetchAnswer::decode(&unknown).is_err());
        assert!(FetchAnswer::decode(&[9]).is_err());
        assert!(FetchAnswer::decode(&[]).is_err());
        let refused = FetchAnswer::Refused("the ask is malformed".into());
        assert_eq!(FetchAnswer::decode(&refused.encode()), Ok(refused));
    }

    #[test]
    fn asks_are_tagged_and_bounded() {
        let fetch = Ask::Fetch(FetchRequest {
            docs: vec!["d".into()],
        });
        assert_eq!(Ask::decode(&fetch.encode()), Ok(fetch));
        let many = Ask::Fetch(FetchRequest {
            docs: vec!["d".into(); MAX_FETCH_DOCS + 1],
        });
        assert_eq!(Ask::decode(&many.encode()), Err(CatalogueError::TooLarge));
        assert_eq!(
            Ask::decode(br#"{"ask":"fetch","docs":[""]}"#),
            Err(CatalogueError::Malformed("document id"))
        );
        assert_eq!(
            Ask::decode(br#"{"ask":"delete-everything"}"#),
            Err(CatalogueError::Malformed("ask"))
        );
    }
}
