//! The end-to-end demo: a GP practice, a community nurse's tablet, a
//! paramedic's ambulance tablet and the patient's phone, each an engine on
//! its own encrypted store, with access decided and audited on the device.
//!
//! Until the sync server lands, "sync" is an exchange of compartment
//! documents between engines in one process, with the practice as the hub;
//! the grants are signed by a demo server key made for the run.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use scr_core::NhsNumber;
use scr_core::access::{AlertReason, DenyReason};
use scr_core::clock::{Clock, ManualClock, now_ms};
use scr_core::crypto::PassphraseKeyProvider;
use scr_core::engine::{
    AccessRequest, DeviceClass, Engine, EngineConfig, EngineError, ReleasedView,
};
use scr_core::fixtures::{self, sample_entry, test_nhs_number};
use scr_core::grant::{
    GrantPrincipal, GrantRelationship, GrantSigner, RelationshipKind, RoleProfileGrant,
};
use scr_core::record::{Compartment, EntryContent, EntryState, SharingChoice};
use scr_core::store::HoldReason;

/// What happened at each step: a name and whether its expected outcome held.
#[derive(Debug, Default)]
pub struct DemoOutcome {
    pub steps: Vec<(String, bool)>,
    pub data_dir: PathBuf,
}

impl DemoOutcome {
    pub fn all_passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|(_, ok)| *ok)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("could not prepare the data directory: {0}")]
    DataDir(std::io::ErrorKind),
    #[error("{step}: {cause}")]
    Step { step: &'static str, cause: String },
}

fn fail(step: &'static str) -> impl Fn(&dyn Display) -> DemoError {
    move |cause| DemoError::Step {
        step,
        cause: cause.to_string(),
    }
}

struct Story {
    outcome: DemoOutcome,
    started: Instant,
}

impl Story {
    fn check(&mut self, what: &str, ok: bool, since: Instant) {
        let mark = if ok { "ok " } else { "FAIL" };
        println!(
            "[{mark}] {what}  ({:.1} ms)",
            since.elapsed().as_secs_f64() * 1000.0
        );
        self.outcome.steps.push((what.to_owned(), ok));
    }
}

/// Runs the demo in `data_dir` (or a new temporary directory that is kept).
pub fn run(data_dir: Option<PathBuf>) -> Result<DemoOutcome, DemoError> {
    let dir = match data_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(|e| DemoError::DataDir(e.kind()))?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("scr-demo-")
            .tempdir()
            .map_err(|e| DemoError::DataDir(e.kind()))?
            .keep(),
    };
    let mut story = Story {
        outcome: DemoOutcome {
            steps: Vec::new(),
            data_dir: dir.clone(),
        },
        started: Instant::now(),
    };
    tell(&mut story, &dir)?;
    let passed = story.outcome.steps.iter().filter(|(_, ok)| *ok).count();
    println!();
    println!("data directory: {}", dir.display());
    println!(
        "{passed} of {} steps passed in {:.0} ms",
        story.outcome.steps.len(),
        story.started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(story.outcome)
}

/// The demo's devices, and the server key that signs their grants.
struct World {
    dir: PathBuf,
    signer: GrantSigner,
    clock: ManualClock,
}

impl World {
    /// A device engine on a fresh store (any earlier run's file is replaced).
    fn device(&self, name: &str, class: DeviceClass) -> Result<Engine, DemoError> {
        for suffix in [".db", ".db-wal", ".db-shm", ".salt"] {
            let _ = std::fs::remove_file(self.dir.join(format!("{name}{suffix}")));
        }
        let keys = PassphraseKeyProvider::with_salt_file(
            &format!("{name} passphrase"),
            &self.dir.join(format!("{name}.salt")),
        )
        .map_err(|e| fail("unlock device store")(&e))?;
        let config = EngineConfig::new(name, class, self.signer.public_key());
        Engine::open(
            self.dir.join(format!("{name}.db")),
            &keys,
            config,
            Arc::new(self.clock.clone()),
        )
        .map_err(|e| fail("open device")(&e))
    }

    fn grant(
        &self,
        device: &str,
        principal: GrantPrincipal,
        relationships: Vec<GrantRelationship>,
    ) -> Vec<u8> {
        let now = self.clock.now_ms();
        self.signer.sign(&RoleProfileGrant {
            grant_id: format!("{device}-{now}"),
            principal,
            device_id: device.into(),
            issued_at_ms: now,
            expires_at_ms: now + 12 * 3_600_000,
            relationships,
        })
    }
}

fn staff(user: &str, job_role: &str, org: &str, activities: &[&str]) -> GrantPrincipal {
    GrantPrincipal::Staff {
        user_id: user.into(),
        display_name: format!("Demo {job_role}"),
        job_role: job_role.into(),
        job_role_name: job_role.into(),
        organisation: org.into(),
        activities: activities.iter().map(|a| (*a).to_owned()).collect(),
        privacy_officer: false,
    }
}

fn related(nhs: NhsNumber, kind: RelationshipKind) -> Vec<GrantRelationship> {
    vec![GrantRelationship {
        nhs_number: nhs,
        kind,
    }]
}

/// Sends everything `from` holds for the patient to `to` (only the
/// compartments `to` holds are taken).
fn sync(from: &Engine, to: &Engine, nhs: &NhsNumber) -> Result<(), DemoError> {
    let exports = from
        .export_for_sync(nhs)
        .map_err(|e| fail("sync export")(&e))?;
    to.merge_from_sync(nhs, &exports)
        .map_err(|e| fail("sync merge")(&e))?;
    // The practice is the demo's hub (the server's stand-in) and holds every
    // compartment: once it has a device's changes, they count as sent.
    if to.config().device_class == DeviceClass::GpSystem {
        from.confirm_sent(nhs)
            .map_err(|e| fail("sync confirm")(&e))?;
    }
    Ok(())
}

fn released(view: &ReleasedView) -> Vec<Compartment> {
    view.view
        .compartments
        .iter()
        .map(|c| c.compartment)
        .collect()
}

fn tell(story: &mut Story, dir: &Path) -> Result<(), DemoError> {
    println!("SCR Sync demo: one synthetic patient, four devices, access decided on each device.");
    println!();
    let world = World {
        dir: dir.to_path_buf(),
        signer: GrantSigner::generate().map_err(|e| fail("server key")(&e))?,
        clock: ManualClock::new(now_ms()),
    };
    let nhs = test_nhs_number(4242);

    // The GP practice originates the record.
    let t = Instant::now();
    let practice = world.device("gp-practice", DeviceClass::GpSystem)?;
    let gp = staff(
        "555000000001",
        "R0260",
        "A99001",
        &["B0264", "B0360", "B0370", "B0380", "B8029", "B1611"],
    );
    practice
        .login_online(
            &world.grant(
                "gp-practice",
                gp,
                related(nhs, RelationshipKind::Registration),
            ),
            "gp-1234",
        )
        .map_err(|e| fail("gp login")(&e))?;
    practice
        .create_patient(&nhs)
        .map_err(|e| fail("create record")(&e))?;
    practice
        .add_entry(&nhs, fixtures::demographics(nhs), false, None)
        .map_err(|e| fail("demographics")(&e))?;
    // Preferences (every tenth sample) are the patient's to add, not the GP's.
    for i in (0..40).filter(|i| i % 10 != 9) {
        practice
            .add_entry(&nhs, sample_entry(i), i % 10 == 3, None)
            .map_err(|e| fail("history")(&e))?;
    }
    practice
        .set_patient_choices(&nhs, SharingChoice::CoreAndAdditional, false)
        .map_err(|e| fail("choices")(&e))?;
    story.check(
        "GP practice creates a synthetic patient (test-range NHS number) with 37 entries; patient shares core + additional",
        true,
        t,
    );

    let t = Instant::now();
    let nurse_tab = world.device("nurse-tablet", DeviceClass::NurseTablet)?;
    let amb_tab = world.device("ambulance-tablet", DeviceClass::AmbulanceTablet)?;
    let phone = world.device("patient-phone", DeviceClass::PatientPhone)?;
    let all = practice
        .export_for_sync(&nhs)
        .map_err(|e| fail("export")(&e))?;
    let pick = |cs: &[Compartment]| {
        all.iter()
            .filter(|e| cs.contains(&e.compartment))
            .cloned()
            .collect::<Vec<_>>()
    };
    let shared = [
        Compartment::Core,
        Compartment::Additional,
        Compartment::CareEvents,
        Compartment::PatientEntered,
        Compartment::Governance,
    ];
    nurse_tab
        .receive_patient(&nhs, &pick(&shared), HoldReason::Caseload)
        .map_err(|e| fail("nurse caseload")(&e))?;
    let incident = HoldReason::Incident {
        incident_id: "INC-77".into(),
        closed_at_ms: None,
    };
    amb_tab
        .receive_patient(&nhs, &pick(&shared), incident)
        .map_err(|e| fail("incident")(&e))?;
    phone
        .receive_patient(&nhs, &all, HoldReason::OwnRecord)
        .map_err(|e| fail("own record")(&e))?;
    story.check("nurse tablet (caseload), ambulance tablet (incident) and patient's phone receive the record", true, t);

    // Morning, online: the nurse logs in, asks permission, views.
    let t = Instant::now();
    let nurse = staff("555000000102", "R0050", "RX1", &["B0264", "B0370", "B0380"]);
    nurse_tab
        .login_online(
            &world.grant(
                "nurse-tablet",
                nurse,
                related(nhs, RelationshipKind::Caseload),
            ),
            "nurse-2468",
        )
        .map_err(|e| fail("nurse login")(&e))?;
    let asked_first = matches!(
        nurse_tab.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::PermissionNeeded))
    );
    nurse_tab
        .record_permission(&nhs, true, true)
        .map_err(|e| fail("permission")(&e))?;
    let seen = nurse_tab
        .view(&nhs, AccessRequest::with_permission())
        .map_err(|e| fail("nurse view")(&e))?;
    story.check(
        "nurse must ask first; with the patient's permission she sees core, additional and care events, nothing sensitive",
        asked_first && released(&seen).len() == 5 && !released(&seen).contains(&Compartment::Sensitive),
        t,
    );
    let morning = nurse_tab
        .add_entry(&nhs, sample_entry(7), false, None)
        .map_err(|e| fail("visit note")(&e))?;
    sync(&nurse_tab, &practice, &nhs)?;

    println!("-- signal lost: every device works offline --");
    let t = Instant::now();
    let correction = nurse_tab
        .supersede(
            &nhs,
            morning.entry_id,
            &[morning.version_id],
            EntryContent::EncounterSummary {
                setting: "community nursing".into(),
                occurred_at: "2026-11-27T09:30:00Z".into(),
                note: "Dressing changed on the LEFT leg ulcer; healing well.".into(),
            },
        )
        .map_err(|e| fail("nurse correction")(&e))?;
    let amendment = practice
        .supersede(
            &nhs,
            morning.entry_id,
            &[morning.version_id],
            EntryContent::EncounterSummary {
                setting: "community nursing".into(),
                occurred_at: "2026-11-27T09:30:00Z".into(),
                note: "Leg ulcer dressing changed; GP to review antibiotics on Friday.".into(),
            },
        )
        .map_err(|e| fail("gp amendment")(&e))?;
    story.check(
        "offline, the nurse corrects her visit note while the GP amends the same note",
        true,
        t,
    );

    let t = Instant::now();
    let paramedic = staff(
        "555000000203",
        "R1290",
        "RYA",
        &["B0264", "B0370", "B0168", "B0380"],
    );
    amb_tab
        .login_online(
            &world.grant(
                "ambulance-tablet",
                paramedic,
                related(
                    nhs,
                    RelationshipKind::Incident {
                        incident_id: "INC-77".into(),
                    },
                ),
            ),
            "para-1357",
        )
        .map_err(|e| fail("paramedic login")(&e))?;
    let cannot_ask = matches!(
        amb_tab.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::PermissionNeeded))
    );
    let emergency = amb_tab
        .view(&nhs, AccessRequest::emergency())
        .map_err(|e| fail("emergency")(&e))?;
    let alert = emergency
        .audit
        .alerts
        .iter()
        .any(|a| a.alert_type().code() == 2 && a.reason() == AlertReason::Emergency);
    story.check(
        "patient unconscious, no signal: the paramedic uses emergency access; the device audits it with alert type 2, reason 5",
        cannot_ask && alert && released(&emergency).contains(&Compartment::Core),
        t,
    );
    let handover = amb_tab
        .add_entry(&nhs, sample_entry(17), false, None)
        .map_err(|e| fail("handover")(&e))?;

    println!("-- signal back: devices merge (through the practice until the server lands) --");
    let t = Instant::now();
    sync(&nurse_tab, &practice, &nhs)?;
    sync(&amb_tab, &practice, &nhs)?;
    for device in [&nurse_tab, &amb_tab, &phone] {
        sync(&practice, device, &nhs)?;
    }
    let on_tablet = nurse_tab.view(&nhs, AccessRequest::with_permission());
    let (conflict, handover_kept) = match &on_tablet {
        Ok(v) => (
            v.view.entry(morning.entry_id).map(|e| e.state.clone()),
            v.view.entry(handover.entry_id).is_some(),
        ),
        Err(_) => (None, false),
    };
    let both = matches!(&conflict, Some(EntryState::Conflict(c))
        if c.iter().any(|v| v.version_id == correction.version_id)
            && c.iter().any(|v| v.version_id == amendment.version_id));
    story.check(
        "merge keeps the paramedic's handover note",
        handover_kept,
        t,
    );
    story.check(
        "the two edits of the visit note are both kept and flagged as a conflict for review",
        both,
        t,
    );

    let t = Instant::now();
    let resolved = practice
        .supersede(
            &nhs,
            morning.entry_id,
            &[correction.version_id, amendment.version_id],
            EntryContent::EncounterSummary {
                setting: "community nursing".into(),
                occurred_at: "2026-11-27T09:30:00Z".into(),
                note: "Dressing changed on the LEFT leg ulcer; GP to review antibiotics on Friday."
                    .into(),
            },
        )
        .map_err(|e| fail("resolve")(&e))?;
    sync(&practice, &nurse_tab, &nhs)?;
    let nurse_sees = nurse_tab
        .view(&nhs, AccessRequest::with_permission())
        .ok()
        .and_then(|v| v.view.entry(morning.entry_id).cloned());
    let ok = nurse_sees.as_ref().is_some_and(|e| {
        e.current().map(|v| v.version_id) == Some(resolved.version_id) && e.history.len() == 4
    });
    story.check(
        "the GP resolves it; the nurse's tablet shows the resolution with all 4 versions kept",
        ok,
        t,
    );

    // The patient, on their phone.
    let t = Instant::now();
    phone
        .login_online(
            &world.grant(
                "patient-phone",
                GrantPrincipal::Patient { nhs_number: nhs },
                vec![],
            ),
            "me-8642",
        )
        .map_err(|e| fail("patient login")(&e))?;
    let own = phone
        .view(&nhs, AccessRequest::with_permission())
        .map_err(|e| fail("own view")(&e))?;
    story.check(
        "the patient sees their whole record on their phone, sensitive items included",
        released(&own) == Compartment::ALL.to_vec(),
        t,
    );
    let t = Instant::now();
    let wheelchair = phone.add_entry(&nhs, sample_entry(9), false, None).is_ok();
    phone
        .set_patient_choices(&nhs, SharingChoice::CoreOnly, false)
        .map_err(|e| fail("core only")(&e))?;
    sync(&phone, &practice, &nhs)?;
    sync(&practice, &nurse_tab, &nhs)?;
    let after = nurse_tab
        .view(&nhs, AccessRequest::with_permission())
        .map_err(|e| fail("nurse view")(&e))?;
    let pref_seen = after
        .view
        .compartment(Compartment::PatientEntered)
        .is_some_and(|c| !c.entries.is_empty());
    story.check(
        "the patient adds 'uses a wheelchair' and chooses core only; after sync the nurse's tablet releases core, preferences and choices only",
        wheelchair
            && pref_seen
            && released(&after) == vec![Compartment::Core, Compartment::PatientEntered, Compartment::Governance],
        t,
    );

    let t = Instant::now();
    amb_tab
        .close_incident("INC-77")
        .map_err(|e| fail("close incident")(&e))?;
    world.clock.advance(4 * 3_600_000 + 60_000);
    let forgot = amb_tab
        .apply_retention()
        .map_err(|e| fail("retention")(&e))?;
    let gone = !amb_tab.holds(&nhs).map_err(|e| fail("holds")(&e))?;
    story.check("four hours after the incident closed, the ambulance tablet forgets the patient (key shredded)", forgot == 1 && gone, t);

    let t = Instant::now();
    let queue = amb_tab.audit_queue().map_err(|e| fail("audit queue")(&e))?;
    let for_officer = queue
        .iter()
        .find(|e| e.basis.as_deref() == Some("emergency"));
    let fhir_ok = for_officer.is_some_and(|e| e.to_fhir()["type"]["code"] == "110113");
    let trail_kept = queue.iter().any(|e| e.action == "forget") && for_officer.is_some();
    story.check(
        "the emergency access waits in the tablet's audit queue for the privacy officer (FHIR 110113), kept after forgetting",
        fhir_ok && trail_kept,
        t,
    );

    let t = Instant::now();
    let mut chains = true;
    for device in [&practice, &nurse_tab, &amb_tab, &phone] {
        chains &= matches!(device.verify_audit_chain(), Ok(Ok(())));
    }
    story.check("every device's audit hash chain verifies", chains, t);

    let t = Instant::now();
    for device in [&practice, &nurse_tab, &amb_tab, &phone] {
        device.lock().map_err(|e| fail("lock")(&e))?;
    }
    let locked = matches!(
        nurse_tab.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Locked)
    );
    drop((practice, nurse_tab, amb_tab, phone));
    let needles = [
        nhs.digits(),
        "Penicillin".to_owned(),
        "Ada Testpatient".to_owned(),
        "LEFT leg".to_owned(),
    ];
    let mut clean = true;
    for entry in std::fs::read_dir(dir).map_err(|e| DemoError::DataDir(e.kind()))? {
        let path = entry.map_err(|e| DemoError::DataDir(e.kind()))?.path();
        let bytes = std::fs::read(&path).map_err(|e| DemoError::DataDir(e.kind()))?;
        clean &= !needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes()));
    }
    story.check(
        "locked devices release nothing, and no NHS number, name, drug or note text is in clear in any file",
        locked && clean,
        t,
    );
    Ok(())
}
