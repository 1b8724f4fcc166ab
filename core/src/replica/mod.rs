//! A patient's record on this device: the compartment documents it holds,
//! loaded from the encrypted store, with the edit rules (supersede, never
//! overwrite) and durable persistence of every change.

mod edits;
mod held;
mod keys;
mod layout;
mod merge;
mod open;
mod persist;
mod reading;
mod rebuilt;
mod values;

pub use layout::permissions_to_move;
pub use reading::PatientReplica;
pub use values::{AuditSpec, CompartmentExport, RecordView};
