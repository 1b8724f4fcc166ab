//! `scr-server admin` commands for devices, staff and records: enrollment
//! tokens, revocations, users, relationships, loading a record, a
//! patient's choice. Each is audited in the server's own trail.

use std::process::ExitCode;

use scr_core::Store;
use scr_core::audit::Outcome;
use scr_core::channel::hex_key;
use scr_core::grant::RelationshipKind;
use scr_server::directory::Directory;
use scr_server::serve::identity::ServerIdentity;

use super::{
    AddOperatorArgs, AddUserArgs, AssignArgs, Choice, DataDir, EnrollTokenArgs, LoadRecordArgs,
    Patient, RepairDocumentArgs, RevokeDeviceArgs, SetChoiceArgs, UnassignArgs, UserArgs,
};

pub fn enroll_token(args: &EnrollTokenArgs, actor: &str) -> Result<ExitCode, String> {
    let ttl = args.ttl_minutes;
    let (store, directory) = open_server(&args.dir)?;
    let identity = ServerIdentity::load_or_create(&store).map_err(|e| e.to_string())?;
    let expires = scr_core::clock::now_ms() + ttl * 60_000;
    let token = directory
        .create_enrollment_token(&args.org, args.class, expires)
        .map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        actor,
        "admin-enroll-token",
        None,
        Outcome::Recorded,
        Some(format!("{} {}", args.org, args.class.as_str())),
    )
    .map_err(|e| e.to_string())?;
    println!("enrollment token: {token}");
    println!(
        "server key (pin on the device): {}",
        hex_key(&identity.noise.public())
    );
    println!("valid for {ttl} minutes, once");
    Ok(ExitCode::SUCCESS)
}

/// `admin add-operator`: an operator account (its passcode on standard
/// input), added by `actor` (or, the first one, by whoever holds the data
/// directory).
pub fn add_operator(args: &AddOperatorArgs, actor: &str) -> Result<ExitCode, String> {
    let (store, directory) = open_server(&args.dir)?;
    let passcode = super::stdin_line()?;
    directory
        .add_operator(&args.operator_id, &args.name, &passcode)
        .map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        actor,
        "admin-add-operator",
        None,
        Outcome::Recorded,
        Some(args.operator_id.clone()),
    )
    .map_err(|e| e.to_string())?;
    println!("operator {} added", args.operator_id);
    Ok(ExitCode::SUCCESS)
}

pub fn revoke_device(args: &RevokeDeviceArgs, actor: &str) -> Result<ExitCode, String> {
    let hex = args.key.as_str();
    let key = parse_hex_key(hex).ok_or("--key must be 64 hex digits")?;
    let (store, directory) = open_server(&args.dir)?;
    if directory.revoke(&key).map_err(|e| e.to_string())? {
        scr_server::audit::record(
            &store,
            actor,
            "admin-revoke-device",
            None,
            Outcome::Recorded,
            Some(hex[..16].to_owned()),
        )
        .map_err(|e| e.to_string())?;
        println!("device revoked");
        Ok(ExitCode::SUCCESS)
    } else {
        Err("no such device".into())
    }
}

/// A user's access withdrawn: no more logins, and every device still
/// holding their grant uploads its trail and wipes itself when it next
/// connects.
pub fn revoke_user(args: &UserArgs, actor: &str) -> Result<ExitCode, String> {
    let user_id = args.user_id.as_str();
    let (store, directory) = open_server(&args.dir)?;
    if !directory.revoke_user(user_id).map_err(|e| e.to_string())? {
        return Err("no such user, or already revoked".into());
    }
    scr_server::audit::record(
        &store,
        actor,
        "admin-revoke-user",
        None,
        Outcome::Recorded,
        Some(user_id.to_owned()),
    )
    .map_err(|e| e.to_string())?;
    println!("user revoked");
    Ok(ExitCode::SUCCESS)
}

/// The server's state, where `dir` says (its files, or PostgreSQL).
pub fn open_state(dir: &DataDir) -> Result<scr_server::serve::state::NodeState, String> {
    scr_server::serve::state::open(&dir.data_dir, &dir.store_at()).map_err(|e| e.to_string())
}

pub fn open_server(dir: &DataDir) -> Result<(Store, Directory), String> {
    let state = open_state(dir)?;
    Ok((state.store, state.directory))
}

pub fn add_user(args: &AddUserArgs, actor: &str) -> Result<ExitCode, String> {
    let (store, directory) = open_server(&args.dir)?;
    let user = scr_server::users::NewUser {
        user_id: args.user_id.clone(),
        display_name: args.name.clone(),
        organisation: args.org.clone(),
        job_role: args.job_role.clone(),
        job_role_name: args.role_name.clone(),
        activities: args
            .activities
            .iter()
            .map(|a| a.trim().to_owned())
            .collect(),
        privacy_officer: args.privacy_officer.is_yes(),
        card_serial: args.card_serial.clone(),
    };
    // The passcode comes on standard input, never on the command line.
    let passcode = super::stdin_line()?;
    directory
        .add_user(&user, &passcode)
        .map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        actor,
        "admin-add-user",
        None,
        Outcome::Recorded,
        Some(user.user_id.clone()),
    )
    .map_err(|e| e.to_string())?;
    println!("user {} added", user.user_id);
    Ok(ExitCode::SUCCESS)
}

pub fn unassign(args: &UnassignArgs, actor: &str) -> Result<ExitCode, String> {
    let (store, _) = open_server(&args.dir)?;
    let user = args.user_id.as_str();
    let nhs = nhs_number(&args.patient)?;
    let removed = scr_server::users::unassign(&store, user, nhs).map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        actor,
        "admin-unassign",
        Some(nhs),
        Outcome::Recorded,
        Some(user.to_owned()),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "{}",
        if removed {
            "relationship ended"
        } else {
            "there was no such relationship"
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn assign(args: &AssignArgs, actor: &str) -> Result<ExitCode, String> {
    let (store, directory) = open_server(&args.dir)?;
    let user = args.user_id.as_str();
    let nhs = nhs_number(&args.patient)?;
    let kind = match args.kind.as_str() {
        "caseload" => RelationshipKind::Caseload,
        "registration" => RelationshipKind::Registration,
        "referral" => RelationshipKind::Referral,
        other => match other.strip_prefix("incident:") {
            Some(id) if !id.is_empty() => RelationshipKind::Incident {
                incident_id: id.to_owned(),
            },
            _ => return Err("--kind is caseload, registration, referral or incident:ID".into()),
        },
    };
    let detail = format!("{user} {kind:?}");
    scr_server::users::assign(&store, &directory, user, nhs, kind).map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        actor,
        "admin-assign",
        Some(nhs),
        Outcome::Recorded,
        Some(detail),
    )
    .map_err(|e| e.to_string())?;
    println!("relationship recorded");
    Ok(ExitCode::SUCCESS)
}

pub fn load_record(args: &LoadRecordArgs, actor: &str) -> Result<ExitCode, String> {
    let json = std::fs::read_to_string(&args.file).map_err(|e| format!("--file: {}", e.kind()))?;
    let file = scr_server::records::parse(&json).map_err(|e| e.to_string())?;
    let (store, _) = open_server(&args.dir)?;
    let docs = scr_server::records::load(&store, &file, actor).map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        actor,
        "admin-load-record",
        Some(file.nhs_number),
        Outcome::Recorded,
        None,
    )
    .map_err(|e| e.to_string())?;
    println!("record loaded with {} entries", file.entries.len());
    for (compartment, doc_id) in docs {
        println!("  {:<16} {doc_id}", compartment.as_str());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn set_choice(args: &SetChoiceArgs, actor: &str) -> Result<ExitCode, String> {
    use scr_core::record::SharingChoice;
    let nhs = nhs_number(&args.patient)?;
    let choice = match args.choice {
        Choice::CoreOnly => SharingChoice::CoreOnly,
        Choice::CoreAndAdditional => SharingChoice::CoreAndAdditional,
        Choice::OptOut => SharingChoice::OptOut,
    };
    let instruction = scr_server::records::ChoiceInstruction {
        choice,
        include_sensitive: args.include_sensitive.map(|v| v.is_yes()),
        hidden: args.hidden.map(|v| v.is_yes()),
        patients_own: args.patients_own_choice.is_yes(),
    };
    let (store, _) = open_server(&args.dir)?;
    // The choice and its audit event commit together.
    let now =
        scr_server::records::set_choice(&store, &nhs, instruction, actor).map_err(|e| match e {
            scr_server::records::LoadError::Store(scr_core::StoreError::RecordNotFound) => {
                "the server holds no record for that NHS number".to_owned()
            }
            other => other.to_string(),
        })?;
    println!(
        "now: {:?}, sensitive items {}, {}",
        now.sharing,
        if now.include_sensitive {
            "included"
        } else {
            "withheld"
        },
        if now.hidden { "hidden" } else { "not hidden" }
    );
    println!("choice recorded; connected devices follow within seconds");
    Ok(ExitCode::SUCCESS)
}

/// The patient's NHS number: from `--nhs`, or (better: it then appears in
/// no process list or shell history) the first line of standard input.
pub fn nhs_number(patient: &Patient) -> Result<scr_core::NhsNumber, String> {
    let text = match &patient.nhs {
        Some(n) => n.clone(),
        None => super::stdin_line()?,
    };
    scr_core::NhsNumber::parse(&text).map_err(|e| format!("NHS number: {e}"))
}

fn parse_hex_key(hex: &str) -> Option<[u8; 32]> {
    scr_core::channel::from_hex(hex)?.try_into().ok()
}

/// `admin repair-document`: a record's document that no longer reads,
/// repaired from its last readable state (audited).
pub fn repair_document(args: &RepairDocumentArgs, actor: &str) -> Result<ExitCode, String> {
    let (store, _) = open_server(&args.dir)?;
    match scr_server::repair::repair_document(&store, &args.document, actor) {
        Ok((compartment, None)) => {
            println!(
                "the {} document reads: nothing to repair",
                compartment.as_str()
            );
        }
        Ok((compartment, Some(r))) => println!(
            "the {} document is repaired: header {}, {} versions restored",
            compartment.as_str(),
            if r.header { "put back" } else { "intact" },
            r.versions_restored
        ),
        Err(e) => return Err(e.to_string()),
    }
    Ok(ExitCode::SUCCESS)
}
