//! Why each patient's record is on this device, for the retention rules:
//! a caseload, an incident (and when it closed), the patient's own record.

use serde::{Deserialize, Serialize};

use super::{Rows, Store, StoreError};
use crate::NhsNumber;
use crate::crypto;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum HoldReason {
    /// The device created the record (a GP system, the server).
    Origin,
    /// Received without a stated reason (treated as the strictest case).
    Unspecified,
    Caseload,
    Incident {
        incident_id: String,
        closed_at_ms: Option<i64>,
    },
    /// The patient's own record on their phone.
    OwnRecord,
    /// Shared for one encounter, opened online (`RelationshipKind::Encounter`):
    /// forgotten when the encounter ends.
    Encounter {
        encounter_id: String,
        ends_at_ms: i64,
    },
}

impl HoldReason {
    /// The reason as the audit trail names it.
    pub fn label(&self) -> &'static str {
        match self {
            HoldReason::Caseload => "caseload",
            HoldReason::Incident { .. } => "incident",
            HoldReason::Encounter { .. } => "encounter",
            HoldReason::OwnRecord => "own-record",
            HoldReason::Origin => "origin",
            HoldReason::Unspecified => "unspecified",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Holding {
    pub nhs_number: NhsNumber,
    pub reason: HoldReason,
    pub held_since_ms: i64,
}

const TABLE: &str = "holdings";

/// Where the patients withdrawn by their own choice are kept.
const WITHDRAWN: &str = "withdrawn-by-patient";

impl Store {
    pub(crate) fn set_holding_tx(
        &self,
        tx: &dyn Rows,
        holding: &Holding,
    ) -> Result<(), StoreError> {
        let record_ref = self.record_ref(&holding.nhs_number);
        let plain = serde_json::to_vec(holding).map_err(|_| StoreError::BadRow { table: TABLE })?;
        let sealed = crypto::seal(
            &self.inner.keys.general,
            &[TABLE.as_bytes(), &record_ref],
            &plain,
        )
        .map_err(StoreError::Crypto)?;
        tx.holding_put(&record_ref, &sealed)
    }

    pub fn set_holding(&self, holding: &Holding) -> Result<(), StoreError> {
        self.write(|tx| self.set_holding_tx(tx, holding))
    }

    /// The holding for one record (by its lookup ref), if any.
    pub(crate) fn holding_of(
        &self,
        conn: &dyn Rows,
        record_ref: &crate::crypto::Ref,
    ) -> Result<Option<Holding>, StoreError> {
        let Some(sealed) = conn.holding_get(record_ref)? else {
            return Ok(None);
        };
        let plain = crypto::open(
            &self.inner.keys.general,
            &[TABLE.as_bytes(), record_ref],
            &sealed,
        )
        .map_err(|cause| StoreError::Tampered {
            table: TABLE,
            cause,
        })?;
        let h: Holding =
            serde_json::from_slice(&plain).map_err(|_| StoreError::BadRow { table: TABLE })?;
        Ok(Some(h))
    }

    /// Every record this device holds, with why.
    pub fn holdings(&self) -> Result<Vec<Holding>, StoreError> {
        self.read(|conn| self.holdings_on(conn))
    }

    fn holdings_on(&self, conn: &dyn Rows) -> Result<Vec<Holding>, StoreError> {
        let rows = conn.holdings_all()?;
        let mut out = Vec::with_capacity(rows.len());
        for (record_ref, sealed) in rows {
            let plain = crypto::open(
                &self.inner.keys.general,
                &[TABLE.as_bytes(), &record_ref],
                &sealed,
            )
            .map_err(|cause| StoreError::Tampered {
                table: TABLE,
                cause,
            })?;
            let h: Holding =
                serde_json::from_slice(&plain).map_err(|_| StoreError::BadRow { table: TABLE })?;
            if self.record_ref(&h.nhs_number).as_slice() != record_ref.as_slice() {
                return Err(StoreError::BadRow { table: TABLE });
            }
            out.push(h);
        }
        out.sort_by_key(|h| h.held_since_ms);
        Ok(out)
    }

    /// Records which patients the server last said were withdrawn by
    /// their own choice (hidden, opted out): patients of the user's
    /// relationships whose records this device is not sent. Sealed, as the
    /// grant naming them is; replaced by each holdings list.
    pub fn set_withdrawn(&self, patients: &[NhsNumber]) -> Result<(), StoreError> {
        let plain =
            serde_json::to_vec(patients).map_err(|_| StoreError::BadRow { table: "meta" })?;
        self.write(|tx| self.put_sealed_meta_tx(tx, WITHDRAWN, &plain))
    }

    /// Whether the server last said `nhs` was withdrawn by the patient.
    pub fn is_withdrawn(&self, nhs: &NhsNumber) -> Result<bool, StoreError> {
        let Some(plain) = self.read(|conn| self.sealed_meta(conn, WITHDRAWN))? else {
            return Ok(false);
        };
        let list: Vec<NhsNumber> =
            serde_json::from_slice(&plain).map_err(|_| StoreError::BadRow { table: "meta" })?;
        Ok(list.contains(nhs))
    }
}
