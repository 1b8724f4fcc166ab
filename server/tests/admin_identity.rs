//! The admin commands act as a named operator who proved who they are
//! (their passcode on standard input), the privacy officers' as the officer
//! with their own passcode; each action is audited under that id, and so
//! is each refusal. `set-choice` lifts a hiding only as the patient's own
//! choice; for anyone else it is `unhide`, a permitted decision.
#![allow(clippy::unwrap_used)]

use scr_core::audit::{AuditEvent, Outcome};
use scr_core::fixtures::test_nhs_number;
use scr_core::record::SharingChoice;

mod common;

use common::admin::{OPERATOR, OPERATOR_PASSCODE, add_user, as_officer, as_operator, run, text};

/// The server's own trail, as the data directory holds it.
fn trail(dir: &std::path::Path) -> Vec<AuditEvent> {
    common::server_store(dir).queued_audit_events().unwrap()
}

#[test]
fn an_operator_proves_who_they_are_and_every_action_and_refusal_is_theirs_in_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let token = ["admin", "enroll-token", "--data-dir", d, "--org", "RX1"];
    let token = [&token[..], &["--class", "nurse-tablet"]].concat();

    // No operator yet: nothing runs but adding the first.
    let mut first = token.clone();
    first.extend(["--operator", "someone"]);
    let out = run(&first, "whatever\n");
    assert!(
        !out.status.success() && text(&out).contains("no operator account yet"),
        "{}",
        text(&out)
    );
    // As the operator: the action is theirs in the trail.
    let out = as_operator(d, &token, "");
    assert!(out.status.success(), "{}", text(&out));
    let issued = trail(dir.path())
        .into_iter()
        .find(|e| e.action == "admin-enroll-token")
        .unwrap();
    assert_eq!(issued.user, OPERATOR);

    // A wrong passcode is refused, and audited under the id it claimed.
    let mut claimed = token.clone();
    claimed.extend(["--operator", OPERATOR]);
    let out = run(&claimed, "not-the-passcode\n");
    assert!(
        !out.status.success() && text(&out).contains("not authenticated"),
        "{}",
        text(&out)
    );
    let refused = trail(dir.path()).pop().unwrap();
    assert_eq!(
        (refused.user.as_str(), refused.action.as_str()),
        (OPERATOR, "admin-refused")
    );
    assert!(matches!(refused.outcome, Outcome::Deny { .. }));
    assert_eq!(
        refused.detail.as_deref(),
        Some("admin-enroll-token: not authenticated")
    );
    // Five wrong in all lock the account: then the right passcode too is
    // refused, until another operator adds it again.
    for _ in 0..4 {
        assert!(!run(&claimed, "not-the-passcode\n").status.success());
    }
    let locked = run(&claimed, &format!("{OPERATOR_PASSCODE}\n"));
    assert!(!locked.status.success(), "locked");
    let second = [
        "admin",
        "add-operator",
        "--data-dir",
        d,
        "--operator-id",
        "ops-2",
        "--name",
        "Sam Second",
    ];
    let out = run(&second, "ops-2-passcode\n");
    assert!(
        text(&out).contains("--operator is required once an operator exists"),
        "{}",
        text(&out)
    );
    // Nor can the locked operator add another (keep two: docs/OPERATIONS.md).
    let mut by_locked = second.to_vec();
    by_locked.extend(["--operator", OPERATOR]);
    assert!(
        !run(
            &by_locked,
            &format!("{OPERATOR_PASSCODE}\nops-2-passcode\n")
        )
        .status
        .success()
    );
    // Every refusal is in the trail, under the id it claimed.
    let refusals = trail(dir.path())
        .into_iter()
        .filter(|e| e.action == "admin-refused" && e.user == OPERATOR)
        .count();
    assert_eq!(refusals, 7);
}

#[test]
fn officers_prove_who_they_are_and_a_hiding_is_lifted_only_by_the_patient_or_an_unhide() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    add_user(d, "555000000904", "RX1", true, "pat-1357");
    add_user(d, "555000000905", "RX1", false, "kim-1357");
    // A hidden record.
    let store = common::server_store(dir.path());
    let patient = test_nhs_number(93);
    scr_server::records::load(
        &store,
        &common::device::record(93, SharingChoice::CoreAndAdditional),
        "test",
    )
    .unwrap();
    drop(store);
    let digits = patient.digits();
    let choice = |extra: &[&str]| {
        let mut args = vec![
            "admin",
            "set-choice",
            "--data-dir",
            d,
            "--choice",
            "core-and-additional",
        ];
        args.extend(extra);
        as_operator(d, &args, &format!("{digits}\n"))
    };
    assert!(choice(&["--hidden", "yes"]).status.success());
    // Lifting it on someone's say-so is refused, and audited.
    let out = choice(&["--hidden", "no"]);
    assert!(
        !out.status.success() && text(&out).contains("admin unhide"),
        "{}",
        text(&out)
    );
    let last = trail(dir.path()).pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.user.as_str()),
        ("admin-refused", OPERATOR)
    );
    // An officer's command, by someone who is not one: refused, audited.
    let unhide = |officer: &str, passcode: &str, request: &str| {
        as_officer(
            &[
                "admin",
                "unhide",
                "--data-dir",
                d,
                "--officer",
                officer,
                "--request-ref",
                request,
                "--investigation-ref",
                "INV-1",
            ],
            passcode,
            &format!("{digits}\n"),
        )
    };
    let out = unhide("555000000905", "kim-1357", "REQ-1");
    assert!(
        !out.status.success() && text(&out).contains("is not a privacy officer"),
        "{}",
        text(&out)
    );
    let last = trail(dir.path()).pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.user.as_str()),
        ("admin-refused", "555000000905")
    );
    // Without a request reference: refused, audited.
    let out = unhide("555000000904", "pat-1357", "");
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(trail(dir.path()).pop().unwrap().action, "admin-refused");
    // The officer, with both references: a permitted decision.
    let out = unhide("555000000904", "pat-1357", "REQ-1");
    assert!(out.status.success(), "{}", text(&out));
    let done = trail(dir.path())
        .into_iter()
        .rfind(|e| e.action == "unhide")
        .unwrap();
    assert_eq!(
        (done.user.as_str(), done.outcome),
        ("555000000904", Outcome::Permit)
    );
    // Hidden again; the patient's own choice lifts it, naming who took it.
    assert!(choice(&["--hidden", "yes"]).status.success());
    let out = choice(&["--hidden", "no", "--patients-own-choice", "yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not hidden"), "{}", text(&out));
    let lifted = trail(dir.path()).pop().unwrap();
    assert_eq!(lifted.action, "admin-set-choice");
    assert!(
        lifted
            .detail
            .unwrap()
            .starts_with(&format!("the patient's own choice, taken by {OPERATOR}")),
    );
}
