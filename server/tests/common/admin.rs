//! Running `scr-server admin` as an operator or an officer does: the
//! passcode of who runs it on the first line of standard input.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub const OPERATOR: &str = "ops-1";
pub const OPERATOR_PASSCODE: &str = "ops-passcode-1";

/// `scr-server ARGS` with `stdin` on its standard input.
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scr-server"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (A command refused before it reads may have closed its input.)
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Adds the test operator to `data_dir` if it has no operator yet.
pub fn ensure_operator(data_dir: &str) {
    let args = [
        "admin",
        "add-operator",
        "--data-dir",
        data_dir,
        "--operator-id",
        OPERATOR,
        "--name",
        "Olu Operator",
    ];
    // Refused (harmlessly) once an operator exists.
    let _ = run(&args, &format!("{OPERATOR_PASSCODE}\n"));
}

/// `scr-server ARGS --operator ops-1`: the operator's passcode, then
/// `stdin`, on standard input (the operator added first if need be).
/// `data_dir` is the one `ARGS` name.
pub fn as_operator(data_dir: &str, args: &[&str], stdin: &str) -> Output {
    ensure_operator(data_dir);
    let mut all = args.to_vec();
    all.extend(["--operator", OPERATOR]);
    run(&all, &format!("{OPERATOR_PASSCODE}\n{stdin}"))
}

/// `scr-server ARGS` as the privacy officer whose passcode is `passcode`
/// (ARGS name them with `--officer`).
pub fn as_officer(args: &[&str], passcode: &str, stdin: &str) -> Output {
    run(args, &format!("{passcode}\n{stdin}"))
}

/// Standard output and error together.
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// `admin add-user` as the test operator: a member of staff at `org`
/// (a privacy officer if `officer`) whose passcode is `passcode`.
pub fn add_user(d: &str, user_id: &str, org: &str, officer: bool, passcode: &str) {
    let out = as_operator(
        d,
        &[
            "admin",
            "add-user",
            "--data-dir",
            d,
            "--user-id",
            user_id,
            "--name",
            "Pat Privacy",
            "--org",
            org,
            "--job-role",
            "R8003",
            "--role-name",
            "Privacy Officer",
            "--activities",
            "B0264",
            "--card-serial",
            "CARD-9",
            "--privacy-officer",
            if officer { "yes" } else { "no" },
        ],
        &format!("{passcode}\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
}
