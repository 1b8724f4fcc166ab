//! Record operations: each builds an access request, asks the decision,
//! writes the audit event, and only then releases or changes data. A
//! decision that cannot be audited releases nothing.

mod choices;
mod decision;
mod patients;
mod release;
mod writes;

use crate::NhsNumber;
use crate::engine::{Engine, EngineError, State};
use crate::replica::PatientReplica;
use crate::store::StoreError;

pub use release::ReleasedView;

impl Engine {
    pub(super) fn replica<'s>(
        &self,
        state: &'s mut State,
        nhs: &NhsNumber,
    ) -> Result<&'s mut PatientReplica, EngineError> {
        if !state.records.contains_key(nhs) {
            let replica = self.store.open_record(nhs).map_err(|e| match e {
                StoreError::RecordNotFound => EngineError::NotHeld,
                other => EngineError::Store(other),
            })?;
            state.records.insert(*nhs, replica);
        }
        state.records.get_mut(nhs).ok_or(EngineError::NotHeld)
    }
}
