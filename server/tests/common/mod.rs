//! Shared setup for the server's socket tests: a server on loopback, the
//! nurse account the journeys use, and a samod dialer over the channel.
#![allow(clippy::unwrap_used, dead_code)]

pub mod admin;
pub mod device;
pub mod fault_proxy;
pub mod nodes;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod pusher;
pub mod site;

use std::sync::Arc;

use scr_core::channel::{self, Hello, Purpose, StaticKeypair};
use scr_server::serve::{RunningServer, ServeConfig, start};
use scr_server::users::NewUser;

pub async fn server(dir: &std::path::Path) -> RunningServer {
    let mut config = ServeConfig::on_loopback(dir);
    config.store = store_of(dir);
    start(config).await.unwrap()
}

/// A second handle on the server's store, as an admin command would open.
pub fn server_store(dir: &std::path::Path) -> scr_core::Store {
    scr_server::serve::state::open(dir, &store_of(dir))
        .unwrap()
        .store
}

/// Where the server on `dir` keeps its state: its files, or with
/// `SCR_TEST_STORE=postgres` (`scripts/test` runs a named subset of the
/// suite so) a fresh PostgreSQL database of its own, named in a file of
/// the directory so every handle on `dir` finds the same one.
pub fn store_of(dir: &std::path::Path) -> scr_server::serve::state::StoreAt {
    use scr_server::serve::state::StoreAt;
    if std::env::var("SCR_TEST_STORE").as_deref() != Ok("postgres") {
        return StoreAt::Files;
    }
    let named = dir.join("test-postgres-url");
    let url = match std::fs::read_to_string(&named) {
        Ok(url) => url,
        Err(_) => {
            let url = postgres::fresh_database()
                .expect("SCR_TEST_STORE=postgres needs the test cluster (scripts/with-postgres)");
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&named, &url).unwrap();
            url
        }
    };
    StoreAt::Postgres(scr_server::pg::PgConfig::new(&url))
}

pub const NURSE_ID: &str = "555000000102";
pub const NURSE_PASSCODE: &str = "jo-2468";

/// Jo, a community nurse at RX1 who may view and write.
pub fn nurse() -> NewUser {
    NewUser {
        user_id: NURSE_ID.into(),
        display_name: "Jo Nurse".into(),
        organisation: "RX1".into(),
        job_role: "R0050".into(),
        job_role_name: "Community Nurse".into(),
        activities: vec!["B0264".into(), "B0370".into(), "B0380".into()],
        privacy_officer: false,
        card_serial: "CARD-0001".into(),
    }
}

/// A privacy officer at `organisation` (card `CARD-<user id>`).
pub fn officer(user_id: &str, organisation: &str) -> NewUser {
    NewUser {
        user_id: user_id.into(),
        display_name: "Pat Privacy".into(),
        organisation: organisation.into(),
        job_role: "R8003".into(),
        job_role_name: "Privacy Officer".into(),
        activities: vec!["B0264".into()],
        privacy_officer: true,
        card_serial: format!("CARD-{user_id}"),
    }
}

pub fn nurse_login() -> scr_core::protocol::LoginRequest {
    scr_core::protocol::LoginRequest {
        user_id: NURSE_ID.into(),
        card_serial: "CARD-0001".into(),
        passcode: NURSE_PASSCODE.into(),
    }
}

pub async fn ws(
    addr: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(format!("ws://{addr}/sync"))
        .await
        .unwrap()
        .0
}

/// First contact: enroll `keys` with `token` (the channel is dropped at once).
pub async fn enroll(srv: &RunningServer, keys: &StaticKeypair, token: &str) {
    let hello = Hello::new(Purpose::Sync, Some(token)).encode();
    drop(
        channel::connect(ws(srv.sync_addr).await, keys, &srv.server_key, &hello)
            .await
            .unwrap(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// The device's samod dialer (the one the sync driver uses).
pub fn dialer(srv: &RunningServer, keys: Arc<StaticKeypair>) -> Arc<scr_core::sync::NoiseDialer> {
    Arc::new(
        scr_core::sync::NoiseDialer::new(
            &format!("ws://{}/sync", srv.sync_addr),
            keys,
            srv.server_key,
        )
        .unwrap(),
    )
}

/// One plain HTTP GET to the health port; the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

/// One samod wire message (CBOR), as a client that speaks the protocol
/// directly would build it.
pub fn wire(kind: &str, fields: &[(&str, &str)], data: Option<&[u8]>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    let n = 1 + fields.len() as u64 + u64::from(data.is_some()) + u64::from(kind == "join");
    e.map(n).unwrap();
    e.str("type").unwrap().str(kind).unwrap();
    for (k, v) in fields {
        e.str(k).unwrap().str(v).unwrap();
    }
    if kind == "join" {
        e.str("supportedProtocolVersions").unwrap();
        e.array(1).unwrap().str("1").unwrap();
    }
    if let Some(d) = data {
        e.str("data").unwrap().bytes(d).unwrap();
    }
    buf
}

/// A visit note as the nurse's tablet writes it (her grant's author, role,
/// organisation and device; recorded now): what the record's rules let a
/// push add to care events.
pub fn nurse_note(device: &[u8; 32], note: &str) -> scr_core::record::EntryVersion {
    let n = nurse();
    scr_core::record::EntryVersion::new(
        scr_core::record::EntryId::new(),
        Vec::new(),
        scr_core::record::VersionStatus::Current,
        scr_core::record::EntryContent::EncounterSummary {
            setting: "home visit".into(),
            occurred_at: "2026-12-03".into(),
            note: note.into(),
        },
        scr_core::record::Provenance {
            author_id: n.user_id,
            role: n.job_role,
            organisation: n.organisation,
            device: channel::hex_key(device),
            recorded_at_ms: scr_core::clock::now_ms(),
        },
    )
}

/// Adds `version` to a compartment document, as the engine does.
pub fn put_version(doc: &mut automerge::Automerge, version: &scr_core::record::EntryVersion) {
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;
    let versions = doc.get(automerge::ROOT, "versions").unwrap().unwrap().1;
    let mut tx = doc.transaction();
    tx.put(
        &versions,
        version.version_id.to_string(),
        serde_json::to_string(version).unwrap(),
    )
    .unwrap();
    tx.commit();
}

/// The notes of the encounter summaries in a compartment document.
pub fn notes_of(doc: &automerge::Automerge) -> Vec<String> {
    use automerge::ReadDoc;
    let Some((_, versions)) = doc.get(automerge::ROOT, "versions").ok().flatten() else {
        return Vec::new();
    };
    doc.keys(&versions)
        .filter_map(|k| doc.get(&versions, k.as_str()).ok().flatten())
        .filter_map(|(v, _)| v.as_str().map(str::to_owned))
        .filter_map(|json| serde_json::from_str::<scr_core::record::EntryVersion>(&json).ok())
        .filter_map(|v| match v.content {
            scr_core::record::EntryContent::EncounterSummary { note, .. } => Some(note),
            _ => None,
        })
        .collect()
}

/// A one-time enrollment token for a device of `organisation`, an hour.
pub fn token_for(
    srv: &RunningServer,
    organisation: &str,
    class: scr_core::retention::DeviceClass,
) -> String {
    srv.directory
        .create_enrollment_token(organisation, class, scr_core::clock::now_ms() + 60_000)
        .unwrap()
}

/// A device enrolled at `organisation` as `class` and, given `login`,
/// logged in: its keys, as a client that speaks the protocol directly
/// holds them (a modified app with a valid grant).
pub async fn raw_device(
    srv: &RunningServer,
    organisation: &str,
    class: scr_core::retention::DeviceClass,
    login: Option<&scr_core::protocol::LoginRequest>,
) -> StaticKeypair {
    let keys = StaticKeypair::generate().unwrap();
    enroll(srv, &keys, &token_for(srv, organisation, class)).await;
    if let Some(login) = login {
        let response =
            scr_core::sync::login(ws(srv.sync_addr).await, &keys, &srv.server_key, login)
                .await
                .unwrap();
        assert!(
            matches!(response, scr_core::protocol::LoginResponse::Granted { .. }),
            "login refused: {response:?}"
        );
    }
    keys
}
