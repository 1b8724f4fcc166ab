//! Every grant the server issued to each device, kept beside the audit
//! events for as long as they are: what an uploaded event is judged
//! against (`vouch`), however late it arrives.

use scr_core::crypto;
use scr_core::grant::RoleProfileGrant;

use super::{Archive, ArchiveError};

const GRANTS: &[u8] = b"grants";
/// Grants read for one judgement at most (the newest in its window).
pub const MAX_GRANTS_READ: usize = 4096;

impl Archive {
    /// Keeps `grant`, issued to `device` (again: a no-op).
    pub fn record_grant(
        &self,
        device: &[u8; 32],
        grant: &RoleProfileGrant,
    ) -> Result<(), ArchiveError> {
        let grant_ref = self.lookup.hash(&[b"grant", grant.grant_id.as_bytes()]);
        let plain = serde_json::to_vec(grant).map_err(|_| ArchiveError::Tampered)?;
        let sealed = crypto::seal(&self.seal, &[GRANTS, device, &grant_ref], &plain)
            .map_err(|_| ArchiveError::Tampered)?;
        self.rows.record_grant(
            device,
            &grant_ref,
            grant.issued_at_ms,
            grant.expires_at_ms,
            &sealed,
        )
    }

    /// Notes that `device`'s grant `grant_id` was retired at `now_ms` (its
    /// user logged out): it held until then.
    pub fn retire_grant(
        &self,
        device: &[u8; 32],
        grant_id: &str,
        now_ms: i64,
    ) -> Result<(), ArchiveError> {
        let grant_ref = self.lookup.hash(&[b"grant", grant_id.as_bytes()]);
        self.rows.retire_grant(device, &grant_ref, now_ms)
    }

    /// The grants issued to `device` between `from_ms` and `to_ms` (the
    /// newest [`MAX_GRANTS_READ`]), oldest first; one retired ends then.
    pub fn grants_issued(
        &self,
        device: &[u8; 32],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RoleProfileGrant>, ArchiveError> {
        let rows = self.rows.grants_issued(
            device,
            from_ms,
            to_ms,
            i64::try_from(MAX_GRANTS_READ).unwrap_or(i64::MAX),
        )?;
        let mut grants = rows
            .into_iter()
            .map(|g| {
                let (grant_ref, sealed, retired) = (g.grant_ref, g.sealed, g.retired_at_ms);
                let plain = crypto::open(&self.seal, &[GRANTS, device, &grant_ref], &sealed)
                    .map_err(|_| ArchiveError::Tampered)?;
                let mut grant: RoleProfileGrant =
                    serde_json::from_slice(&plain).map_err(|_| ArchiveError::Tampered)?;
                if let Some(at) = retired {
                    grant.expires_at_ms = grant.expires_at_ms.min(at);
                }
                Ok::<_, ArchiveError>(grant)
            })
            .collect::<Result<Vec<RoleProfileGrant>, _>>()?;
        grants.reverse();
        Ok(grants)
    }
}
