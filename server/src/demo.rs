//! The end-to-end demo: a GP practice, a community nurse's tablet and a
//! paramedic's tablet, each with its own encrypted store, editing one
//! synthetic patient offline and merging without loss.
//!
//! Until the sync server lands, "sync" here is an exchange of compartment
//! documents between stores in one process; every store is a real encrypted
//! SQLite file in the data directory.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Instant;

use scr_core::crypto::PassphraseKeyProvider;
use scr_core::fixtures::{self, sample_entry, test_nhs_number};
use scr_core::record::{Code, Compartment, EntryContent, EntryState, Severity};
use scr_core::{NhsNumber, PatientReplica, Store};

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

fn open_device(dir: &Path, name: &str, passphrase: &str) -> Result<Store, DemoError> {
    let keys = PassphraseKeyProvider::with_salt_file(passphrase, &dir.join(format!("{name}.salt")))
        .map_err(|e| fail("unlock device")(&e))?;
    Store::open(dir.join(format!("{name}.db")), &keys).map_err(|e| fail("open device store")(&e))
}

fn sync(
    from: &mut PatientReplica,
    to: &mut PatientReplica,
    only: &[Compartment],
) -> Result<(), DemoError> {
    for export in from.export() {
        if only.contains(&export.compartment) {
            to.merge(&export).map_err(|e| fail("merge")(&e))?;
        }
    }
    Ok(())
}

fn tell(story: &mut Story, dir: &Path) -> Result<(), DemoError> {
    println!("SCR Sync demo: one synthetic patient, three devices, no network needed.");
    println!();
    let nhs: NhsNumber = test_nhs_number(4242);
    let gp = fixtures::gp();
    let nurse = fixtures::provenance("555000000102", "R0050", "RX1", "nurse-tablet-07");
    let paramedic = fixtures::provenance("555000000203", "R1290", "RYA", "ambulance-tablet-31");

    let t = Instant::now();
    let gp_store = open_device(dir, "gp-practice", "practice passphrase")?;
    // Fresh run in a kept directory: start the story from scratch.
    gp_store
        .forget_record(&nhs)
        .map_err(|e| fail("reset")(&e))?;
    let mut gp_rec = gp_store
        .create_record(&nhs, &Compartment::ALL)
        .map_err(|e| fail("create record")(&e))?;
    gp_rec
        .add_entry(fixtures::demographics(nhs), false, gp.clone())
        .map_err(|e| fail("demographics")(&e))?;
    let allergy = gp_rec
        .add_entry(
            EntryContent::Allergy {
                substance: Code::snomed("764146007", "Penicillin"),
                reaction: Some("Urticaria".into()),
                severity: Some(Severity::Moderate),
            },
            false,
            gp.clone(),
        )
        .map_err(|e| fail("allergy")(&e))?;
    for i in 1..40 {
        gp_rec
            .add_entry(sample_entry(i), i % 10 == 3, gp.clone())
            .map_err(|e| fail("history")(&e))?;
    }
    let loaded = gp_rec.view().entry_count();
    story.check(
        &format!(
            "GP practice loads a synthetic patient (test-range NHS number) with {loaded} entries"
        ),
        loaded == 41,
        t,
    );

    let t = Instant::now();
    let nurse_store = open_device(dir, "nurse-tablet", "nurse passphrase")?;
    let para_store = open_device(dir, "ambulance-tablet", "paramedic passphrase")?;
    for s in [&nurse_store, &para_store] {
        s.forget_record(&nhs).map_err(|e| fail("reset")(&e))?;
    }
    let exports = gp_rec.export();
    let without_sensitive: Vec<_> = exports
        .iter()
        .filter(|e| e.compartment != Compartment::Sensitive)
        .cloned()
        .collect();
    let core_only: Vec<_> = exports
        .iter()
        .filter(|e| e.compartment == Compartment::Core)
        .cloned()
        .collect();
    let mut nurse_rec = nurse_store
        .import_record(&nhs, &without_sensitive)
        .map_err(|e| fail("nurse caseload")(&e))?;
    let mut para_rec = para_store
        .import_record(&nhs, &core_only)
        .map_err(|e| fail("paramedic incident")(&e))?;
    story.check(
        "nurse tablet caches the patient (no sensitive items); ambulance tablet caches core only",
        nurse_rec.compartments().len() == 5 && para_rec.compartments() == vec![Compartment::Core],
        t,
    );

    println!("-- signal lost: every device works offline --");
    let t = Instant::now();
    let visit = nurse_rec
        .add_entry(sample_entry(7), false, nurse.clone())
        .map_err(|e| fail("visit summary")(&e))?;
    let from_para = para_rec
        .supersede(
            Compartment::Core,
            allergy.entry_id,
            &[allergy.version_id],
            EntryContent::Allergy {
                substance: Code::snomed("764146007", "Penicillin"),
                reaction: Some("Anaphylaxis (patient's wife reports)".into()),
                severity: Some(Severity::Severe),
            },
            paramedic.clone(),
        )
        .map_err(|e| fail("paramedic update")(&e))?;
    let from_gp = gp_rec
        .supersede(
            Compartment::Core,
            allergy.entry_id,
            &[allergy.version_id],
            EntryContent::Allergy {
                substance: Code::snomed("764146007", "Penicillin"),
                reaction: Some("Urticaria and wheeze".into()),
                severity: Some(Severity::Severe),
            },
            gp.clone(),
        )
        .map_err(|e| fail("gp update")(&e))?;
    story.check(
        "offline: nurse writes a visit summary; paramedic and GP both update the penicillin allergy",
        true,
        t,
    );

    println!("-- signal back: devices merge --");
    let t = Instant::now();
    sync(&mut nurse_rec, &mut gp_rec, &Compartment::ALL)?;
    sync(&mut para_rec, &mut gp_rec, &Compartment::ALL)?;
    sync(&mut gp_rec, &mut nurse_rec, &Compartment::ALL[..5])?;
    sync(&mut gp_rec, &mut para_rec, &[Compartment::Core])?;
    let gp_view = gp_rec.view();
    let kept_visit = gp_view.entry(visit.entry_id).is_some();
    let conflict = gp_view.entry(allergy.entry_id).map(|e| e.state.clone());
    let both_kept = matches!(&conflict, Some(EntryState::Conflict(c))
        if c.iter().any(|v| v.version_id == from_para.version_id)
            && c.iter().any(|v| v.version_id == from_gp.version_id));
    story.check("merge keeps the nurse's visit summary", kept_visit, t);
    story.check(
        "the two allergy updates are both kept and flagged as a conflict for review",
        both_kept,
        t,
    );

    let t = Instant::now();
    let resolved = gp_rec
        .supersede(
            Compartment::Core,
            allergy.entry_id,
            &[from_gp.version_id, from_para.version_id],
            EntryContent::Allergy {
                substance: Code::snomed("764146007", "Penicillin"),
                reaction: Some("Anaphylaxis".into()),
                severity: Some(Severity::Severe),
            },
            gp.clone(),
        )
        .map_err(|e| fail("resolve")(&e))?;
    sync(&mut gp_rec, &mut nurse_rec, &Compartment::ALL[..5])?;
    sync(&mut gp_rec, &mut para_rec, &[Compartment::Core])?;
    let everywhere = [&nurse_rec, &para_rec, &gp_rec].iter().all(|r| {
        r.view()
            .entry(allergy.entry_id)
            .and_then(|e| e.current().map(|v| v.version_id))
            == Some(resolved.version_id)
    });
    let history = gp_rec
        .view()
        .entry(allergy.entry_id)
        .map(|e| e.history.len())
        .unwrap_or(0);
    story.check(
        &format!(
            "GP resolves the conflict; every device shows it, history keeps all {history} versions"
        ),
        everywhere && history == 4,
        t,
    );

    let t = Instant::now();
    drop((gp_rec, nurse_rec, para_rec));
    let reopened = [&gp_store, &nurse_store, &para_store]
        .iter()
        .map(|s| s.open_record(&nhs).map(|r| r.view()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("reopen")(&e))?;
    let agree = reopened[1].compartment(Compartment::Core)
        == reopened[0].compartment(Compartment::Core)
        && reopened[2].compartment(Compartment::Core) == reopened[0].compartment(Compartment::Core);
    story.check("every store reopens from disk to the same record", agree, t);

    let t = Instant::now();
    let forgot = para_store
        .forget_record(&nhs)
        .map_err(|e| fail("forget")(&e))?;
    let gone = matches!(
        para_store.open_record(&nhs),
        Err(scr_core::StoreError::RecordNotFound)
    );
    story.check(
        "incident closed: the ambulance tablet forgets the patient (key shredded)",
        forgot && gone,
        t,
    );

    let t = Instant::now();
    for s in [&gp_store, &nurse_store, &para_store] {
        s.checkpoint().map_err(|e| fail("checkpoint")(&e))?;
    }
    let needles = [
        nhs.digits(),
        "Penicillin".to_owned(),
        "Ada Testpatient".to_owned(),
    ];
    let mut clean = true;
    for entry in std::fs::read_dir(dir).map_err(|e| DemoError::DataDir(e.kind()))? {
        let path = entry.map_err(|e| DemoError::DataDir(e.kind()))?.path();
        let bytes = std::fs::read(&path).map_err(|e| DemoError::DataDir(e.kind()))?;
        for n in &needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                clean = false;
            }
        }
    }
    story.check(
        "no NHS number, name or drug appears in clear in any file in the data directory",
        clean,
        t,
    );
    Ok(())
}
