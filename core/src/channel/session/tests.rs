//! The session's tests: windows, frames, and sessions across cut connections.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc as fmpsc;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::frame::{ACK, DATA, frame, parse};
use super::state::{Detached, Incoming, Session};
use super::window::{Arrival, MAX_UNACKED_BYTES, Window};
use crate::channel::{ChannelError, NoiseChannel, StaticKeypair, accept, connect};

#[test]
fn a_window_replays_only_what_was_not_acknowledged() {
    let mut w = Window::default();
    for i in 0..5u8 {
        w.push(vec![i; 10]).unwrap();
    }
    w.acked(3).unwrap();
    let left: Vec<u64> = w.unacked.iter().map(|(s, _)| *s).collect();
    assert_eq!(left, vec![4, 5]);
    assert_eq!(w.unacked_bytes, 20);
    assert!(w.acked(9).is_err(), "an ack beyond what was sent");
}

#[test]
fn arrivals_are_taken_once_and_in_order() {
    let mut w = Window::default();
    assert_eq!(w.arrived(1), Arrival::Next);
    assert_eq!(w.arrived(1), Arrival::Duplicate);
    assert_eq!(w.arrived(3), Arrival::Gap);
    assert_eq!(w.arrived(2), Arrival::Next);
    assert_eq!(w.received, 2);
}

#[test]
fn a_window_is_bounded() {
    let mut w = Window::default();
    w.push(vec![0; MAX_UNACKED_BYTES]).unwrap();
    assert!(matches!(
        w.push(vec![0; 1]),
        Err(ChannelError::Oversized { .. })
    ));
    w.acked(1).unwrap();
    assert!(w.push(vec![0; 1]).is_ok());
}

/// A Noise channel pair over an in-memory connection, and the task
/// carrying its bytes: aborting it cuts the connection for both sides.
async fn linked(
    device: &StaticKeypair,
    server: &StaticKeypair,
) -> (
    NoiseChannel<WebSocketStream<tokio::io::DuplexStream>>,
    NoiseChannel<WebSocketStream<tokio::io::DuplexStream>>,
    tokio::task::JoinHandle<()>,
) {
    let (a, mut a_far) = tokio::io::duplex(1 << 16);
    let (mut b_far, b) = tokio::io::duplex(1 << 16);
    let wire = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut a_far, &mut b_far).await;
    });
    let (wa, wb) = futures::join!(
        WebSocketStream::from_raw_socket(a, Role::Client, None),
        WebSocketStream::from_raw_socket(b, Role::Server, None)
    );
    let pinned = server.public();
    let (ca, cb) = futures::join!(
        connect(wa, device, &pinned, b""),
        accept(wb, server, |_, _| true)
    );
    (ca.unwrap(), cb.unwrap(), wire)
}

fn no_guard() -> (Arc<Session>, Incoming, fmpsc::Sender<Vec<u8>>) {
    Session::open_parts(Arc::default(), Box::new(()), Box::new(|_| true))
}

/// Sends `n` numbered messages of varied sizes, some bigger than one
/// Noise frame. Returns the sender: dropping it is samod closing the
/// session.
async fn send_numbered(mut out: fmpsc::Sender<Vec<u8>>, n: u32) -> fmpsc::Sender<Vec<u8>> {
    for i in 1..=n {
        let mut m = i.to_be_bytes().to_vec();
        m.resize(4 + (i as usize * 7919) % 90_000, (i % 251) as u8);
        out.send(m).await.unwrap();
        if i % 17 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    out
}

/// The numbers of the first `n` messages (and samod's end, still open).
async fn numbers(mut incoming: Incoming, n: u32) -> (Vec<u32>, Incoming) {
    let mut got = Vec::new();
    while got.len() < n as usize {
        let Some(Ok(m)) = incoming.next().await else {
            break;
        };
        got.push(u32::from_be_bytes(m[..4].try_into().unwrap()));
    }
    (got, incoming)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_cut_connections_exactly_once_and_in_order() {
    const N: u32 = 400;
    let (device, server) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    let (a, a_in, a_out) = no_guard();
    let (b, b_in, b_out) = no_guard();
    let _a_out = tokio::spawn(send_numbered(a_out, N));
    let _b_out = tokio::spawn(send_numbered(b_out, N));
    let at_b = tokio::spawn(numbers(b_in, N));
    let at_a = tokio::spawn(numbers(a_in, N));

    // Eight connections, each cut after a while mid-traffic; then one
    // that stays. Each resume tells the other side what arrived.
    let mut cut_mid_traffic = 0;
    for round in 0..9u64 {
        let (ca, cb, wire) = linked(&device, &server).await;
        let (from_b, from_a) = (b.received(), a.received());
        let (a2, b2) = (a.clone(), b.clone());
        let ta = tokio::spawn(async move { a2.attach(ca, from_b).await });
        let tb = tokio::spawn(async move { b2.attach(cb, from_a).await });
        if round == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5 + round * 7)).await;
        wire.abort();
        assert!(matches!(ta.await.unwrap(), Detached::Lost { .. }));
        assert!(matches!(tb.await.unwrap(), Detached::Lost { .. }));
        if a.received() < u64::from(N) || b.received() < u64::from(N) {
            cut_mid_traffic += 1;
        }
    }
    assert!(
        cut_mid_traffic >= 3,
        "only {cut_mid_traffic} cuts fell mid-traffic"
    );
    let all: Vec<u32> = (1..=N).collect();
    let wait = Duration::from_secs(30);
    assert_eq!(
        tokio::time::timeout(wait, at_b).await.unwrap().unwrap().0,
        all
    );
    assert_eq!(
        tokio::time::timeout(wait, at_a).await.unwrap().unwrap().0,
        all
    );
    assert_eq!((a.received(), b.received()), (u64::from(N), u64::from(N)));
}

/// samod's connection driver (samod 0.16 `drive_connection`): it reads
/// what arrives only between its own sends, and awaits each send in
/// place. Sends `n` numbered messages; returns the numbers received
/// (and its sending end, still open: dropping it ends the session).
async fn samod_like(
    mut incoming: Incoming,
    mut out: fmpsc::Sender<Vec<u8>>,
    n: u32,
) -> (Vec<u32>, fmpsc::Sender<Vec<u8>>) {
    let (mut got, mut next) = (Vec::new(), 1u32);
    while got.len() < n as usize || next <= n {
        tokio::select! {
            m = incoming.next(), if got.len() < n as usize => {
                let Some(Ok(m)) = m else { break };
                got.push(u32::from_be_bytes(m[..4].try_into().unwrap()));
            }
            () = std::future::ready(()), if next <= n => {
                let mut m = next.to_be_bytes().to_vec();
                m.resize(30_000, (next % 251) as u8);
                if out.send(m).await.is_err() {
                    break;
                }
                next += 1;
            }
        }
    }
    (got, out)
}

/// Heavy traffic both ways between two samod-like drivers: each stops
/// reading while its send waits, so a session that waited on samod to
/// deliver (while samod waited on it to take) stalled for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_traffic_both_ways_does_not_deadlock_with_samods_driver() {
    const N: u32 = 400;
    let (device, server) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    let (a, a_in, a_out) = no_guard();
    let (b, b_in, b_out) = no_guard();
    let (ca, cb, _wire) = linked(&device, &server).await;
    let (a2, b2) = (a.clone(), b.clone());
    let _ta = tokio::spawn(async move { a2.attach(ca, 0).await });
    let _tb = tokio::spawn(async move { b2.attach(cb, 0).await });
    let both = futures::future::join(samod_like(a_in, a_out, N), samod_like(b_in, b_out, N));
    let ((at_a, _), (at_b, _)) = tokio::time::timeout(Duration::from_secs(30), both)
        .await
        .expect("the session deadlocked with samod's driver");
    let all: Vec<u32> = (1..=N).collect();
    assert_eq!((at_a, at_b), (all.clone(), all));
}

#[tokio::test]
async fn an_acknowledgement_of_something_never_sent_ends_the_session() {
    let (device, server) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    let (a, _a_in, _a_out) = no_guard();
    let (ca, mut cb, _wire) = linked(&device, &server).await;
    let a2 = a.clone();
    let attached = tokio::spawn(async move { a2.attach(ca, 0).await });
    cb.send(&frame(ACK, 0, 5, &[])).await.unwrap();
    assert!(matches!(attached.await.unwrap(), Detached::Ended));
    assert!(a.is_ended());
}

#[test]
fn frames_round_trip_and_garbage_is_refused() {
    let f = frame(DATA, 7, 3, b"hi");
    assert_eq!(parse(&f).unwrap(), (DATA, 7, 3, &b"hi"[..]));
    assert!(parse(&f[..5]).is_err());
    let mut bad = f.clone();
    bad[0] = 9;
    assert!(parse(&bad).is_err());
}

/// An answerer that takes `delay`, answering with the question reversed.
fn slow_reverser(delay: Duration) -> super::Answerer {
    Arc::new(move |q: Vec<u8>| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            q.into_iter().rev().collect()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_are_answered_beside_samods_stream_and_survive_a_cut_before_sending() {
    let (device, server) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    let (a, _a_in, a_out) = no_guard();
    let (b, b_in, _b_out) = no_guard();
    b.answer_with(slow_reverser(Duration::ZERO));
    // An ask made while no connection carries the session waits for one.
    let a2 = a.clone();
    let early = tokio::spawn(async move { a2.ask(b"abc".to_vec()).await });
    let (ca, cb, _wire) = linked(&device, &server).await;
    let (a3, b3) = (a.clone(), b.clone());
    let _ta = tokio::spawn(async move { a3.attach(ca, 0).await });
    let _tb = tokio::spawn(async move { b3.attach(cb, 0).await });
    let wait = Duration::from_secs(10);
    assert_eq!(
        tokio::time::timeout(wait, early).await.unwrap().unwrap(),
        Ok(b"cba".to_vec())
    );
    // samod's stream goes on, numbered as before: asks take no place in it.
    let _sent = tokio::spawn(send_numbered(a_out, 5));
    let (got, _b_in) = tokio::time::timeout(wait, numbers(b_in, 5)).await.unwrap();
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        tokio::time::timeout(wait, a.ask(b"xy".to_vec()))
            .await
            .unwrap(),
        Ok(b"yx".to_vec())
    );
    assert!(!a.is_ended() && !b.is_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ask_before_the_first_is_answered_ends_the_session() {
    let (device, server) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    let (b, _b_in, _b_out) = no_guard();
    b.answer_with(slow_reverser(Duration::from_secs(2)));
    let (mut ca, cb, _wire) = linked(&device, &server).await;
    let b2 = b.clone();
    let attached = tokio::spawn(async move { b2.attach(cb, 0).await });
    ca.send(&frame(super::frame::ASK, 1, 0, b"one"))
        .await
        .unwrap();
    ca.send(&frame(super::frame::ASK, 2, 0, b"two"))
        .await
        .unwrap();
    let detached = tokio::time::timeout(Duration::from_secs(10), attached)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(detached, Detached::Ended));
    assert!(b.is_ended());
}

#[tokio::test]
async fn an_ask_to_a_side_that_answers_none_ends_the_session() {
    let (device, server) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    // A device's session: it never answers asks (a server does not ask).
    let (a, _a_in, _a_out) = no_guard();
    let (ca, mut cb, _wire) = linked(&device, &server).await;
    let a2 = a.clone();
    let attached = tokio::spawn(async move { a2.attach(ca, 0).await });
    cb.send(&frame(super::frame::ASK, 1, 0, b"?"))
        .await
        .unwrap();
    assert!(matches!(attached.await.unwrap(), Detached::Ended));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_given_up_before_it_went_out_is_never_sent() {
    let (device, server) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    let (a, _a_in, _a_out) = no_guard();
    let (b, _b_in, _b_out) = no_guard();
    b.answer_with(slow_reverser(Duration::from_millis(300)));
    // Asked while no connection carries the session, and given up.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), a.ask(b"stale".to_vec())).await;
    assert!(gave_up.is_err());
    let (ca, cb, _wire) = linked(&device, &server).await;
    let (a2, b2) = (a.clone(), b.clone());
    let _ta = tokio::spawn(async move { a2.attach(ca, 0).await });
    let _tb = tokio::spawn(async move { b2.attach(cb, 0).await });
    // Sent, the stale ask would be answered first, and this one would
    // arrive while it is: the session would end.
    let answer = tokio::time::timeout(Duration::from_secs(10), a.ask(b"fresh".to_vec()))
        .await
        .unwrap();
    assert_eq!(answer, Ok(b"hserf".to_vec()));
    assert!(!a.is_ended() && !b.is_ended());
}
