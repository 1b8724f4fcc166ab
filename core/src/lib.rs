//! SCR Sync core: a patient's Summary Care Record as Automerge documents
//! (one per compartment), stored on the device sealed at rest, merging
//! concurrent edits without loss.
//!
//! Layers, from pure to I/O:
//! - [`nhs_number`] and [`record`]: the clinical model and its rules, pure.
//! - [`crypto`]: the only module that touches primitives.
//! - [`store`]: the encrypted SQLite store (also samod's `Storage`).
//! - [`replica`]: a patient's record on this device, tying the three together.

// No unsafe code of our own. UniFFI's scaffolding (the `uniffi` feature,
// for the bindings crate) is unsafe code the macros write.
#![cfg_attr(not(feature = "uniffi"), forbid(unsafe_code))]
#![cfg_attr(feature = "uniffi", allow(unsafe_code))]

pub mod access;
pub mod audit;
pub mod channel;
pub mod clock;
pub mod crypto;
pub mod device;
pub mod engine;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzz_entry;
pub mod grant;
pub mod nhs_number;
pub mod protocol;
pub mod push_rules;
pub mod record;
pub mod replica;
pub mod retention;
pub mod store;
pub mod sync;
#[cfg(feature = "uniffi")]
mod uniffi_types;

#[cfg(feature = "uniffi")]
uniffi::setup_scaffolding!("scr_core");

pub use nhs_number::{NhsNumber, NhsNumberError};
pub use replica::{CompartmentExport, PatientReplica, RecordView};
pub use store::{Store, StoreError};
