//! `scr-server serve` as a child process on a data directory, as an
//! operator runs it, and its audit archive read beside it.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::BufRead;
use std::process::{Child, ChildStdout, Command, Stdio};

use scr_server::archive::Archive;

pub struct ServerProcess {
    pub child: Child,
    /// Where it serves sync.
    pub addr: std::net::SocketAddr,
    /// Its standard output after the first line (kept open: a server that
    /// prints to a closed pipe would fail).
    pub stdout: std::io::BufReader<ChildStdout>,
}

impl ServerProcess {
    /// The next line it prints (empty once it has exited).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line
    }
}

/// `scr-server serve` on `dir`, once it says where it listens.
pub fn serve(dir: &std::path::Path) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scr-server"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--health", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // serving sync on ADDR and health on ADDR; server key HEX
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the server did not start: {line:?}"));
    ServerProcess {
        child,
        addr,
        stdout,
    }
}

/// The archive as the server left it (opened beside the running server, as
/// an admin command would).
pub fn archive(dir: &std::path::Path) -> Archive {
    let store = super::server_store(dir);
    Archive::open(
        &dir.join("audit.db"),
        &scr_server::serve::identity::archive_root(&store).unwrap(),
    )
    .unwrap()
}
