//! A loopback TCP proxy that injects faults between devices and the server,
//! driven by a seed: each connection's fault is a pure function of the seed
//! and the connection's number, so a failing seed replays the same schedule
//! (thread timing, and so where byte boundaries fall, is the machine's).
//!
//! Faults: delayed chunks, a connection cut after some bytes, a truncated
//! chunk then a cut, a duplicated chunk, two chunks swapped, a stall (bytes
//! held for seconds, then a cut), and partitions (every connection cut and
//! new ones refused until healed). Duplicates and swaps break the Noise
//! channel's nonces or the WebSocket framing on purpose: both ends must
//! refuse the connection and the session must resume on a new one.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// SplitMix64: small, seedable, and the same on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What one direction of one connection suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Carried untouched.
    Clean,
    /// Each chunk waits up to this long.
    Delay(u64),
    /// Cut after this many bytes.
    Cut(usize),
    /// After this many bytes, half of the next chunk is sent, then a cut.
    Truncate(usize),
    /// The chunk that crosses this many bytes is sent twice.
    Duplicate(usize),
    /// The chunk that crosses this many bytes is held and sent after the
    /// next one.
    Swap(usize),
    /// After this many bytes nothing moves for the given milliseconds;
    /// then a cut.
    Stall(usize, u64),
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Clean => "clean",
            Fault::Delay(_) => "delay",
            Fault::Cut(_) => "cut",
            Fault::Truncate(_) => "truncate",
            Fault::Duplicate(_) => "duplicate",
            Fault::Swap(_) => "swap",
            Fault::Stall(..) => "stall",
        }
    }

    /// The fault for one direction, from the connection's own generator.
    fn draw(rng: &mut Rng) -> Fault {
        // Most connections carry a few kilobytes: faults land early.
        let at = rng.below(4_000) as usize;
        match rng.below(100) {
            0..45 => Fault::Clean,
            45..60 => Fault::Delay(1 + rng.below(40)),
            60..72 => Fault::Cut(at),
            72..80 => Fault::Truncate(at),
            80..88 => Fault::Duplicate(at),
            88..96 => Fault::Swap(at),
            _ => Fault::Stall(at, 500 + rng.below(2_500)),
        }
    }
}

#[derive(Default)]
struct Shared {
    upstream: Mutex<Option<SocketAddr>>,
    faulty: AtomicBool,
    partitioned: AtomicBool,
    connections: AtomicU64,
    links: Mutex<Vec<JoinHandle<()>>>,
    /// Faults that took effect, by name.
    injected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    fn count(&self, what: &'static str) {
        *self.injected.lock().unwrap().entry(what).or_default() += 1;
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub seed: u64,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts with faults on.
    pub async fn start(upstream: SocketAddr, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        *shared.upstream.lock().unwrap() = Some(upstream);
        shared.faulty.store(true, Ordering::SeqCst);
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((device, _)) = listener.accept().await {
                let n = s.connections.fetch_add(1, Ordering::SeqCst);
                if s.partitioned.load(Ordering::SeqCst) {
                    s.count("refused in partition");
                    continue; // dropped: the device sees the socket close
                }
                // One generator per connection: the schedule does not
                // depend on how connections interleave.
                let mut rng = Rng::new(seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
                let (up, down) = if s.faulty.load(Ordering::SeqCst) {
                    (Fault::draw(&mut rng), Fault::draw(&mut rng))
                } else {
                    (Fault::Clean, Fault::Clean)
                };
                let target = s.upstream.lock().unwrap().unwrap();
                let link_shared = s.clone();
                let link = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        carry(device, server, (up, down), rng, link_shared).await;
                    }
                });
                s.links.lock().unwrap().push(link);
            }
        });
        Self {
            addr,
            seed,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    /// New connections are carried untouched (`false`) or suffer drawn
    /// faults (`true`).
    pub fn set_faulty(&self, on: bool) {
        self.shared.faulty.store(on, Ordering::SeqCst);
    }

    /// Cuts every connection and refuses new ones until [`Self::heal`].
    pub fn partition(&self) {
        self.shared.partitioned.store(true, Ordering::SeqCst);
        self.shared.count("partition");
        self.cut_all();
    }

    pub fn heal(&self) {
        self.shared.partitioned.store(false, Ordering::SeqCst);
    }

    pub fn cut_all(&self) {
        for link in self.shared.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The faults that took effect, by name.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.shared.injected.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Carries both ways, each direction with its fault, until either side
/// closes or a fault cuts; then both sockets drop.
async fn carry(
    device: TcpStream,
    server: TcpStream,
    (up, down): (Fault, Fault),
    mut rng: Rng,
    shared: Arc<Shared>,
) {
    let (dr, dw) = device.into_split();
    let (sr, sw) = server.into_split();
    let down_rng = Rng::new(rng.next());
    tokio::select! {
        _ = pump(dr, sw, up, rng, shared.clone()) => {}
        _ = pump(sr, dw, down, down_rng, shared) => {}
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    fault: Fault,
    mut rng: Rng,
    shared: Arc<Shared>,
) {
    let mut carried = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    let mut done = false; // a one-shot fault has fired
    if let Fault::Delay(_) = fault {
        shared.count(fault.name());
    }
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let crosses = |at: usize| !done && carried + n > at;
        match fault {
            Fault::Clean => {}
            Fault::Delay(ms) => {
                tokio::time::sleep(Duration::from_millis(rng.below(ms + 1))).await;
            }
            Fault::Cut(at) if crosses(at) => {
                let keep = at.saturating_sub(carried);
                let _ = to.write_all(&chunk[..keep]).await;
                shared.count(fault.name());
                return;
            }
            Fault::Truncate(at) if crosses(at) => {
                let _ = to.write_all(&chunk[..n.div_ceil(2)]).await;
                shared.count(fault.name());
                return;
            }
            Fault::Duplicate(at) if crosses(at) => {
                done = true;
                shared.count(fault.name());
                if to.write_all(chunk).await.is_err() {
                    return;
                }
            }
            Fault::Swap(at) if crosses(at) => {
                done = true;
                let held = chunk.to_vec();
                // The next chunk goes first, if one comes soon; otherwise
                // the held one goes alone (a request waiting on its reply
                // would never send another).
                let mut next = vec![0u8; 16 * 1024];
                match tokio::time::timeout(Duration::from_millis(200), from.read(&mut next)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(m)) => {
                        shared.count(fault.name());
                        if to.write_all(&next[..m]).await.is_err() {
                            return;
                        }
                        carried += m;
                    }
                    Err(_) => {}
                }
                if to.write_all(&held).await.is_err() {
                    return;
                }
                carried += n;
                continue;
            }
            Fault::Stall(at, ms) if crosses(at) => {
                shared.count(fault.name());
                tokio::time::sleep(Duration::from_millis(ms)).await;
                return;
            }
            _ => {}
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
        carried += n;
    }
}
