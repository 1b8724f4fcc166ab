//! Which device each holdings notice document belongs to, and back: the
//! share policy shares a notice with its owner alone. Sealed in the server
//! store, named by the device key or by the document's keyed hash (the
//! store keeps document ids only so; a name written with the id itself,
//! before, is still read).

use samod::DocumentId;
use scr_core::Store;
use scr_core::channel::hex_key;

fn doc_name(device: &[u8; 32]) -> String {
    format!("holdings-doc:{}", hex_key(device))
}

fn owner_name(store: &Store, doc_id: &str) -> String {
    let hashed: String = store
        .document_ref(doc_id)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("holdings-owner:{hashed}")
}

/// The name an owner was kept under before names were hashed.
fn owner_name_in_clear(doc_id: &str) -> String {
    format!("holdings-owner:{doc_id}")
}

/// The device whose holdings list `doc_id` is, if it is one.
pub fn owner_of(store: &Store, doc_id: &str) -> Option<[u8; 32]> {
    let bytes = match store.secret(&owner_name(store, doc_id)).ok()? {
        Some(bytes) => bytes,
        None => store.secret(&owner_name_in_clear(doc_id)).ok()??,
    };
    bytes.as_slice().try_into().ok()
}

/// The device's notice document, once created.
pub(crate) fn doc_of(store: &Store, device: &[u8; 32]) -> Option<DocumentId> {
    let bytes = store.secret(&doc_name(device)).ok()??;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

/// Records a new notice document: the owner first, so the share policy
/// knows the document is this device's before anyone can learn its id.
pub(crate) fn record_notice(
    store: &Store,
    device: &[u8; 32],
    doc_id: &str,
) -> Result<(), scr_core::StoreError> {
    store.put_secret(&owner_name(store, doc_id), device)?;
    store.put_secret(&doc_name(device), doc_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scr_core::crypto::{SecretKey, StaticKeyProvider};

    fn store(dir: &std::path::Path) -> Store {
        let kek = StaticKeyProvider::new(SecretKey::from_bytes([3; 32]));
        Store::open(dir.join("server.db"), &kek).unwrap()
    }

    #[test]
    fn a_notice_owner_is_kept_under_the_documents_keyed_hash_not_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let id = samod::DocumentId::try_from(vec![42u8; 16])
            .unwrap()
            .to_string();
        let doc = id.as_str();
        record_notice(&s, &[7; 32], doc).unwrap();
        assert_eq!(owner_of(&s, doc), Some([7; 32]));
        let other = samod::DocumentId::try_from(vec![43u8; 16])
            .unwrap()
            .to_string();
        assert_eq!(owner_of(&s, &other), None);
        assert_eq!(
            doc_of(&s, &[7; 32]).map(|d| d.to_string()).as_deref(),
            Some(doc)
        );
        // The name is not the id, but the value of the device's own row is
        // (sealed): nothing of it in the file's clear bytes.
        drop(s);
        let mut bytes = Vec::new();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
        }
        assert!(
            !bytes.windows(doc.len()).any(|w| w == doc.as_bytes()),
            "the document id is in the store in clear"
        );
    }

    #[test]
    fn an_owner_kept_under_the_id_before_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let doc = "4mnmEEyb2bFxTqDpt6tq6jvx9yoU";
        s.put_secret(&owner_name_in_clear(doc), &[9; 32]).unwrap();
        assert_eq!(owner_of(&s, doc), Some([9; 32]));
    }
}
