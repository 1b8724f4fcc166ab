//! The UniFFI facade over `scr-core` for Kotlin, Swift and Python.
//!
//! One object an app holds, [`ScrDevice`], whose methods each delegate to
//! the core in a line or two; records and enums are the core's own, derived
//! behind its `uniffi` feature. Every error that crosses is one small type,
//! [`ScrError`], holding what an app can act on, never patient data. Async
//! methods run on the facade's own tokio runtime, so the foreign side can
//! await them from any executor.

// UniFFI's generated scaffolding is unsafe code; none of ours is.
#![allow(unsafe_code)]

mod device;
mod error;
mod keys;
mod observe;
mod records;
mod runtime;
mod sync;
mod sync_status;

pub use device::ScrDevice;
pub use error::ScrError;
pub use keys::{KeyProvider, KeyProviderError};
pub use observe::{ObservationHandle, RecordObserver};
pub use sync::{SyncObserver, SyncStatus};
pub use sync_status::{RecordSyncObserver, RecordSyncState};

uniffi::setup_scaffolding!("scr_bindings");
