//! A full disk, for real: the store lives on a tiny tmpfs that the test
//! fills. Views are refused (no audit record, no data), nothing panics, and
//! once space returns everything works and the audit chain verifies.
//! Needs root to mount tmpfs (CI runs as root); skips cleanly elsewhere.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use scr_core::Store;
use scr_core::access::AccessRequest;
use scr_core::clock::SystemClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig, EngineError};
use scr_core::fixtures::{gp, now_ms, sample_entry, test_nhs_number};
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::record::Compartment;
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Tmpfs(dir.to_path_buf()))
}

#[test]
fn a_full_disk_refuses_views_and_loses_nothing() {
    let outer = tempfile::tempdir().unwrap();
    let disk = outer.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let Some(_mount) = mount_tmpfs(&disk, "1m") else {
        eprintln!("skipped: cannot mount tmpfs here (needs root)");
        return;
    };
    let keys = StaticKeyProvider::new(SecretKey::from_bytes([1; 32]));
    let origin = Store::open(outer.path().join("origin.db"), &keys).unwrap();
    let nhs = test_nhs_number(1);
    let mut rec = origin.create_record(&nhs, &Compartment::ALL).unwrap();
    for i in 0..10 {
        rec.add_entry(sample_entry(i), false, gp(), None).unwrap();
    }
    let signer = GrantSigner::from_seed([7; 32]);
    let config = EngineConfig::new("nurse-1", DeviceClass::NurseTablet, signer.public_key());
    let engine =
        Engine::open(disk.join("tablet.db"), &keys, config, Arc::new(SystemClock)).unwrap();
    engine
        .receive_patient(&nhs, &rec.export(), HoldReason::Caseload)
        .unwrap();
    let grant = signer.sign(&RoleProfileGrant {
        grant_id: "g".into(),
        principal: GrantPrincipal::Staff {
            user_id: "u".into(),
            display_name: "n".into(),
            job_role: "R0050".into(),
            job_role_name: "Nurse".into(),
            organisation: "RX1".into(),
            activities: ["B0264", "B0370", "B0380"].map(String::from).to_vec(),
            privacy_officer: false,
        },
        device_id: "nurse-1".into(),
        issued_at_ms: now_ms(),
        expires_at_ms: now_ms() + 3_600_000,
        relationships: vec![GrantRelationship {
            nhs_number: nhs,
            kind: RelationshipKind::Caseload,
        }],
    });
    engine.login_online(&grant, "1357").unwrap();
    engine.record_permission(&nhs, true, true).unwrap();
    assert!(engine.view(&nhs, AccessRequest::with_permission()).is_ok());
    let before = engine.audit_queue().unwrap().len();

    // Fill the disk.
    let filler_path = disk.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let block = vec![0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.sync_all();

    let mut refused = 0;
    for _ in 0..50 {
        match engine.view(&nhs, AccessRequest::with_permission()) {
            Ok(_) => {}
            Err(EngineError::AuditFailed(_)) => refused += 1,
            Err(other) => panic!("unexpected error on a full disk: {other}"),
        }
    }
    assert!(refused > 0, "the disk never filled");

    // Space returns: the device works again and no committed event was lost.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    assert!(engine.view(&nhs, AccessRequest::with_permission()).is_ok());
    let after = engine.audit_queue().unwrap();
    assert!(after.len() > before);
    assert_eq!(engine.verify_audit_chain().unwrap(), Ok(()));
}
