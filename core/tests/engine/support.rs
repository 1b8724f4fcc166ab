//! The engine tests' shared setup: a world with an origin store, a grant
//! signer and a manual clock; principals; and sync stood in for.

use std::path::Path;
use std::sync::Arc;

use scr_core::clock::ManualClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::record::Compartment;
use scr_core::retention::DeviceClass;
use scr_core::{CompartmentExport, NhsNumber, Store};

pub(crate) const T0: i64 = 1_800_000_000_000;
pub(crate) const MIN: i64 = 60_000;
pub(crate) const HOUR: i64 = 60 * MIN;

pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    signer: GrantSigner,
    pub(crate) clock: ManualClock,
    origin: Store,
}

impl World {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let origin = Store::open(dir.path().join("origin.db"), &keys(9)).unwrap();
        Self {
            dir,
            signer: GrantSigner::from_seed([7; 32]),
            clock: ManualClock::new(T0),
            origin,
        }
    }

    /// A patient at the GP practice with core, additional and sensitive items.
    pub(crate) fn patient(&self, n: u32) -> (NhsNumber, Vec<CompartmentExport>) {
        let nhs = test_nhs_number(n);
        let mut rec = self.origin.create_record(&nhs, &Compartment::ALL).unwrap();
        rec.add_entry(sample_entry(0), false, gp(), None).unwrap();
        rec.add_entry(sample_entry(3), false, gp(), None).unwrap();
        rec.add_entry(sample_entry(7), false, gp(), None).unwrap();
        rec.add_entry(sample_entry(3), true, gp(), None).unwrap();
        (nhs, rec.export())
    }

    pub(crate) fn engine(&self, name: &str, class: DeviceClass) -> Engine {
        self.engine_at(&self.dir.path().join(format!("{name}.db")), name, class)
    }

    pub(crate) fn engine_at(&self, path: &Path, name: &str, class: DeviceClass) -> Engine {
        let config = EngineConfig::new(name, class, self.signer.public_key());
        Engine::open(path, &keys(1), config, Arc::new(self.clock.clone())).unwrap()
    }

    pub(crate) fn grant(
        &self,
        device: &str,
        principal: GrantPrincipal,
        patients: &[(NhsNumber, RelationshipKind)],
    ) -> Vec<u8> {
        self.signer.sign(&RoleProfileGrant {
            grant_id: format!("grant-{device}-{}", self.clock_now()),
            principal,
            device_id: device.into(),
            issued_at_ms: self.clock_now(),
            expires_at_ms: self.clock_now() + 12 * HOUR,
            relationships: patients
                .iter()
                .map(|(n, k)| GrantRelationship {
                    nhs_number: *n,
                    kind: k.clone(),
                })
                .collect(),
        })
    }

    pub(crate) fn clock_now(&self) -> i64 {
        use scr_core::clock::Clock;
        self.clock.now_ms()
    }
}

pub(crate) fn keys(b: u8) -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes([b; 32]))
}

pub(crate) fn staff(
    job_role: &str,
    org: &str,
    activities: &[&str],
    privacy_officer: bool,
) -> GrantPrincipal {
    GrantPrincipal::Staff {
        user_id: format!("5550000{job_role}"),
        display_name: "Test User".into(),
        job_role: job_role.into(),
        job_role_name: "Role".into(),
        organisation: org.into(),
        activities: activities.iter().map(|a| (*a).to_owned()).collect(),
        privacy_officer,
    }
}

pub(crate) fn paramedic() -> GrantPrincipal {
    staff("R1290", "RYA", &["B0264", "B0370", "B0168", "B0380"], false)
}
pub(crate) fn nurse() -> GrantPrincipal {
    staff("R0050", "RX1", &["B0264", "B0370", "B0380"], false)
}
pub(crate) fn gp_principal() -> GrantPrincipal {
    staff(
        "R0260",
        "A99001",
        &["B0264", "B0360", "B0370", "B0380", "B8029", "B1611"],
        false,
    )
}
pub(crate) fn incident(id: &str) -> RelationshipKind {
    RelationshipKind::Incident {
        incident_id: id.into(),
    }
}

pub(crate) fn compartments(v: &scr_core::engine::ReleasedView) -> Vec<Compartment> {
    v.view.compartments.iter().map(|c| c.compartment).collect()
}

/// Everything `from` holds for the patient, as exports.
pub(crate) fn tablet_exports(from: &Engine, nhs: &NhsNumber) -> Vec<CompartmentExport> {
    from.export_for_sync(nhs).unwrap()
}

/// Stands in for sync until the server exists.
pub(crate) fn merge_into(into: &Engine, nhs: &NhsNumber, from: &Engine) {
    into.merge_from_sync(nhs, &tablet_exports(from, nhs))
        .unwrap();
}

/// The record as stored, read through a second handle on the file (what
/// an attacker with the key, or a test, would see).
pub(crate) fn stored_view(engine: &Engine, nhs: &NhsNumber) -> scr_core::RecordView {
    Store::open(engine.path(), &keys(1))
        .unwrap()
        .open_record(nhs)
        .unwrap()
        .view()
}
