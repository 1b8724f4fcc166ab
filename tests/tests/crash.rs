//! Crash loops: the device (`crash-device`) writes and views until SIGKILL
//! at a random moment, then is checked and run again: every write the
//! engine acknowledged survives, nothing is half-applied, the audit chain
//! verifies. SCR_CRASH_TRIALS sets the number of kills (default 12 here;
//! the long mode in docs/RELIABILITY.md runs hundreds); SCR_CRASH_SEED
//! replays a run's kill times.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn device(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crash-device"));
    c.args(args);
    c
}

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Kills(u64);

impl Kills {
    fn next_delay(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(30 + self.0 % 400)
    }
}

#[test]
fn a_device_killed_at_random_keeps_every_acknowledged_write_and_its_audit_chain() {
    let trials: usize = std::env::var("SCR_CRASH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("SCR_CRASH_SEED")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0x5c2_5eed);
    let mut kills = Kills(seed.max(1));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path().to_str().expect("a UTF-8 path");
    let acked_file = dir.path().join("acked.txt");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writes_acked_at_kill = Vec::new();
    for trial in 0..trials {
        let mut child = device(&[d, "write"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the device starts");
        let stdout = child.stdout.take().expect("its output");
        let sink = acked.clone();
        let (writing_tx, writing) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("ack ") {
                    sink.lock().expect("the list").push(id.to_owned());
                    let _ = writing_tx.send(());
                }
            }
        });
        // Half the kills land anywhere from the start (opening the store,
        // migrating, logging in); half while writes are under way.
        if trial % 2 == 1 {
            let _ = writing.recv_timeout(Duration::from_secs(20));
        }
        std::thread::sleep(kills.next_delay());
        // SIGKILL: no destructor, no flush, no chance to finish the write.
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(
            !status.success(),
            "trial {trial}: the device stopped by itself: {status}"
        );
        reader.join().expect("the reader");
        let list = acked.lock().expect("the list").join("\n");
        std::fs::write(&acked_file, list).expect("the acknowledged list");
        writes_acked_at_kill.push(acked.lock().expect("the list").len());
        let out = device(&[d, "check", acked_file.to_str().expect("UTF-8")])
            .output()
            .expect("the check runs");
        assert!(
            out.status.success(),
            "trial {trial} (seed {seed}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let total = *writes_acked_at_kill.last().unwrap_or(&0);
    assert!(
        total > trials,
        "the device acknowledged too few writes to test: {total}"
    );
    println!("{trials} kills, {total} acknowledged writes, none lost");
}
