//! The command line: `serve`, `admin …` and `demo`, parsed by clap. Every
//! command answers `--help`; a usage error names the flag and exits 2.
//! Patient identifiers are never flag values clap checks (it would echo
//! them): `--nhs` is parsed after, and best given on standard input.

pub mod admin;
pub mod governance;
pub mod identity;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use scr_core::retention::DeviceClass;

#[derive(Debug, Parser)]
#[command(
    name = "scr-server",
    version,
    about = "SCR Sync server: sync over the Noise channel, enrollment, login, the audit archive, administration, and the end-to-end demo",
    after_help = "Without --nhs, a command reads the NHS number from standard input (it then shows in no process list or shell history)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The server and three devices over loopback: the whole story, with timings.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Serve devices (sync, enrollment, login, audit uploads) and /health, /metrics.
    Serve(ServeArgs),
    /// Administer a server's data directory.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the server and the devices keep their stores (a new temporary directory if omitted).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// The address devices connect to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// The address of /health and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7421")]
    pub health: SocketAddr,
    /// A device whose oldest unsent audit event is older than this counts as overdue.
    #[arg(long, value_name = "HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_overdue_hours: u64,
    /// Until when (a UTC date, YYYY-MM-DD) a permission to view that an app
    /// of record layout 1 pushes into governance is taken and moved to the
    /// permissions compartment, rather than refused (ADR 0011).
    #[arg(long, value_name = "DATE", default_value = "2027-07-01", value_parser = utc_date_ms)]
    pub legacy_permissions_until: i64,
    /// How long a grant issued at login lasts: the device works offline
    /// under it until then (a shift at most).
    #[arg(long, value_name = "MINUTES", default_value_t = 720, value_parser = clap::value_parser!(u64).range(1..=720))]
    pub grant_minutes: u64,
    /// Connections that have not completed a handshake, at once.
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_unauthenticated: u64,
    /// Of those, from one client address (many tablets may share one).
    #[arg(long, value_name = "N", default_value_t = 4_096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_unauthenticated_per_address: u64,
    /// Handshakes one client address may start a second (ten seconds' worth at once).
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub handshakes_per_address: u64,
    /// Handshakes one device may make a second (ten seconds' worth at once).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub handshakes_per_device: u64,
    /// Bytes of one push (a sync message carrying changes), in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub max_push_mib: u64,
    /// A load balancer whose connections begin with a PROXY protocol header
    /// naming the client (repeat for each).
    #[arg(long, value_name = "IP")]
    pub trusted_proxy: Vec<std::net::IpAddr>,
}

/// The next line of standard input (a passcode, an NHS number), without
/// its line ending. Standard input is read in order: the passcode of who
/// runs the command first, then what the command itself reads.
pub fn stdin_line() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|_| "standard input could not be read".to_owned())?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Midnight UTC of a YYYY-MM-DD date, in milliseconds since the Unix epoch.
pub fn utc_date_ms(date: &str) -> Result<i64, String> {
    let bad = || "expected a date as YYYY-MM-DD".to_owned();
    let mut parts = date
        .splitn(3, '-')
        .map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) => (y?, m?, d?),
        _ => return Err(bad()),
    };
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400_000)
}

/// The server's data directory.
#[derive(Debug, Args)]
pub struct DataDir {
    /// The server's data directory (with --store, it holds only server.key).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Keep the server's state in PostgreSQL (a postgres:// URL), shared by
    /// every node given the same URL and the same server.key; without it,
    /// SQLite files in the data directory. Best given in SCR_STORE, which
    /// keeps a password out of process lists.
    #[arg(long, value_name = "URL", env = "SCR_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// With --store: the PostgreSQL connections this process keeps at most.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pg_pool: u64,
}

impl DataDir {
    /// Where the state is kept.
    pub fn store_at(&self) -> scr_server::serve::state::StoreAt {
        match &self.store {
            None => scr_server::serve::state::StoreAt::Files,
            Some(url) => {
                let mut config = scr_server::pg::PgConfig::new(url);
                config.pool_size = usize::try_from(self.pg_pool).unwrap_or(16);
                scr_server::serve::state::StoreAt::Postgres(config)
            }
        }
    }
}

/// The operator running the command; their passcode is the first line of
/// standard input.
#[derive(Debug, Args)]
pub struct OperatorArg {
    /// Your operator id (your passcode: the first line of standard input).
    #[arg(long, value_name = "ID")]
    pub operator: String,
}

/// The patient, by NHS number: from this flag, or the first line of standard input.
#[derive(Debug, Args)]
pub struct Patient {
    /// The patient's NHS number (omit it to read it from standard input).
    #[arg(long, value_name = "NUMBER")]
    pub nhs: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Add (or reset) an operator account; its passcode is read from standard
    /// input (after yours: the first account needs no --operator).
    AddOperator(AddOperatorArgs),
    /// A one-time enrollment token for a device of an organisation.
    EnrollToken(EnrollTokenArgs),
    /// Revoke a device: it may upload its audit trail, then it wipes itself.
    RevokeDevice(RevokeDeviceArgs),
    /// Revoke a user: no more logins; devices holding their grant wipe themselves.
    RevokeUser(UserArgs),
    /// Add (or update) a member of staff; the passcode is read from standard input.
    AddUser(AddUserArgs),
    /// Record a legitimate relationship between a user and a patient.
    Assign(AssignArgs),
    /// End a user's relationship with a patient.
    Unassign(UnassignArgs),
    /// Load a patient's record from a JSON file.
    LoadRecord(LoadRecordArgs),
    /// Record a patient's sharing choice (omitted options stay as they are).
    SetChoice(SetChoiceArgs),
    /// An enrollment token for a patient's own phone; the passcode they chose is read from standard input.
    PatientToken(PatientTokenArgs),
    /// A privacy officer's alerts.
    Alerts(AlertsArgs),
    /// Close an alert with its outcome.
    CloseAlert(CloseAlertArgs),
    /// Unhide a hidden record, citing the request and the investigation.
    Unhide(UnhideArgs),
    /// Repair a record's document that no longer reads, from its last readable state (audited).
    RepairDocument(RepairDocumentArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    Yes,
    No,
}

impl YesNo {
    pub fn is_yes(self) -> bool {
        self == YesNo::Yes
    }
}

#[derive(Debug, Args)]
pub struct AddOperatorArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// The new operator's id (lower-case letters, digits, dots, dashes).
    #[arg(long, value_name = "ID")]
    pub operator_id: String,
    /// Their name, as the trail shows it.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Your operator id, once any operator exists (your passcode: the first line of standard input).
    #[arg(long, value_name = "ID")]
    pub operator: Option<String>,
}

#[derive(Debug, Args)]
pub struct EnrollTokenArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    /// The organisation's ODS code.
    #[arg(long, value_name = "ODS")]
    pub org: String,
    /// The kind of device.
    #[arg(long, value_name = "CLASS", value_parser = device_class)]
    pub class: DeviceClass,
    /// How long the token may be used, once.
    #[arg(long, value_name = "MINUTES", default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=7 * 24 * 60))]
    pub ttl_minutes: i64,
}

#[derive(Debug, Args)]
pub struct RevokeDeviceArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    /// The device's public key, 64 hex digits.
    #[arg(long, value_name = "HEX")]
    pub key: String,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    /// The user's SDS user id.
    #[arg(long, value_name = "SDS")]
    pub user_id: String,
}

#[derive(Debug, Args)]
pub struct AddUserArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    #[arg(long, value_name = "SDS")]
    pub user_id: String,
    /// The name patients see in their access log.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The organisation's ODS code.
    #[arg(long, value_name = "ODS")]
    pub org: String,
    /// The selected job role code (R0050, ...).
    #[arg(long, value_name = "CODE")]
    pub job_role: String,
    #[arg(long, value_name = "NAME")]
    pub role_name: String,
    /// Activity codes, comma separated (B0264,B0370).
    #[arg(long, value_name = "CODES", value_delimiter = ',')]
    pub activities: Vec<String>,
    #[arg(long, value_name = "SERIAL")]
    pub card_serial: String,
    #[arg(long, value_name = "YES|NO", default_value = "no")]
    pub privacy_officer: YesNo,
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    #[arg(long, value_name = "SDS")]
    pub user_id: String,
    #[command(flatten)]
    pub patient: Patient,
    /// caseload, registration, referral or incident:ID.
    #[arg(long, value_name = "KIND")]
    pub kind: String,
}

#[derive(Debug, Args)]
pub struct UnassignArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    #[arg(long, value_name = "SDS")]
    pub user_id: String,
    #[command(flatten)]
    pub patient: Patient,
}

#[derive(Debug, Args)]
pub struct LoadRecordArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    /// The patient's record (see docs/OPERATIONS.md for the format).
    #[arg(long, value_name = "PATIENT.json")]
    pub file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    CoreOnly,
    CoreAndAdditional,
    OptOut,
}

#[derive(Debug, Args)]
pub struct SetChoiceArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    #[command(flatten)]
    pub patient: Patient,
    /// core-only, core-and-additional or opt-out.
    #[arg(long, value_name = "CHOICE", value_parser = choice)]
    pub choice: Choice,
    #[arg(long, value_name = "YES|NO")]
    pub include_sensitive: Option<YesNo>,
    /// Hide the record (yes), or lift its hiding (no: only as the patient's own choice).
    #[arg(long, value_name = "YES|NO")]
    pub hidden: Option<YesNo>,
    /// The patient themself gave this instruction (only then may a hiding be lifted).
    #[arg(long, value_name = "YES|NO", default_value = "no")]
    pub patients_own_choice: YesNo,
}

#[derive(Debug, Args)]
pub struct PatientTokenArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    /// The GP practice's ODS code.
    #[arg(long, value_name = "GP_ODS")]
    pub org: String,
    #[command(flatten)]
    pub patient: Patient,
    #[arg(long, value_name = "MINUTES", default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=7 * 24 * 60))]
    pub ttl_minutes: i64,
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Your SDS user id, as a privacy officer (your passcode: the first line of standard input).
    #[arg(long, value_name = "SDS")]
    pub officer: String,
    /// Closed alerts too.
    #[arg(long, value_name = "YES|NO", default_value = "no")]
    pub all: YesNo,
}

#[derive(Debug, Args)]
pub struct CloseAlertArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Your SDS user id, as a privacy officer (your passcode: the first line of standard input).
    #[arg(long, value_name = "SDS")]
    pub officer: String,
    /// The alert's number.
    #[arg(long, value_name = "N")]
    pub id: i64,
    /// justified or referred.
    #[arg(long, value_name = "OUTCOME", value_parser = alert_outcome)]
    pub outcome: scr_server::archive::AlertOutcome,
}

#[derive(Debug, Args)]
pub struct UnhideArgs {
    #[command(flatten)]
    pub dir: DataDir,
    /// Your SDS user id, as a privacy officer (your passcode: the first line of standard input).
    #[arg(long, value_name = "SDS")]
    pub officer: String,
    #[command(flatten)]
    pub patient: Patient,
    /// The patient's (or their representative's) request.
    #[arg(long, value_name = "REF")]
    pub request_ref: String,
    /// The privacy officer's investigation.
    #[arg(long, value_name = "REF")]
    pub investigation_ref: String,
}

#[derive(Debug, Args)]
pub struct RepairDocumentArgs {
    #[command(flatten)]
    pub dir: DataDir,
    #[command(flatten)]
    pub by: OperatorArg,
    /// The document's id (as samod names it; never an NHS number).
    #[arg(long, value_name = "ID")]
    pub document: String,
}

fn device_class(s: &str) -> Result<DeviceClass, String> {
    s.parse().map_err(|_| {
        "unknown device class (patient-phone, ambulance-tablet, nurse-tablet, gp-system)".to_owned()
    })
}

/// Parses the command line. `--help` and `--version` print and exit 0; a
/// usage error names the flag (a missing one as "--org is required") and
/// exits 2.
pub fn parse() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::MissingRequiredArgument => {
            let missing = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(args)) => args.clone(),
                _ => Vec::new(),
            };
            for arg in &missing {
                let flag = arg.split_whitespace().next().unwrap_or(arg);
                eprintln!("error: {flag} is required");
            }
            if missing.is_empty() {
                let _ = e.print();
            } else {
                eprintln!("\nFor more information, try '--help'.");
            }
            std::process::exit(2)
        }
        Err(e) => e.exit(),
    }
}

fn choice(s: &str) -> Result<Choice, String> {
    match s {
        "core-only" => Ok(Choice::CoreOnly),
        "core-and-additional" => Ok(Choice::CoreAndAdditional),
        "opt-out" => Ok(Choice::OptOut),
        _ => Err("--choice is core-only, core-and-additional or opt-out".to_owned()),
    }
}

fn alert_outcome(s: &str) -> Result<scr_server::archive::AlertOutcome, String> {
    use scr_server::archive::AlertOutcome;
    match s {
        "justified" => Ok(AlertOutcome::Justified),
        "referred" => Ok(AlertOutcome::Referred),
        _ => Err("is justified or referred".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
