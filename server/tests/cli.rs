//! The command line as an operator meets it: every command answers
//! `--help` (exit 0, usage on stdout), and a usage error names the flag
//! without echoing an NHS number.

use std::process::Command;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["demo"],
    &["serve"],
    &["admin"],
    &["admin", "add-operator"],
    &["admin", "enroll-token"],
    &["admin", "revoke-device"],
    &["admin", "revoke-user"],
    &["admin", "add-user"],
    &["admin", "assign"],
    &["admin", "unassign"],
    &["admin", "load-record"],
    &["admin", "set-choice"],
    &["admin", "patient-token"],
    &["admin", "alerts"],
    &["admin", "close-alert"],
    &["admin", "unhide"],
    &["admin", "repair-document"],
];

mod common;

fn scr_server(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scr-server"))
        .args(args)
        .output()
        .expect("run scr-server")
}

#[test]
fn every_command_answers_help() {
    for command in COMMANDS {
        let mut args = command.to_vec();
        args.push("--help");
        let out = scr_server(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}");
        assert!(stdout.contains("Usage: scr-server"), "{args:?}: {stdout}");
    }
    // The admin list names every admin command.
    let admin = String::from_utf8_lossy(&scr_server(&["admin", "--help"]).stdout).to_string();
    for command in COMMANDS.iter().filter(|c| c.len() == 2) {
        assert!(admin.contains(command[1]), "{admin}");
    }
}

#[test]
fn usage_errors_name_the_flag_and_exit_2() {
    let out = scr_server(&["admin", "alerts", "--data-dir", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--officer is required"));
    let out = scr_server(&["serve", "--data-dir", "/tmp/x", "--listen", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = scr_server(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_nhs_number_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = common::admin::as_operator(
        d,
        &[
            "admin",
            "set-choice",
            "--data-dir",
            d,
            "--nhs",
            "9434765918",
            "--choice",
            "opt-out",
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("NHS number"), "{stderr}");
    assert!(!stderr.contains("9434765918"), "{stderr}");
}
