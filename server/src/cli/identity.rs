//! Who runs an admin command, proven before it runs: a named operator with
//! their passcode, or, for a privacy officer's commands, the officer with
//! their own staff passcode; either is the first line of standard input
//! (never a flag: it would show in a process list and a shell's history).
//! Every command is audited under that id, and so is every refusal: a
//! passcode that does not prove the id, and a command that fails.

use std::process::ExitCode;

use scr_core::access::DenyReason;
use scr_core::audit::Outcome;
use scr_server::operators::OperatorError;

use super::{AdminCommand, admin, governance};

/// Who a command says runs it.
enum Claimed<'a> {
    Operator(&'a str),
    Officer(&'a str),
    /// The first operator account, added by whoever holds the data
    /// directory (it holds `server.key`: everything already).
    FirstOperator(&'a str),
}

impl Claimed<'_> {
    fn id(&self) -> &str {
        match self {
            Claimed::Operator(id) | Claimed::Officer(id) | Claimed::FirstOperator(id) => id,
        }
    }
}

impl AdminCommand {
    fn name(&self) -> &'static str {
        match self {
            AdminCommand::AddOperator(_) => "add-operator",
            AdminCommand::EnrollToken(_) => "enroll-token",
            AdminCommand::RevokeDevice(_) => "revoke-device",
            AdminCommand::RevokeUser(_) => "revoke-user",
            AdminCommand::AddUser(_) => "add-user",
            AdminCommand::Assign(_) => "assign",
            AdminCommand::Unassign(_) => "unassign",
            AdminCommand::LoadRecord(_) => "load-record",
            AdminCommand::SetChoice(_) => "set-choice",
            AdminCommand::PatientToken(_) => "patient-token",
            AdminCommand::Alerts(_) => "alerts",
            AdminCommand::CloseAlert(_) => "close-alert",
            AdminCommand::Unhide(_) => "unhide",
            AdminCommand::RepairDocument(_) => "repair-document",
        }
    }

    fn data_dir(&self) -> &super::DataDir {
        match self {
            AdminCommand::AddOperator(a) => &a.dir,
            AdminCommand::EnrollToken(a) => &a.dir,
            AdminCommand::RevokeDevice(a) => &a.dir,
            AdminCommand::RevokeUser(a) => &a.dir,
            AdminCommand::AddUser(a) => &a.dir,
            AdminCommand::Assign(a) => &a.dir,
            AdminCommand::Unassign(a) => &a.dir,
            AdminCommand::LoadRecord(a) => &a.dir,
            AdminCommand::SetChoice(a) => &a.dir,
            AdminCommand::PatientToken(a) => &a.dir,
            AdminCommand::Alerts(a) => &a.dir,
            AdminCommand::CloseAlert(a) => &a.dir,
            AdminCommand::Unhide(a) => &a.dir,
            AdminCommand::RepairDocument(a) => &a.dir,
        }
    }

    fn claimed(&self, operators: u64) -> Result<Claimed<'_>, String> {
        Ok(match self {
            AdminCommand::AddOperator(a) => match (&a.operator, operators) {
                (None, 0) => Claimed::FirstOperator(&a.operator_id),
                (Some(id), _) => Claimed::Operator(id),
                (None, _) => return Err("--operator is required once an operator exists".into()),
            },
            AdminCommand::EnrollToken(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::RevokeDevice(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::RevokeUser(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::AddUser(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::Assign(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::Unassign(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::LoadRecord(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::SetChoice(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::PatientToken(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::RepairDocument(a) => Claimed::Operator(&a.by.operator),
            AdminCommand::Alerts(a) => Claimed::Officer(&a.officer),
            AdminCommand::CloseAlert(a) => Claimed::Officer(&a.officer),
            AdminCommand::Unhide(a) => Claimed::Officer(&a.officer),
        })
    }
}

/// Proves who runs `command`, runs it as them, and audits a refusal.
pub fn run(command: &AdminCommand) -> Result<ExitCode, String> {
    let dir = command.data_dir();
    std::fs::create_dir_all(&dir.data_dir).map_err(|e| format!("--data-dir: {}", e.kind()))?;
    let (store, directory) = admin::open_server(dir)?;
    let operators = directory.operator_count().map_err(|e| e.to_string())?;
    let claimed = command.claimed(operators)?;
    let action = format!("admin-{}", command.name());
    let refused = |actor: &str, why: &str| {
        let denied = Outcome::Deny {
            reason: DenyReason::NotAllowed,
        };
        let detail = Some(format!("{action}: {why}"));
        if scr_server::audit::record(&store, actor, "admin-refused", None, denied, detail).is_err()
        {
            eprintln!("warning: the refusal could not be audited");
        }
    };
    let proven = match &claimed {
        Claimed::FirstOperator(_) => Ok(()),
        Claimed::Operator(id) if operators == 0 => Err(OperatorError::Invalid(
            "no operator account yet: add one with `admin add-operator`",
        ))
        .map_err(|e| (id, e)),
        Claimed::Operator(id) => super::stdin_line()
            .map_err(|_| OperatorError::NotAuthenticated)
            .and_then(|passcode| directory.authenticate_operator(id, &passcode))
            .map_err(|e| (id, e)),
        Claimed::Officer(id) => super::stdin_line()
            .map_err(|_| OperatorError::NotAuthenticated)
            .and_then(|passcode| directory.authenticate_staff(id, &passcode))
            .map_err(|e| (id, e)),
    };
    if let Err((id, e)) = proven {
        refused(id, "not authenticated");
        return Err(e.to_string());
    }
    let actor = claimed.id();
    let result = dispatch(command, actor);
    if let Err(why) = &result {
        refused(actor, why);
    }
    result
}

fn dispatch(command: &AdminCommand, actor: &str) -> Result<ExitCode, String> {
    match command {
        AdminCommand::AddOperator(a) => admin::add_operator(a, actor),
        AdminCommand::EnrollToken(a) => admin::enroll_token(a, actor),
        AdminCommand::RevokeDevice(a) => admin::revoke_device(a, actor),
        AdminCommand::RevokeUser(a) => admin::revoke_user(a, actor),
        AdminCommand::AddUser(a) => admin::add_user(a, actor),
        AdminCommand::Assign(a) => admin::assign(a, actor),
        AdminCommand::Unassign(a) => admin::unassign(a, actor),
        AdminCommand::LoadRecord(a) => admin::load_record(a, actor),
        AdminCommand::SetChoice(a) => admin::set_choice(a, actor),
        AdminCommand::PatientToken(a) => governance::patient_token(a, actor),
        AdminCommand::Alerts(a) => governance::alerts(a),
        AdminCommand::CloseAlert(a) => governance::close_alert(a),
        AdminCommand::Unhide(a) => governance::unhide(a),
        AdminCommand::RepairDocument(a) => admin::repair_document(a, actor),
    }
}
