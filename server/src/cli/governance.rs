//! `scr-server admin` commands for patients' phones and privacy officers:
//! a patient's enrollment token, reviewing and closing alerts, unhiding a
//! record. Each is audited (see `scr_server::privacy`, `patients`).

use std::process::ExitCode;

use scr_core::audit::Outcome;
use scr_core::channel::hex_key;
use scr_server::privacy::Officer;
use scr_server::serve::identity::ServerIdentity;

use super::admin::{nhs_number, open_server, open_state};
use super::{AlertsArgs, CloseAlertArgs, PatientTokenArgs, UnhideArgs};

/// `admin patient-token`: an enrollment token for a patient's own phone,
/// bound to the patient (NHS number from `--nhs` or the next line of
/// standard input) and the passcode they chose (the line after).
pub fn patient_token(args: &PatientTokenArgs, actor: &str) -> Result<ExitCode, String> {
    let (store, directory) = open_server(&args.dir)?;
    let identity = ServerIdentity::load_or_create(&store).map_err(|e| e.to_string())?;
    let nhs = nhs_number(&args.patient)?;
    let passcode = super::stdin_line()?;
    let ttl = args.ttl_minutes;
    let org = args.org.as_str();
    let token = directory
        .create_enrollment_token(
            org,
            scr_core::retention::DeviceClass::PatientPhone,
            scr_core::clock::now_ms() + ttl * 60_000,
        )
        .map_err(|e| e.to_string())?;
    scr_server::patients::bind_token(&store, &token, nhs, &passcode).map_err(|e| e.to_string())?;
    scr_server::audit::record(
        &store,
        actor,
        "admin-patient-token",
        Some(nhs),
        Outcome::Recorded,
        Some(org.to_owned()),
    )
    .map_err(|e| e.to_string())?;
    println!("enrollment token for the patient's phone: {token}");
    println!(
        "server key (pin on the phone): {}",
        hex_key(&identity.noise.public())
    );
    println!("valid for {ttl} minutes, once");
    Ok(ExitCode::SUCCESS)
}

/// `admin alerts`: the alerts routed to the officer's organisation.
pub fn alerts(args: &AlertsArgs) -> Result<ExitCode, String> {
    let state = open_state(&args.dir)?;
    let (store, directory, archive) = (state.store, state.directory, state.archive);
    let officer = Officer::find(&directory, &args.officer).map_err(|e| e.to_string())?;
    let all = args.all.is_yes();
    let alerts = officer
        .alerts(&archive, &store, all)
        .map_err(|e| e.to_string())?;
    if alerts.is_empty() {
        println!(
            "no {}alerts for {}",
            if all { "" } else { "open " },
            officer.organisation
        );
    }
    for a in alerts {
        // The NHS number is shown to the privacy officer, whose reading of
        // it was audited; it goes to the terminal, never to a log.
        println!(
            "alert {} [{}] type {} reason {}: {} ({} {}) {} {} at {} on basis {}{}",
            a.id,
            a.status,
            a.alert.alert_type().code(),
            a.alert.reason().code(),
            a.event.user,
            a.event.role,
            a.event.organisation,
            a.event.action,
            a.event.patient.map(|p| p.digits()).unwrap_or_default(),
            scr_core::audit::chrono_like_rfc3339(a.raised_at_ms),
            a.event.basis.as_deref().unwrap_or("-"),
            a.closed_by
                .map(|b| format!(", closed by {b}"))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `admin close-alert`: closes one with an outcome.
pub fn close_alert(args: &CloseAlertArgs) -> Result<ExitCode, String> {
    let state = open_state(&args.dir)?;
    let (store, directory, archive) = (state.store, state.directory, state.archive);
    let officer = Officer::find(&directory, &args.officer).map_err(|e| e.to_string())?;
    let (id, outcome) = (args.id, args.outcome);
    officer
        .close(&archive, &store, id, outcome)
        .map_err(|e| e.to_string())?;
    println!("alert {id} closed: {}", outcome.as_str());
    Ok(ExitCode::SUCCESS)
}

/// `admin unhide`: a privacy officer unhides a hidden record.
pub fn unhide(args: &UnhideArgs) -> Result<ExitCode, String> {
    let (store, directory) = open_server(&args.dir)?;
    let officer = Officer::find(&directory, &args.officer).map_err(|e| e.to_string())?;
    let nhs = nhs_number(&args.patient)?;
    let choices = officer
        .unhide(&store, &nhs, &args.request_ref, &args.investigation_ref)
        .map_err(|e| e.to_string())?;
    println!(
        "record unhidden; sharing {:?}, sensitive items {}",
        choices.sharing,
        if choices.include_sensitive {
            "included"
        } else {
            "left out"
        }
    );
    Ok(ExitCode::SUCCESS)
}
