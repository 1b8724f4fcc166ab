//! Which device each holdings notice document belongs to, and back: the
//! share policy shares a notice with its owner alone. Sealed in the server
//! store, named by the device key or the document id.

use samod::DocumentId;
use scr_core::Store;
use scr_core::channel::hex_key;

fn doc_name(device: &[u8; 32]) -> String {
    format!("holdings-doc:{}", hex_key(device))
}

fn owner_name(doc_id: &str) -> String {
    format!("holdings-owner:{doc_id}")
}

/// The device whose holdings list `doc_id` is, if it is one.
pub fn owner_of(store: &Store, doc_id: &str) -> Option<[u8; 32]> {
    let bytes = store.secret(&owner_name(doc_id)).ok()??;
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
    store.put_secret(&owner_name(doc_id), device)?;
    store.put_secret(&doc_name(device), doc_id.as_bytes())
}
