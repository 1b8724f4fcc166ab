//! What the `uniffi` feature adds: the scaffolding for the records and
//! enums derived on the core's value types, and identifiers crossing the
//! FFI as strings. An NHS number is checked (Modulus 11) when it comes in,
//! so a bad one is a typed error in Kotlin or Swift, never a panic here.

use crate::NhsNumber;
use crate::record::{EntryId, VersionId};

uniffi::custom_type!(NhsNumber, String, {
    lower: |n| n.digits(),
    try_lift: |s| Ok(NhsNumber::parse(&s)?),
});

uniffi::custom_type!(EntryId, String, {
    lower: |id| id.to_string(),
    try_lift: |s| EntryId::parse(&s).ok_or_else(|| uniffi::deps::anyhow::anyhow!("not an entry id")),
});

uniffi::custom_type!(VersionId, String, {
    lower: |id| id.to_string(),
    try_lift: |s| VersionId::parse(&s).ok_or_else(|| uniffi::deps::anyhow::anyhow!("not a version id")),
});
