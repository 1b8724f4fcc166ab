//! How much peers that prove nothing, each address and each device may
//! make the server work, over real sockets (each bound shrunk so a test
//! reaches it quickly; each fails without its defence):
//! - a flood of connections from one address that never handshake does
//!   not stop a nurse's tablet from another address enrolling, logging in
//!   and syncing;
//! - behind a trusted load balancer the bounds apply to the address its
//!   PROXY header names, and its connection without one is refused;
//! - a device key handshaking too often is refused for a while, others not;
//! - a push of more bytes than a push may carry is dropped and counted.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use scr_core::channel::{self, Hello, Purpose, StaticKeypair};
use scr_core::record::{Compartment, SharingChoice};
use scr_server::rate::Rate;
use scr_server::serve::limits::ConnectionLimits;
use scr_server::serve::{RunningServer, ServeConfig, start};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

mod common;

use common::device::Device;
use common::pusher::Pusher;
use common::site::on_caseload;

async fn server_with(dir: &std::path::Path, limits: ConnectionLimits) -> RunningServer {
    start(ServeConfig {
        limits,
        ..ServeConfig::on_loopback(dir)
    })
    .await
    .unwrap()
}

/// A TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metric(srv: &RunningServer, name: &str) -> u64 {
    counter(&common::http_get(srv.health_addr, "/metrics").await, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_does_not_stop_a_nurses_tablet_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with(
        &dir.path().join("server"),
        ConnectionLimits {
            max_unauthenticated: 48,
            max_unauthenticated_per_address: 16,
            ..ConnectionLimits::default()
        },
    )
    .await;
    let store = common::server_store(&dir.path().join("server"));
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    let patient = on_caseload(&srv, &store, 91, SharingChoice::CoreAndAdditional);

    // 64 connections from 127.0.0.2 that never say a word: more than the
    // server takes unauthenticated from everywhere.
    let mut flood = Vec::new();
    for _ in 0..64 {
        flood.push(tcp_from("127.0.0.2", srv.sync_addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        metric(&srv, "scr_connections_turned_away_total").await,
        48,
        "all but the address's 16 turned away"
    );

    // Meanwhile, from 127.0.0.1: the nurse's tablet enrolls, logs in and
    // syncs her patient.
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    assert!(nurse.engine.holds(&patient).unwrap(), "her patient arrived");
    drop(flood);
    nurse.offline().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_bounds_apply_to_the_address_its_header_names() {
    let dir = tempfile::tempdir().unwrap();
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let srv = server_with(
        dir.path(),
        ConnectionLimits {
            max_unauthenticated_per_address: 2,
            trusted_proxies: vec![proxy],
            ..ConnectionLimits::default()
        },
    )
    .await;
    let via_proxy = async |client: &str| {
        let mut tcp = TcpStream::connect(srv.sync_addr).await.unwrap();
        let header = format!(
            "PROXY TCP4 {client} 127.0.0.1 40000 {}\r\n",
            srv.sync_addr.port()
        );
        tcp.write_all(header.as_bytes()).await.unwrap();
        tcp
    };
    // Two idle clients behind the proxy at 127.0.0.7: the third is turned
    // away; a client at 127.0.0.8 is not, and completes a handshake.
    let _idle = [via_proxy("127.0.0.7").await, via_proxy("127.0.0.7").await];
    let _third = via_proxy("127.0.0.7").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&srv, "scr_connections_turned_away_total").await, 1);
    let other = via_proxy("127.0.0.8").await;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{}/sync", srv.sync_addr), other)
        .await
        .unwrap();
    let keys = StaticKeypair::generate().unwrap();
    let token = common::token_for(&srv, "RX1", scr_core::retention::DeviceClass::NurseTablet);
    let hello = Hello::new(Purpose::Sync, Some(&token)).encode();
    assert!(
        channel::connect(ws, &keys, &srv.server_key, &hello)
            .await
            .is_ok(),
        "enrolled through the proxy"
    );
    // The proxy's connection without a header is refused.
    let before = metric(&srv, "scr_handshakes_refused_total").await;
    let mut bare = TcpStream::connect(srv.sync_addr).await.unwrap();
    bare.write_all(b"GET /sync HTTP/1.1\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&srv, "scr_handshakes_refused_total").await,
        before + 1
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_handshaking_too_often_is_refused_for_a_while_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with(
        dir.path(),
        ConnectionLimits {
            handshakes_per_device: Rate::per_second(5.0, 0.5),
            ..ConnectionLimits::default()
        },
    )
    .await;
    let enrolled = async || {
        common::raw_device(
            &srv,
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            None,
        )
        .await
    };
    let connect = async |keys: &StaticKeypair| {
        let hello = Hello::new(Purpose::Holdings, None).encode();
        channel::connect(
            common::ws(srv.sync_addr).await,
            keys,
            &srv.server_key,
            &hello,
        )
        .await
    };
    let busy = enrolled().await;
    let mut refused = 0;
    for _ in 0..10 {
        if let Err(e) = connect(&busy).await {
            assert!(matches!(e, channel::ChannelError::NotAdmitted), "{e:?}");
            refused += 1;
        }
    }
    // Its enrollment and four more were let through: the rest refused.
    assert!(refused >= 5, "{refused}");
    assert_eq!(
        metric(&srv, "scr_device_handshakes_rate_limited_total").await,
        refused
    );
    let quiet = enrolled().await;
    assert!(connect(&quiet).await.is_ok(), "another device connects");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_larger_than_a_push_may_be_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::with_config(dir.path(), 92, Vec::new(), |c| {
        c.limits.max_push_bytes = 4 * 1024;
    })
    .await;
    let c = Compartment::CareEvents;
    let device = p.keys.public();
    // Eight kilobytes a deflate cannot shrink: under what a version may
    // hold, over what this server takes in one push.
    let mut seed = 0x9e37_79b9_u32;
    let long: String = (0..8 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            char::from(b'a' + (seed % 26) as u8)
        })
        .collect();
    let big = common::nurse_note(&device, &long);
    p.push(c, |doc, _| common::put_version(doc, &big)).await;
    let small = common::nurse_note(&device, "dressing changed");
    p.push(c, |doc, _| common::put_version(doc, &small)).await;
    assert!(
        p.until(c, |d| common::notes_of(d)
            .contains(&"dressing changed".to_owned()))
            .await,
        "the small push merges"
    );
    assert!(!common::notes_of(&p.server_doc(c).await).contains(&long));
    assert_eq!(metric(&p.srv, "scr_pushes_oversized_total").await, 1);
}
