//! Online login over the Noise channel: the server checks user id, card and
//! passcode and issues a role profile grant bound to the device's proven
//! key, with the user's current relationships; the device's engine accepts
//! it offline against the pinned grant key.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use scr_core::channel::{self, Hello, Purpose, StaticKeypair, from_hex, hex_key};
use scr_core::clock::SystemClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig};
use scr_core::fixtures::test_nhs_number;
use scr_core::grant::{GrantPrincipal, RelationshipKind};
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::retention::DeviceClass;
use scr_server::serve::RunningServer;
use scr_server::users::assign;

mod common;

async fn ws(
    srv: &RunningServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    common::ws(srv.sync_addr).await
}

fn request(passcode: &str, card: &str) -> LoginRequest {
    LoginRequest {
        user_id: common::NURSE_ID.into(),
        card_serial: card.into(),
        passcode: passcode.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurse_logs_in_online_and_her_tablet_trusts_the_grant_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    let patient = test_nhs_number(31);
    let store = common::server_store(&server_dir);
    assign(
        &store,
        &srv.directory,
        "555000000102",
        patient,
        RelationshipKind::Caseload,
    )
    .unwrap();

    // A tablet that is not enrolled cannot even ask.
    let tablet = StaticKeypair::generate().unwrap();
    let refused = scr_core::sync::login(
        ws(&srv).await,
        &tablet,
        &srv.server_key,
        &request("jo-2468", "CARD-0001"),
    )
    .await;
    assert!(refused.is_err());

    // Enroll (first contact with a token), then log in.
    let token = srv
        .directory
        .create_enrollment_token(
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            scr_core::clock::now_ms() + 60_000,
        )
        .unwrap();
    let hello = Hello::new(Purpose::Sync, Some(&token)).encode();
    drop(
        channel::connect(ws(&srv).await, &tablet, &srv.server_key, &hello)
            .await
            .unwrap(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let response = scr_core::sync::login(
        ws(&srv).await,
        &tablet,
        &srv.server_key,
        &request("jo-2468", "CARD-0001"),
    )
    .await
    .unwrap();
    let LoginResponse::Granted {
        grant_hex,
        grant_key_hex,
        ..
    } = response
    else {
        panic!("refused: {response:?}");
    };
    let grant = from_hex(&grant_hex).unwrap();
    let grant_key: [u8; 32] = from_hex(&grant_key_hex).unwrap().try_into().unwrap();

    // The tablet's engine pins the grant key and accepts the grant offline.
    let config = EngineConfig::new(
        &hex_key(&tablet.public()),
        DeviceClass::NurseTablet,
        grant_key,
    );
    let engine = Engine::open(
        dir.path().join("tablet.db"),
        &StaticKeyProvider::new(SecretKey::from_bytes([5; 32])),
        config,
        Arc::new(SystemClock),
    )
    .unwrap();
    let session = engine.login_online(&grant, "tablet-1357").unwrap();
    assert!(
        matches!(session.principal, GrantPrincipal::Staff { ref organisation, .. } if organisation == "RX1")
    );
    // Another device cannot use this grant.
    let other = Engine::open(
        dir.path().join("other.db"),
        &StaticKeyProvider::new(SecretKey::from_bytes([6; 32])),
        EngineConfig::new("someone-else", DeviceClass::NurseTablet, grant_key),
        Arc::new(SystemClock),
    )
    .unwrap();
    assert!(other.login_online(&grant, "tablet-1357").is_err());
    assert_eq!(srv.metrics.logins.get(), 1);

    // A tablet of another organisation cannot carry her session.
    let foreign = StaticKeypair::generate().unwrap();
    let rya = srv
        .directory
        .create_enrollment_token(
            "RYA",
            scr_core::retention::DeviceClass::AmbulanceTablet,
            scr_core::clock::now_ms() + 60_000,
        )
        .unwrap();
    drop(
        channel::connect(
            ws(&srv).await,
            &foreign,
            &srv.server_key,
            &Hello::new(Purpose::Sync, Some(&rya)).encode(),
        )
        .await
        .unwrap(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let refused = scr_core::sync::login(
        ws(&srv).await,
        &foreign,
        &srv.server_key,
        &request("jo-2468", "CARD-0001"),
    )
    .await
    .unwrap();
    assert!(matches!(refused, LoginResponse::Refused { .. }));

    // Wrong card, unknown user, and five wrong passcodes lock the account.
    let login = |r: LoginRequest| {
        let (srv, tablet) = (&srv, &tablet);
        async move {
            scr_core::sync::login(ws(srv).await, tablet, &srv.server_key, &r)
                .await
                .unwrap()
        }
    };
    assert!(matches!(
        login(request("jo-2468", "CARD-9999")).await,
        LoginResponse::Refused { .. }
    ));
    let mut stranger = request("jo-2468", "CARD-0001");
    stranger.user_id = "999".into();
    assert!(matches!(
        login(stranger).await,
        LoginResponse::Refused { .. }
    ));
    for _ in 0..4 {
        assert!(matches!(
            login(request("wrong", "CARD-0001")).await,
            LoginResponse::Refused { .. }
        ));
    }
    // Locked now: even the right credentials are refused, with the same
    // words as any other failure.
    match login(request("jo-2468", "CARD-0001")).await {
        LoginResponse::Refused { reason } => {
            assert!(reason.starts_with("the login failed"), "{reason}")
        }
        other => panic!("a locked account logged in: {other:?}"),
    }
    srv.shutdown().await;
    let logins: Vec<bool> = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "login")
        .map(|e| e.outcome == scr_core::audit::Outcome::Permit)
        .collect();
    assert_eq!(
        logins.iter().filter(|ok| **ok).count(),
        1,
        "one successful login audited"
    );
    assert_eq!(logins.len(), 9, "every attempt audited: {logins:?}");

    // The relationship's NHS number is sealed on the server, never in clear.
    for entry in std::fs::read_dir(&server_dir).unwrap() {
        // (A SQLite -wal or -shm file may go as a connection closes.)
        let Ok(bytes) = std::fs::read(entry.unwrap().path()) else {
            continue;
        };
        let digits = patient.digits();
        assert!(!bytes.windows(10).any(|w| w == digits.as_bytes()));
    }
}

/// One login over the raw protocol from `keys`.
async fn try_login(srv: &RunningServer, keys: &StaticKeypair, login: &LoginRequest) -> bool {
    let response = scr_core::sync::login(ws(srv).await, keys, &srv.server_key, login)
        .await
        .unwrap();
    matches!(response, LoginResponse::Granted { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_lock_the_nurse_out_of_the_guessing_device_only_and_a_patients_phone_locks_nobody()
{
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    let store = common::server_store(&server_dir);
    let patient = test_nhs_number(32);

    // A patient's phone names the nurse's user id, again and again: it is
    // refused each time, and counted against nobody.
    let token = srv
        .directory
        .create_enrollment_token(
            "Y12345",
            DeviceClass::PatientPhone,
            scr_core::clock::now_ms() + 60_000,
        )
        .unwrap();
    scr_server::patients::bind_token(&store, &token, patient, "tulip-2468").unwrap();
    let phone = StaticKeypair::generate().unwrap();
    common::enroll(&srv, &phone, &token).await;
    for _ in 0..7 {
        assert!(!try_login(&srv, &phone, &request("wrong", "CARD-0001")).await);
        assert!(!try_login(&srv, &phone, &common::nurse_login()).await);
    }
    let tablet = common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, None).await;
    assert!(
        try_login(&srv, &tablet, &common::nurse_login()).await,
        "the nurse is not locked out by a patient's phone"
    );
    // The phone still logs in as its own patient.
    let own = LoginRequest {
        user_id: "patient".into(),
        card_serial: String::new(),
        passcode: "tulip-2468".into(),
    };
    assert!(try_login(&srv, &phone, &own).await);

    // A tablet that guesses locks her out of that tablet only.
    let guessing = common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, None).await;
    for _ in 0..scr_server::login::MAX_FAILED_LOGINS {
        assert!(!try_login(&srv, &guessing, &request("guess", "CARD-0001")).await);
    }
    assert!(
        !try_login(&srv, &guessing, &common::nurse_login()).await,
        "locked on the guessing tablet, even with the right passcode"
    );
    assert!(
        try_login(&srv, &tablet, &common::nurse_login()).await,
        "her own tablet still logs her in"
    );
    // A tablet of another organisation counts against nobody either.
    let elsewhere = common::raw_device(&srv, "RYA", DeviceClass::AmbulanceTablet, None).await;
    for _ in 0..7 {
        assert!(!try_login(&srv, &elsewhere, &request("guess", "CARD-0001")).await);
    }
    assert!(try_login(&srv, &tablet, &common::nurse_login()).await);
    // Each attempt is in the server's trail.
    let refused = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "login" && e.outcome != scr_core::audit::Outcome::Permit)
        .count();
    assert_eq!(refused, 14 + 6 + 7);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_holds_one_place_in_the_login_queue() {
    let dir = tempfile::tempdir().unwrap();
    let srv = common::server(dir.path()).await;
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    let flooding = Arc::new(common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, None).await);
    // Many logins at once from one device, each on its own connection,
    // all sent before any is answered.
    let mut sent = Vec::new();
    for _ in 0..12 {
        let mut ch = channel::connect(
            ws(&srv).await,
            &flooding,
            &srv.server_key,
            &Hello::new(Purpose::Login, None).encode(),
        )
        .await
        .unwrap();
        ch.send(&serde_json::to_vec(&request("guess", "CARD-0001")).unwrap())
            .await
            .unwrap();
        sent.push(ch);
    }
    let mut busy = 0;
    for mut ch in sent {
        let reply: LoginResponse =
            serde_json::from_slice(&ch.recv().await.unwrap().unwrap()).unwrap();
        if matches!(&reply, LoginResponse::Refused { reason } if reason.contains("in progress")) {
            busy += 1;
        }
    }
    assert!(busy >= 1, "a device's second login at once is turned away");
    let metrics = common::http_get(srv.health_addr, "/metrics").await;
    assert!(
        metrics.contains(&format!("scr_logins_refused_busy_total {busy}")),
        "{metrics}"
    );
    // What it was refused at once was never counted against the nurse.
    let tablet = common::raw_device(&srv, "RX1", DeviceClass::NurseTablet, None).await;
    assert!(try_login(&srv, &tablet, &common::nurse_login()).await);
    srv.shutdown().await;
}
