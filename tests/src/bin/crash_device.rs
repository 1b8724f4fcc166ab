//! The device side of the crash harness (`tests/tests/crash.rs`): a nurse's
//! tablet engine on its own store, doing what a tablet does (visit notes,
//! views) as fast as it can, printing `ack <version id>` after each write
//! the engine acknowledged. The harness kills it with SIGKILL at random and
//! runs it again with `check`, which opens the store and verifies what every
//! restart must find.
//!
//! The storage-fault tests (`tests/tests/storage_faults.rs`) run it on a
//! full disk and after a lost WAL: a refused write prints `refused full`
//! (or `refused corrupt`) before the process exits with status 1, and
//! `check-prefix` accepts a store that lost its newest writes, as long as
//! what remains is a prefix of them and nothing is half-applied.
//!
//! usage: crash-device DIR write|check|check-prefix [ACKED-FILE]

use std::io::Write;
use std::sync::Arc;

use scr_core::access::AccessRequest;
use scr_core::clock::{Clock, SystemClock};
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::EngineError;
use scr_core::engine::{Engine, EngineConfig};
use scr_core::fixtures::{gp, sample_entry, test_nhs_number};
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::record::{Compartment, EntryContent, SharingChoice, VersionId};
use scr_core::retention::DeviceClass;
use scr_core::store::{HoldReason, StoreError};
use scr_core::{NhsNumber, Store};

const DEVICE: &str = "crash-tablet";

fn keys() -> StaticKeyProvider {
    StaticKeyProvider::new(SecretKey::from_bytes([3; 32]))
}

fn patient() -> NhsNumber {
    test_nhs_number(4242)
}

fn signer() -> GrantSigner {
    GrantSigner::from_seed([7; 32])
}

fn grant(now: i64) -> Vec<u8> {
    signer().sign(&RoleProfileGrant {
        grant_id: format!("g{now}"),
        principal: GrantPrincipal::Staff {
            user_id: "555000000102".into(),
            display_name: "Jo Nurse".into(),
            job_role: "R0050".into(),
            job_role_name: "Community Nurse".into(),
            organisation: "RX1".into(),
            activities: ["B0264", "B0370", "B0380"].map(String::from).to_vec(),
            privacy_officer: false,
        },
        device_id: DEVICE.into(),
        issued_at_ms: now,
        expires_at_ms: now + 12 * 3_600_000,
        relationships: vec![GrantRelationship {
            nhs_number: patient(),
            kind: RelationshipKind::Caseload,
        }],
    })
}

/// A refused storage operation as the storage-fault tests read it: the
/// typed error's kind, printed before the process gives up.
fn refused(e: &EngineError) -> String {
    let kind = match e {
        EngineError::Store(StoreError::Full(_)) | EngineError::AuditFailed(StoreError::Full(_)) => {
            "full"
        }
        EngineError::Store(StoreError::Corrupt(_))
        | EngineError::AuditFailed(StoreError::Corrupt(_)) => "corrupt",
        _ => "other",
    };
    println!("refused {kind}");
    e.to_string()
}

fn open(dir: &std::path::Path) -> Result<Engine, String> {
    let config = EngineConfig::new(DEVICE, DeviceClass::NurseTablet, signer().public_key());
    let engine = Engine::open(
        dir.join("tablet.db"),
        &keys(),
        config,
        Arc::new(SystemClock),
    )
    .map_err(|e| format!("open: {}", refused(&e)))?;
    if !engine.holds(&patient()).map_err(|e| e.to_string())? {
        // First run: the record arrives from the practice, as sync would
        // bring it.
        let origin = Store::open(dir.join("practice.db"), &keys()).map_err(|e| e.to_string())?;
        // (A kill can land between these steps: each is redone or reused.)
        let mut record = match origin.open_record(&patient()) {
            Ok(record) => record,
            Err(_) => origin
                .create_record(&patient(), &Compartment::ALL)
                .map_err(|e| e.to_string())?,
        };
        if record.view().entry_count() == 0 {
            record
                .add_entry(sample_entry(0), false, gp(), None)
                .map_err(|e| e.to_string())?;
            // Shared beyond core, so the nurse sees her visit notes.
            let sharing = EntryContent::Sharing {
                choice: SharingChoice::CoreAndAdditional,
                include_sensitive: false,
                hidden: false,
            };
            record
                .add_entry(sharing, false, gp(), None)
                .map_err(|e| e.to_string())?;
        }
        let shared: Vec<_> = record
            .export()
            .into_iter()
            .filter(|e| e.compartment != Compartment::Sensitive)
            .collect();
        engine
            .receive_patient(&patient(), &shared, HoldReason::Caseload)
            .map_err(|e| e.to_string())?;
    }
    engine
        .login_online(&grant(SystemClock.now_ms()), "2468")
        // A login is audited first: on a full disk it is refused as a view is.
        .map_err(|e| format!("login: {}", refused(&e)))?;
    Ok(engine)
}

/// Writes and views until killed; every write the engine acknowledged is
/// printed (and flushed) before the next begins.
fn write(dir: &std::path::Path) -> Result<(), String> {
    let engine = open(dir)?;
    engine
        .record_permission(&patient(), true, true)
        .map_err(|e| format!("permission: {}", refused(&e)))?;
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let note = EntryContent::EncounterSummary {
            setting: "home".into(),
            occurred_at: "2026-11-27T09:00:00Z".into(),
            note: format!("visit note {i}"),
        };
        let v = engine
            .add_entry(&patient(), note, false, None)
            .map_err(|e| format!("write {i}: {}", refused(&e)))?;
        writeln!(out, "ack {}", v.version_id).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        if i % 3 == 0 {
            engine
                .view(&patient(), AccessRequest::with_permission())
                .map_err(|e| format!("view {i}: {}", refused(&e)))?;
        }
    }
    Ok(())
}

/// What every restart must find: the store opens, every acknowledged write
/// is there (`prefix`: the oldest ones, none missing between), nothing is
/// half-applied, and the audit chain verifies.
fn check(dir: &std::path::Path, acked: &[VersionId], prefix: bool) -> Result<usize, String> {
    let engine = open(dir)?;
    engine
        .record_permission(&patient(), true, true)
        .map_err(|e| format!("permission: {}", refused(&e)))?;
    let released = engine
        .view(&patient(), AccessRequest::with_permission())
        .map_err(|e| format!("view: {}", refused(&e)))?;
    let care = released
        .view
        .compartment(Compartment::CareEvents)
        .ok_or("no care events compartment")?;
    if !care.unreadable.is_empty() {
        return Err(format!("{} half-applied versions", care.unreadable.len()));
    }
    let present: std::collections::HashSet<VersionId> = care
        .entries
        .iter()
        .flat_map(|e| e.history.clone())
        .collect();
    let kept = acked.iter().take_while(|v| present.contains(v)).count();
    let missing = acked.iter().filter(|v| !present.contains(v)).count();
    if prefix && missing > 0 {
        // What is missing must be the newest writes, all of them.
        if acked[kept..].iter().any(|v| present.contains(v)) {
            return Err("a write is missing between kept ones".into());
        }
        println!("lost newest {missing}");
    } else if missing > 0 {
        return Err(format!("{missing} acknowledged writes lost"));
    }
    match engine.verify_audit_chain() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("audit chain: {e:?}")),
        Err(e) => return Err(format!("audit chain unreadable: {e}")),
    }
    Ok(present.len())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(mode)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: crash-device DIR write|check|check-prefix [ACKED-FILE]");
        return std::process::ExitCode::from(2);
    };
    let dir = std::path::Path::new(dir);
    let result = match mode.as_str() {
        "write" => write(dir).map(|()| 0),
        "check" | "check-prefix" => {
            let acked: Vec<VersionId> = args
                .get(3)
                .and_then(|f| std::fs::read_to_string(f).ok())
                .unwrap_or_default()
                .lines()
                .filter_map(VersionId::parse)
                .collect();
            check(dir, &acked, mode == "check-prefix")
        }
        _ => Err("mode is write, check or check-prefix".into()),
    };
    match result {
        Ok(n) => {
            println!("ok {n}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
