//! `scr-server`: `serve`, `admin` and `demo`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use scr_core::Store;
use scr_core::channel::hex_key;
use scr_server::directory::Directory;
use scr_server::identity::{ServerIdentity, key_provider};
use scr_server::serve::{ServeConfig, start};

const USAGE: &str = "usage:
  scr-server demo [--data-dir DIR]
  scr-server serve --data-dir DIR [--listen 127.0.0.1:7420] [--health 127.0.0.1:7421]
  scr-server admin enroll-token --data-dir DIR --org ODS --class CLASS [--ttl-minutes 60]
  scr-server admin revoke-device --data-dir DIR --key HEX
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
    tracing_subscriber::fmt().with_target(false).init();
    let config = ServeConfig {
        data_dir: PathBuf::from(required(flags, "data-dir")?),
        listen: addr(flags, "listen", "127.0.0.1:7420")?,
        health: addr(flags, "health", "127.0.0.1:7421")?,
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
    let directory = Directory::open(&dir.join("directory.db")).map_err(|e| e.to_string())?;
    if directory.revoke(&key).map_err(|e| e.to_string())? {
        println!("device revoked");
        Ok(ExitCode::SUCCESS)
    } else {
        Err("no such device".into())
    }
}

fn parse_hex_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
