//! `scr-server`: `serve`, `admin` and `demo`.

mod governance_commands;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use scr_core::Store;
use scr_core::audit::Outcome;
use scr_core::channel::hex_key;
use scr_core::grant::RelationshipKind;
use scr_server::directory::Directory;
use scr_server::identity::{ServerIdentity, key_provider};
use scr_server::serve::{ServeConfig, start};

const USAGE: &str = "usage:
  scr-server demo [--data-dir DIR]
  scr-server serve --data-dir DIR [--listen 127.0.0.1:7420] [--health 127.0.0.1:7421]
                   [--audit-overdue-hours 24]
  scr-server admin enroll-token --data-dir DIR --org ODS --class CLASS [--ttl-minutes 60]
  scr-server admin revoke-device --data-dir DIR --key HEX
  scr-server admin revoke-user --data-dir DIR --user-id SDS
  scr-server admin add-user --data-dir DIR --user-id SDS --name NAME --org ODS --job-role R0050
                            --role-name NAME --activities B0264,B0370 --card-serial SERIAL
                            [--privacy-officer yes]   (reads the passcode from standard input)
  scr-server admin assign --data-dir DIR --user-id SDS [--nhs NUMBER] --kind caseload|registration|referral|incident:ID
  scr-server admin unassign --data-dir DIR --user-id SDS [--nhs NUMBER]
  scr-server admin load-record --data-dir DIR --file PATIENT.json
  scr-server admin set-choice --data-dir DIR [--nhs NUMBER] --choice core-only|core-and-additional|opt-out
                              [--include-sensitive yes|no] [--hidden yes|no]   (omitted: unchanged)
  scr-server admin patient-token --data-dir DIR --org GP_ODS [--nhs NUMBER] [--ttl-minutes 60]
                                (reads the patient's chosen passcode from standard input)
  scr-server admin alerts --data-dir DIR --officer SDS [--all yes]
  scr-server admin close-alert --data-dir DIR --officer SDS --id N --outcome justified|referred
  scr-server admin unhide --data-dir DIR --officer SDS [--nhs NUMBER] --request-ref REF --investigation-ref REF
without --nhs, the NHS number is read from standard input (it then shows in no process list)
classes: patient-phone, ambulance-tablet, nurse-tablet, gp-system";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.first().map(String::as_str) {
        Some("admin") => (
            format!("admin {}", args.get(1).map(String::as_str).unwrap_or("")),
            args.get(2..).unwrap_or(&[]),
        ),
        Some(c) => (c.to_owned(), &args[1..]),
        None => return usage("no command"),
    };
    let flags = match parse_flags(rest) {
        Ok(f) => f,
        Err(msg) => return usage(&msg),
    };
    let result = match command.as_str() {
        "demo" => demo(&flags),
        "serve" => serve(&flags),
        "admin enroll-token" => enroll_token(&flags),
        "admin revoke-device" => revoke_device(&flags),
        "admin revoke-user" => revoke_user(&flags),
        "admin add-user" => add_user(&flags),
        "admin assign" => assign(&flags, true),
        "admin unassign" => assign(&flags, false),
        "admin load-record" => load_record(&flags),
        "admin set-choice" => set_choice(&flags),
        "admin patient-token" => governance_commands::patient_token(&flags),
        "admin alerts" => governance_commands::alerts(&flags),
        "admin close-alert" => governance_commands::close_alert(&flags),
        "admin unhide" => governance_commands::unhide(&flags),
        _ => return usage("unknown command"),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("{problem}\n{USAGE}");
    ExitCode::from(2)
}

fn parse_flags(args: &[String]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        out.insert(name.to_owned(), value.clone());
    }
    Ok(out)
}

fn required<'a>(flags: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    flags
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("--{name} is required"))
}

fn demo(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    let outcome = scr_server::demo::run(flags.get("data-dir").map(PathBuf::from))
        .map_err(|e| e.to_string())?;
    Ok(if outcome.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn addr(flags: &HashMap<String, String>, name: &str, default: &str) -> Result<SocketAddr, String> {
    flags
        .get(name)
        .map(String::as_str)
        .unwrap_or(default)
        .parse()
        .map_err(|_| format!("--{name} is not an address like 127.0.0.1:7420"))
}

fn serve(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    // Logs to stderr: stdout carries the one line that says where it listens.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let config = ServeConfig {
        data_dir: PathBuf::from(required(flags, "data-dir")?),
        listen: addr(flags, "listen", "127.0.0.1:7420")?,
        health: addr(flags, "health", "127.0.0.1:7421")?,
        audit_overdue_after: match flags.get("audit-overdue-hours") {
            None => ServeConfig::DEFAULT_AUDIT_OVERDUE,
            Some(h) => h
                .parse::<u64>()
                .ok()
                .filter(|h| *h > 0)
                .map(|h| std::time::Duration::from_secs(h * 3600))
                .ok_or("--audit-overdue-hours is a whole number of hours")?,
        },
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let server = start(config).await.map_err(|e| e.to_string())?;
        println!(
            "serving sync on {} and health on {}; server key {}",
            server.sync_addr,
            server.health_addr,
            hex_key(&server.server_key)
        );
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        println!("shutting down");
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn enroll_token(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    let dir = PathBuf::from(required(flags, "data-dir")?);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ttl: i64 = flags
        .get("ttl-minutes")
        .map(|v| {
            v.parse()
                .map_err(|_| "--ttl-minutes must be a number".to_owned())
        })
        .transpose()?
        .unwrap_or(60);
    if !(1..=7 * 24 * 60).contains(&ttl) {
        return Err("--ttl-minutes must be between 1 and 10080".into());
    }
    let keys = key_provider(&dir).map_err(|e| e.to_string())?;
    let store = Store::open(dir.join("server.db"), &keys).map_err(|e| e.to_string())?;
    let identity = ServerIdentity::load_or_create(&store).map_err(|e| e.to_string())?;
    let directory = Directory::open(&dir.join("directory.db")).map_err(|e| e.to_string())?;
    let expires = scr_core::clock::now_ms() + ttl * 60_000;
    let token = directory
        .create_enrollment_token(required(flags, "org")?, required(flags, "class")?, expires)
        .map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        "admin",
        "admin-enroll-token",
        None,
        Outcome::Recorded,
        Some(format!(
            "{} {}",
            required(flags, "org")?,
            required(flags, "class")?
        )),
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

fn revoke_device(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    let dir = PathBuf::from(required(flags, "data-dir")?);
    let hex = required(flags, "key")?;
    let key = parse_hex_key(hex).ok_or("--key must be 64 hex digits")?;
    let (store, directory) = open_server(&dir)?;
    if directory.revoke(&key).map_err(|e| e.to_string())? {
        scr_server::audit::record(
            &store,
            "admin",
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
fn revoke_user(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    let dir = PathBuf::from(required(flags, "data-dir")?);
    let user_id = required(flags, "user-id")?;
    let (store, directory) = open_server(&dir)?;
    if !directory.revoke_user(user_id).map_err(|e| e.to_string())? {
        return Err("no such user, or already revoked".into());
    }
    scr_server::audit::record(
        &store,
        "admin",
        "admin-revoke-user",
        None,
        Outcome::Recorded,
        Some(user_id.to_owned()),
    )
    .map_err(|e| e.to_string())?;
    println!("user revoked");
    Ok(ExitCode::SUCCESS)
}

fn open_server(dir: &std::path::Path) -> Result<(Store, Directory), String> {
    let keys = key_provider(dir).map_err(|e| e.to_string())?;
    let store = Store::open(dir.join("server.db"), &keys).map_err(|e| e.to_string())?;
    let directory = Directory::open(&dir.join("directory.db")).map_err(|e| e.to_string())?;
    Ok((store, directory))
}

fn add_user(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    let dir = PathBuf::from(required(flags, "data-dir")?);
    let (store, directory) = open_server(&dir)?;
    let user = scr_server::users::NewUser {
        user_id: required(flags, "user-id")?.to_owned(),
        display_name: required(flags, "name")?.to_owned(),
        organisation: required(flags, "org")?.to_owned(),
        job_role: required(flags, "job-role")?.to_owned(),
        job_role_name: required(flags, "role-name")?.to_owned(),
        activities: required(flags, "activities")?
            .split(',')
            .map(|a| a.trim().to_owned())
            .collect(),
        privacy_officer: flags.get("privacy-officer").is_some_and(|v| v == "yes"),
        card_serial: required(flags, "card-serial")?.to_owned(),
    };
    // The passcode comes on standard input, never on the command line.
    let mut passcode = String::new();
    std::io::stdin()
        .read_line(&mut passcode)
        .map_err(|e| e.to_string())?;
    directory
        .add_user(&user, passcode.trim_end_matches(['\r', '\n']))
        .map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        "admin",
        "admin-add-user",
        None,
        Outcome::Recorded,
        Some(user.user_id.clone()),
    )
    .map_err(|e| e.to_string())?;
    println!("user {} added", user.user_id);
    Ok(ExitCode::SUCCESS)
}

fn assign(flags: &HashMap<String, String>, add: bool) -> Result<ExitCode, String> {
    let dir = PathBuf::from(required(flags, "data-dir")?);
    let (store, directory) = open_server(&dir)?;
    let user = required(flags, "user-id")?;
    let nhs = nhs_number(flags)?;
    if !add {
        let removed = scr_server::users::unassign(&store, user, nhs).map_err(|e| e.to_string())?;
        scr_server::audit::record(
            &store,
            "admin",
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
        return Ok(ExitCode::SUCCESS);
    }
    let kind = match required(flags, "kind")? {
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
        "admin",
        "admin-assign",
        Some(nhs),
        Outcome::Recorded,
        Some(detail),
    )
    .map_err(|e| e.to_string())?;
    println!("relationship recorded");
    Ok(ExitCode::SUCCESS)
}

fn load_record(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    let dir = PathBuf::from(required(flags, "data-dir")?);
    let json = std::fs::read_to_string(required(flags, "file")?)
        .map_err(|e| format!("--file: {}", e.kind()))?;
    let file = scr_server::records::parse(&json).map_err(|e| e.to_string())?;
    let (store, _) = open_server(&dir)?;
    let docs = scr_server::records::load(&store, &file, "admin").map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        "admin",
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

fn set_choice(flags: &HashMap<String, String>) -> Result<ExitCode, String> {
    use scr_core::record::SharingChoice;
    let dir = PathBuf::from(required(flags, "data-dir")?);
    let nhs = nhs_number(flags)?;
    let choice = match required(flags, "choice")? {
        "core-only" => SharingChoice::CoreOnly,
        "core-and-additional" => SharingChoice::CoreAndAdditional,
        "opt-out" => SharingChoice::OptOut,
        _ => return Err("--choice is core-only, core-and-additional or opt-out".into()),
    };
    let flag = |name: &str| match flags.get(name).map(String::as_str) {
        None => Ok(None),
        Some("yes") => Ok(Some(true)),
        Some("no") => Ok(Some(false)),
        Some(_) => Err(format!("--{name} is yes or no")),
    };
    let (include_sensitive, hidden) = (flag("include-sensitive")?, flag("hidden")?);
    let (store, _) = open_server(&dir)?;
    // The choice and its audit event commit together.
    let now =
        scr_server::records::set_choice(&store, &nhs, choice, include_sensitive, hidden, "admin")
            .map_err(|e| match e {
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
fn nhs_number(flags: &HashMap<String, String>) -> Result<scr_core::NhsNumber, String> {
    let text = match flags.get("nhs") {
        Some(n) => n.clone(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    scr_core::NhsNumber::parse(&text).map_err(|e| format!("NHS number: {e}"))
}

fn parse_hex_key(hex: &str) -> Option<[u8; 32]> {
    scr_core::channel::from_hex(hex)?.try_into().ok()
}
