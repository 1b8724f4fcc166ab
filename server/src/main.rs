//! `scr-server`: `serve`, `admin` and `demo`.

mod cli;

use std::process::ExitCode;

use scr_core::channel::hex_key;
use scr_server::serve::{ServeConfig, start};

use cli::{Command, ServeArgs};

/// glibc's malloc serves allocations of 128 KiB and more by mmap, and
/// returns them when freed, for the process's whole life. Left to itself it
/// raises that threshold after the first large free (Argon2's 19 MiB
/// working memory) and keeps what is freed below it resident: at 2,000
/// tablets that was 1.26 GB at the peak against 0.56 GB with the threshold
/// fixed (mimalloc, measured too: 1.15 GB; docs/PERFORMANCE.md, issue 18).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() {
    // SAFETY: mallopt takes two integers and only sets allocator options;
    // called first thing in `main`, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = cli::parse();
    let result = match &cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo(args.data_dir.clone()),
        Command::Serve(args) => serve(args),
        Command::Admin(command) => cli::identity::run(command),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "demo")]
fn demo(data_dir: Option<std::path::PathBuf>) -> Result<ExitCode, String> {
    let outcome = scr_server::demo::run(data_dir).map_err(|e| e.to_string())?;
    Ok(if outcome.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Logs to stderr (stdout carries the one line that says where it
/// listens), filtered by `RUST_LOG` (default `info`), coloured only on a
/// terminal.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn connection_limits(args: &ServeArgs) -> scr_server::serve::limits::ConnectionLimits {
    use scr_server::rate::Rate;
    let per_second = |n: u64| Rate::per_second(n as f64 * 10.0, n as f64);
    scr_server::serve::limits::ConnectionLimits {
        max_unauthenticated: usize::try_from(args.max_unauthenticated).unwrap_or(usize::MAX),
        max_unauthenticated_per_address: usize::try_from(args.max_unauthenticated_per_address)
            .unwrap_or(usize::MAX),
        handshakes_per_address: per_second(args.handshakes_per_address),
        handshakes_per_device: per_second(args.handshakes_per_device),
        max_push_bytes: usize::try_from(args.max_push_mib << 20).unwrap_or(usize::MAX),
        trusted_proxies: args.trusted_proxy.clone(),
        ..Default::default()
    }
}

fn serve(args: &ServeArgs) -> Result<ExitCode, String> {
    init_logging();
    let config = ServeConfig {
        data_dir: args.dir.data_dir.clone(),
        listen: args.listen,
        health: args.health,
        audit_overdue_after: std::time::Duration::from_secs(args.audit_overdue_hours * 3600),
        legacy_permissions_until_ms: args.legacy_permissions_until,
        grant_lifetime: std::time::Duration::from_secs(args.grant_minutes * 60),
        limits: connection_limits(args),
        store: args.dir.store_at(),
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        // Listening for SIGTERM before starting: one sent while the server
        // starts stops it gracefully once it has, rather than killing it.
        let mut stop = StopSignals::new().map_err(|e| e.to_string())?;
        let server = start(config).await.map_err(|e| e.to_string())?;
        println!(
            "serving sync on {} and health on {}; server key {}",
            server.sync_addr,
            server.health_addr,
            hex_key(&server.server_key)
        );
        let signal = stop.next().await.map_err(|e| e.to_string())?;
        println!("{signal}: shutting down");
        let drained = server.shutdown().await;
        println!(
            "stopped: {} sync sessions told to go elsewhere; connections in flight {}",
            drained.sessions_ended,
            if drained.in_time {
                "all finished"
            } else {
                "cut after the drain time"
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Ctrl-C, and SIGTERM (what systemd and Kubernetes send to stop a
/// service), listened for from when this is made.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// Waits for either; says which came.
    async fn next(&mut self) -> std::io::Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.map(|()| "interrupted"),
                _ = self.term.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.map(|()| "interrupted")
        }
    }
}
