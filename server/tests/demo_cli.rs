//! The README's first command, run as a user would: the demo binary (the
//! server and three devices over loopback) must finish with every step
//! passed and leave the server's and each device's store in the data
//! directory.

use std::process::Command;

#[test]
fn the_demo_tells_the_whole_story_and_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_scr-server"))
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run scr-server");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}");
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
    for beat in [
        "emergency access",
        "core only",
        "who looked",
        "privacy officer",
    ] {
        assert!(stdout.contains(beat), "no '{beat}' in:\n{stdout}");
    }
    assert!(
        stdout.contains(&dir.path().display().to_string()),
        "{stdout}"
    );
    assert!(dir.path().join("server/server.db").exists());
    for device in ["nurse-tablet", "ambulance-tablet", "patient-phone"] {
        let store = dir.path().join("devices").join(device).join("scr-sync.db");
        assert!(store.exists(), "{device} missing");
    }
    // Running again in the same directory starts the story afresh.
    let again = Command::new(env!("CARGO_BIN_EXE_scr-server"))
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run scr-server again");
    assert!(again.status.success());
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_scr-server"))
        .args(["demo", "--bogus"])
        .output()
        .expect("run scr-server");
    assert_eq!(out.status.code(), Some(2));
}
