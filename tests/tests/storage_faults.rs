//! Storage faults: a full disk (a small tmpfs), a lost WAL after a crash,
//! and damaged database pages. Each gives a typed error, never a panic;
//! nothing committed before the fault is lost (a lost WAL loses exactly the
//! newest writes it held, leaving a consistent earlier state); and a damaged
//! store is moved aside and reported, never deleted.
//!
//! The full-disk test mounts a tmpfs, so it needs root (CI has it); without
//! root it says so and checks nothing.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use scr_core::clock::SystemClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::device::{Device, DeviceError, DeviceSettings, STORE_FILE};
use scr_core::retention::DeviceClass;

fn device(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crash-device"));
    c.args(args);
    c
}

fn run(args: &[&str]) -> Output {
    device(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn acked_of(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ack ").map(str::to_owned))
        .collect()
}

/// A tmpfs of `size` mounted at a new directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "scr-full"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_with_a_typed_error_and_keeps_every_acknowledged_write() {
    let Some(disk) = SmallDisk::mount("3m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let dir = disk.path().to_str().unwrap().to_owned();
    let acked_file = tempfile::NamedTempFile::new().unwrap();

    // The tablet writes until the disk is full: a typed refusal, exit 1
    // (a panic would be 101).
    let fill = run(&[&dir, "write"]);
    let out = text(&fill.stdout);
    let acked = acked_of(&out);
    assert_eq!(fill.status.code(), Some(1), "{}", text(&fill.stderr));
    assert!(
        out.lines().last() == Some("refused full"),
        "the refusal says the disk is full: {:?}",
        out.lines().last()
    );
    assert!(acked.len() > 5, "it wrote before the disk filled");
    std::fs::write(acked_file.path(), acked.join("\n")).unwrap();

    // Still full: a view must audit first, so it is refused the same way.
    let check = run(&[&dir, "check", acked_file.path().to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("refused full"),
        "{} / {}",
        text(&check.stdout),
        text(&check.stderr)
    );

    // Space freed: every acknowledged write is there, the chain verifies.
    disk.resize("64m");
    let check = run(&[&dir, "check", acked_file.path().to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    eprintln!(
        "full disk: {} writes acknowledged before it filled, all present after",
        acked.len()
    );
}

#[test]
fn a_lost_wal_after_a_crash_leaves_a_consistent_prefix_of_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let acked_file = dir.path().join("acked");

    for trial in 0..3 {
        // Write for a while, then SIGKILL (the WAL holds the newest commits).
        let mut child = device(&[&d, "write"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(300 + 100 * trial));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&acked_file)
            .unwrap();
        for l in lines.iter().filter_map(|l| l.strip_prefix("ack ")) {
            writeln!(file, "{l}").unwrap();
        }

        // The WAL (and, in one trial, the shared-memory index) goes missing.
        let wal = dir.path().join("tablet.db-wal");
        let _ = std::fs::remove_file(&wal);
        if trial == 1 {
            let _ = std::fs::remove_file(dir.path().join("tablet.db-shm"));
        }
        let check = run(&[&d, "check-prefix", acked_file.to_str().unwrap()]);
        assert!(check.status.success(), "{}", text(&check.stderr));
        let out = text(&check.stdout);
        // What survives is the new baseline of acknowledged writes.
        let lost: usize = out
            .lines()
            .find_map(|l| l.strip_prefix("lost newest "))
            .map_or(0, |n| n.parse().unwrap());
        let all: Vec<String> = std::fs::read_to_string(&acked_file)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        std::fs::write(&acked_file, all[..all.len() - lost].join("\n") + "\n").unwrap();
        eprintln!(
            "lost WAL, trial {trial}: {lost} newest of {} writes gone",
            all.len()
        );
    }
}

fn open_device(dir: &Path) -> Result<Device, DeviceError> {
    Device::open(
        dir,
        &StaticKeyProvider::new(SecretKey::from_bytes([5; 32])),
        DeviceSettings::new(DeviceClass::NurseTablet),
        Arc::new(SystemClock),
    )
}

/// Damages `len` bytes at `offset` of the device's store.
fn damage(dir: &Path, offset: u64, len: usize) {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(STORE_FILE))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![0xA5; len]).unwrap();
}

#[test]
fn a_damaged_store_is_moved_aside_reported_and_never_deleted() {
    // The header (not a database at all), and a page in the middle.
    for (what, offset, len) in [("header", 0, 100), ("page 3", 2 * 16384, 8000)] {
        let dir = tempfile::tempdir().unwrap();
        drop(open_device(dir.path()).unwrap());
        damage(dir.path(), offset, len);
        let damaged = std::fs::read(dir.path().join(STORE_FILE)).unwrap();

        let Err(DeviceError::StoreMovedAside { moved_to }) = open_device(dir.path()) else {
            panic!("{what}: the damage was not reported as a moved-aside store");
        };
        assert!(moved_to.starts_with("scr-sync-corrupt-"), "{moved_to}");
        let kept = std::fs::read(dir.path().join(&moved_to)).unwrap();
        let first_difference = kept.iter().zip(&damaged).position(|(a, b)| a != b);
        assert!(
            kept.len() == damaged.len() && first_difference.is_none(),
            "{what}: kept byte for byte ({} vs {} bytes, first difference at {first_difference:?})",
            kept.len(),
            damaged.len()
        );
        // Opening again starts a new store, to be enrolled again.
        let fresh = open_device(dir.path()).unwrap();
        assert!(!fresh.is_enrolled().unwrap());
        assert!(dir.path().join(&moved_to).exists(), "{what}: still kept");
    }
}
