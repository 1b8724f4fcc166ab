//! The end-to-end demo, `scr-server demo`: the server on its embedded
//! SQLite store, a community nurse's tablet, a paramedic's ambulance tablet
//! and a patient's phone, each a device as the apps hold one, over real
//! sockets on loopback. It tells the story in short lines with timings and
//! fails (non-zero exit) if any step's expected outcome did not happen.

pub mod site;
mod story;

use std::path::PathBuf;
use std::time::Instant;

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
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::ErrorKind),
    #[error("{step}: {cause}")]
    Step { step: &'static str, cause: String },
}

/// The running tally the story checks its steps into.
pub(crate) struct Story {
    outcome: DemoOutcome,
    started: Instant,
}

impl Story {
    /// Prints one step's line: its mark, what happened, and how long the
    /// step took.
    pub(crate) fn check(&mut self, what: &str, ok: bool, since: Instant) {
        let mark = if ok { "ok " } else { "FAIL" };
        println!(
            "[{mark}] {what}  ({:.0} ms)",
            since.elapsed().as_secs_f64() * 1000.0
        );
        self.outcome.steps.push((what.to_owned(), ok));
    }
}

/// Runs the demo in `data_dir` (or a new temporary directory that is kept).
/// A directory from an earlier run is emptied first: the story starts with
/// a new server and new devices.
pub fn run(data_dir: Option<PathBuf>) -> Result<DemoOutcome, DemoError> {
    let dir = match data_dir {
        Some(d) => {
            for part in ["server", "devices"] {
                match std::fs::remove_dir_all(d.join(part)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(DemoError::DataDir(e.kind())),
                }
            }
            std::fs::create_dir_all(&d).map_err(|e| DemoError::DataDir(e.kind()))?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("scr-demo-")
            .tempdir()
            .map_err(|e| DemoError::DataDir(e.kind()))?
            .keep(),
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| DemoError::Runtime(e.kind()))?;
    let mut story = Story {
        outcome: DemoOutcome {
            steps: Vec::new(),
            data_dir: dir.clone(),
        },
        started: Instant::now(),
    };
    let told = runtime.block_on(story::tell(&mut story, &dir));
    let passed = story.outcome.steps.iter().filter(|(_, ok)| *ok).count();
    println!();
    if let Err(e) = &told {
        println!("[FAIL] the story stopped: {e}");
        story.outcome.steps.push((e.to_string(), false));
    }
    println!("data directory: {}", dir.display());
    println!(
        "{passed} of {} steps passed in {:.1} s",
        story.outcome.steps.len(),
        story.started.elapsed().as_secs_f64()
    );
    Ok(story.outcome)
}

/// Turns any error into the step it stopped.
pub(crate) fn fail<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> DemoError {
    move |cause| DemoError::Step {
        step,
        cause: cause.to_string(),
    }
}
