//! One compartment as an Automerge document.
//!
//! Layout (format 1):
//! ```text
//! { "format": 1, "compartment": "core", "versions": { <version id>: <JSON of EntryVersion> } }
//! ```
//! Versions are immutable, so each is a single string value under its own
//! unique key: concurrent writers add different keys and Automerge's merge is
//! plain set union. Nothing is ever put twice under one key by honest writers;
//! if it happens anyway, every conflicting value is still read.

use automerge::transaction::Transactable;
use automerge::{
    AutoCommit, ChangeHash, LoadOptions, ObjType, OnPartialLoad, ROOT, ReadDoc, ScalarValueRef,
    Value, ValueRef, VerificationMode,
};

use super::{Compartment, CompartmentView, EntryVersion, VERSION_FORMAT, materialise};

/// The document layout version, stored in the document itself.
pub const DOC_FORMAT: i64 = 1;
const VERSIONS: &str = "versions";

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("the document bytes are not a valid Automerge document")]
    Malformed(#[source] Box<automerge::AutomergeError>),
    #[error("the document bytes are not chunks SCR Sync reads, or broke the Automerge parser")]
    Unparseable,
    #[error("the document is not an SCR compartment")]
    NotACompartment,
    #[error("the document has layout format {0}, newer than this build understands")]
    NewerFormat(i64),
    #[error("the document holds compartment {found:?}, not {expected:?}")]
    WrongCompartment {
        expected: Compartment,
        found: Option<Compartment>,
    },
    #[error("a version could not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("automerge refused the change")]
    Automerge(#[source] Box<automerge::AutomergeError>),
}

/// A compartment document and the rules for reading and adding versions.
pub struct CompartmentDoc {
    compartment: Compartment,
    doc: AutoCommit,
}

impl CompartmentDoc {
    /// A new, empty compartment. Created once, by whoever creates the record;
    /// every other replica starts from those bytes.
    pub fn create(compartment: Compartment) -> Result<Self, DocError> {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "format", DOC_FORMAT)
            .map_err(|e| DocError::Automerge(Box::new(e)))?;
        doc.put(ROOT, "compartment", compartment.as_str())
            .map_err(|e| DocError::Automerge(Box::new(e)))?;
        doc.put_object(ROOT, VERSIONS, ObjType::Map)
            .map_err(|e| DocError::Automerge(Box::new(e)))?;
        doc.commit();
        Ok(Self { compartment, doc })
    }

    /// Loads bytes from another replica (a full save). Strict: bytes that
    /// are not wholly a valid document are refused, not partly loaded.
    pub fn load(expected: Compartment, bytes: &[u8]) -> Result<Self, DocError> {
        Self::from_doc(expected, strict_load(bytes)?)
    }

    /// Loads this device's own stored chunks: a snapshot and loose changes,
    /// in any order. The chunks were authenticated when unsealed, so hashes
    /// are not verified a second time.
    pub fn load_stored(expected: Compartment, bytes: &[u8]) -> Result<Self, DocError> {
        let doc = AutoCommit::load_with_options(
            bytes,
            LoadOptions::new()
                .on_partial_load(OnPartialLoad::Error)
                .verification_mode(VerificationMode::DontCheck),
        )
        .map_err(|e| DocError::Malformed(Box::new(e)))?;
        Self::from_doc(expected, doc)
    }

    fn from_doc(expected: Compartment, doc: AutoCommit) -> Result<Self, DocError> {
        let this = Self {
            compartment: expected,
            doc,
        };
        this.check_header()?;
        Ok(this)
    }

    /// Every value under "format" and "compartment" must agree: merging in
    /// another document's bytes leaves conflicting values there, and the
    /// winner alone would hide that.
    fn check_header(&self) -> Result<(), DocError> {
        check_header(&self.doc, self.compartment)
    }

    pub fn compartment(&self) -> Compartment {
        self.compartment
    }

    /// Adds one version and commits; returns the new change's hash.
    pub fn put_version(&mut self, version: &EntryVersion) -> Result<ChangeHash, DocError> {
        let json = serde_json::to_string(version).map_err(DocError::Encode)?;
        let versions = self.versions_obj().ok_or(DocError::NotACompartment)?;
        self.doc
            .put(&versions, version.version_id.to_string(), json)
            .map_err(|e| DocError::Automerge(Box::new(e)))?;
        self.doc.commit().ok_or(DocError::NotACompartment)
    }

    fn versions_obj(&self) -> Option<automerge::ObjId> {
        match self.doc.get(ROOT, VERSIONS) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        }
    }

    /// Every version present, and the keys whose values could not be read.
    pub fn versions(&self) -> (Vec<EntryVersion>, Vec<String>) {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        // Two replicas that each created the map would leave two conflicting
        // objects under "versions"; read them all so nothing is lost.
        let objs = self.doc.get_all(ROOT, VERSIONS).unwrap_or_default();
        for (value, obj) in objs {
            if !matches!(value, Value::Object(ObjType::Map)) {
                continue;
            }
            for item in self.doc.map_range(&obj, ..) {
                if item.conflict {
                    for (value, _) in self
                        .doc
                        .get_all(&obj, item.key.as_ref())
                        .unwrap_or_default()
                    {
                        let text = match &value {
                            Value::Scalar(s) => s.as_str(),
                            Value::Object(_) => None,
                        };
                        push_parsed(text, &item.key, &mut out, &mut unreadable);
                    }
                } else {
                    let text = match &item.value {
                        ValueRef::Scalar(ScalarValueRef::Str(s)) => Some(s.as_ref()),
                        _ => None,
                    };
                    push_parsed(text, &item.key, &mut out, &mut unreadable);
                }
            }
        }
        (out, unreadable)
    }

    pub fn view(&self) -> CompartmentView {
        let (versions, unreadable) = self.versions();
        CompartmentView {
            compartment: self.compartment,
            entries: materialise(versions),
            unreadable,
        }
    }

    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The whole document, compressed (Automerge's own `save`).
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes made since `heads`, as raw change chunks with their hashes.
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<(ChangeHash, Vec<u8>)> {
        self.doc
            .get_changes(heads)
            .into_iter()
            .map(|c| (c.hash(), c.raw_bytes().to_vec()))
            .collect()
    }

    /// Merges another replica's bytes (a save or any set of changes) into
    /// this one, then rechecks the header so foreign bytes cannot retitle it.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), DocError> {
        // Merge into a copy first: bytes that fail the header check must not
        // have touched this document.
        let mut candidate = Self {
            compartment: self.compartment,
            doc: self.doc.clone(),
        };
        let mut other = strict_load(bytes)?;
        candidate
            .doc
            .merge(&mut other)
            .map_err(|e| DocError::Malformed(Box::new(e)))?;
        candidate.check_header()?;
        *self = candidate;
        Ok(())
    }
}

/// Loads bytes from outside (see `untrusted`: automerge can panic on some).
fn strict_load(bytes: &[u8]) -> Result<AutoCommit, DocError> {
    let mut budget = super::untrusted::MAX_INFLATED_DOCUMENT;
    if !super::untrusted::plain_chunks(bytes)
        || !super::untrusted::inflation_within(bytes, &mut budget)
    {
        return Err(DocError::Unparseable);
    }
    super::untrusted::contained(|| {
        AutoCommit::load_with_options(
            bytes,
            LoadOptions::new()
                .on_partial_load(OnPartialLoad::Error)
                .verification_mode(VerificationMode::Check),
        )
    })
    .ok_or(DocError::Unparseable)?
    .map_err(|e| DocError::Malformed(Box::new(e)))
}

fn push_parsed(
    text: Option<&str>,
    key: &str,
    out: &mut Vec<EntryVersion>,
    unreadable: &mut Vec<String>,
) {
    match text.map(serde_json::from_str::<EntryVersion>) {
        Some(Ok(v)) if v.format <= VERSION_FORMAT && v.version_id.to_string() == key => out.push(v),
        _ => unreadable.push(key.to_owned()),
    }
}

/// Every value under "format" and "compartment" must agree: merging in
/// another document's bytes leaves conflicting values there, and the
/// winner alone would hide that.
pub(crate) fn check_header(doc: &impl ReadDoc, expected: Compartment) -> Result<(), DocError> {
    let formats = doc.get_all(ROOT, "format").unwrap_or_default();
    if formats.is_empty() {
        return Err(DocError::NotACompartment);
    }
    for (value, _) in &formats {
        let format = match value {
            Value::Scalar(s) => match s.as_ref() {
                automerge::ScalarValue::Int(n) => *n,
                automerge::ScalarValue::Uint(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                _ => return Err(DocError::NotACompartment),
            },
            Value::Object(_) => return Err(DocError::NotACompartment),
        };
        if format > DOC_FORMAT {
            return Err(DocError::NewerFormat(format));
        }
    }
    let found: Vec<Option<Compartment>> = doc
        .get_all(ROOT, "compartment")
        .unwrap_or_default()
        .iter()
        .map(|(value, _)| match value {
            Value::Scalar(s) => s.as_str().and_then(Compartment::parse),
            Value::Object(_) => None,
        })
        .collect();
    if found.is_empty() || found.iter().any(|c| *c != Some(expected)) {
        return Err(DocError::WrongCompartment {
            expected,
            found: found.into_iter().flatten().find(|c| *c != expected),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_compartments_bytes_never_merge_in() {
        // Actor ids are random, so which value "wins" varies: try many times.
        for _ in 0..32 {
            let mut core = CompartmentDoc::create(Compartment::Core).unwrap();
            let mut other = CompartmentDoc::create(Compartment::Additional).unwrap();
            let before = core.save();
            assert!(matches!(
                core.merge_bytes(&other.save()),
                Err(DocError::WrongCompartment { .. })
            ));
            assert_eq!(core.save(), before);
        }
    }

    #[test]
    fn loading_checks_the_compartment_and_format() {
        let mut core = CompartmentDoc::create(Compartment::Core).unwrap();
        let bytes = core.save();
        assert!(CompartmentDoc::load(Compartment::Core, &bytes).is_ok());
        assert!(matches!(
            CompartmentDoc::load(Compartment::Sensitive, &bytes),
            Err(DocError::WrongCompartment { .. })
        ));
        let mut newer = AutoCommit::new();
        newer.put(ROOT, "format", DOC_FORMAT + 1).unwrap();
        newer.put(ROOT, "compartment", "core").unwrap();
        assert!(matches!(
            CompartmentDoc::load(Compartment::Core, &newer.save()),
            Err(DocError::NewerFormat(2))
        ));
        assert!(matches!(
            CompartmentDoc::load(Compartment::Core, &AutoCommit::new().save()),
            Err(DocError::NotACompartment)
        ));
        assert!(matches!(
            CompartmentDoc::load(Compartment::Core, b"not automerge"),
            Err(DocError::Unparseable)
        ));
        // Whole chunks whose content automerge refuses (here, its
        // checksum): malformed.
        let mut damaged = AutoCommit::new().save();
        damaged[4] ^= 0xff;
        assert!(matches!(
            CompartmentDoc::load(Compartment::Core, &damaged),
            Err(DocError::Malformed(_))
        ));
    }
}
