//! How much peers that have proven nothing yet, and each device, may make
//! the server work: unauthenticated connections at once (everywhere, and
//! from one address), handshakes at once and a second from one address,
//! handshakes a second per proven device key. Many tablets can share one
//! address (a mobile operator's NAT, a hospital's proxy), so an address's
//! bounds are generous and its excess waits its turn rather than being
//! refused; what one address does never takes another's turn. Behind a
//! load balancer the client's address comes from the PROXY protocol
//! header of a trusted proxy's connection (`ppp`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::rate::{Buckets, Rate};

/// What [`Gatekeeper`] bounds; each is a `serve` option.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionLimits {
    /// Connections that have not completed a handshake, from everywhere.
    pub max_unauthenticated: usize,
    /// Of those, from one address (handshaking or waiting to).
    pub max_unauthenticated_per_address: usize,
    /// Handshakes one address runs at once; more wait their turn.
    pub handshakes_at_once_per_address: usize,
    /// Handshakes one address may start: a burst, then a steady rate.
    pub handshakes_per_address: Rate,
    /// Handshakes one proven device key may make.
    pub handshakes_per_device: Rate,
    /// Bytes of one sync message carrying changes (a push).
    pub max_push_bytes: usize,
    /// Peers (load balancers) whose connections begin with a PROXY
    /// protocol header naming the client.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ConnectionLimits {
    /// Enough for 2,000 tablets behind one address connecting within
    /// seconds of each other (the load bench, all on 127.0.0.1).
    fn default() -> Self {
        Self {
            max_unauthenticated: 16_384,
            max_unauthenticated_per_address: 4_096,
            handshakes_at_once_per_address: 256,
            handshakes_per_address: Rate::per_second(10_000.0, 1_000.0),
            handshakes_per_device: Rate::per_second(100.0, 10.0),
            max_push_bytes: 8 * 1024 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Why a connection was turned away before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnedAway {
    /// Too many unauthenticated connections, everywhere or from its address.
    Busy,
    /// Its address started too many handshakes lately.
    Rate,
}

#[derive(Debug, Default)]
struct Address {
    /// Unauthenticated connections from it now.
    open: usize,
    at_once: Option<Arc<Semaphore>>,
}

/// Admits connections by the bounds of [`ConnectionLimits`].
#[derive(Debug)]
pub struct Gatekeeper {
    limits: ConnectionLimits,
    everywhere: Arc<Semaphore>,
    addresses: Mutex<HashMap<IpAddr, Address>>,
    started: Buckets<IpAddr>,
    devices: Buckets<[u8; 32]>,
}

/// A connection's place until its handshake ends (dropped: given back).
pub struct Place {
    gate: Arc<Gatekeeper>,
    address: IpAddr,
    at_once: Arc<Semaphore>,
    _everywhere: OwnedSemaphorePermit,
}

impl Gatekeeper {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            everywhere: Arc::new(Semaphore::new(limits.max_unauthenticated)),
            started: Buckets::new(limits.handshakes_per_address),
            devices: Buckets::new(limits.handshakes_per_device),
            addresses: Mutex::default(),
            limits,
        }
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// A new connection from `address`: its place, or why not. An IPv6
    /// address counts as its /64 (one subscriber's prefix).
    pub fn arrive(self: &Arc<Self>, address: IpAddr, now_ms: i64) -> Result<Place, TurnedAway> {
        let address = subscriber(address);
        let everywhere = self
            .everywhere
            .clone()
            .try_acquire_owned()
            .map_err(|_| TurnedAway::Busy)?;
        let mut addresses = self.addresses.lock().map_err(|_| TurnedAway::Busy)?;
        let open = addresses.get(&address).map_or(0, |a| a.open);
        if open >= self.limits.max_unauthenticated_per_address {
            return Err(TurnedAway::Busy);
        }
        if !self.started.take(address, 1.0, now_ms) {
            return Err(TurnedAway::Rate);
        }
        let entry = addresses.entry(address).or_default();
        entry.open += 1;
        let at_once = entry
            .at_once
            .get_or_insert_with(|| {
                Arc::new(Semaphore::new(self.limits.handshakes_at_once_per_address))
            })
            .clone();
        Ok(Place {
            gate: self.clone(),
            address,
            at_once,
            _everywhere: everywhere,
        })
    }

    /// Whether the device that proved `key` may handshake again now.
    pub fn device_may_handshake(&self, key: &[u8; 32], now_ms: i64) -> bool {
        self.devices.take(*key, 1.0, now_ms)
    }

    fn leave(&self, address: IpAddr) {
        if let Ok(mut addresses) = self.addresses.lock()
            && let Some(a) = addresses.get_mut(&address)
        {
            a.open = a.open.saturating_sub(1);
            if a.open == 0 {
                addresses.remove(&address);
            }
        }
    }
}

/// How long a connection waits for its address's turn to handshake.
pub const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Place {
    /// Waits (at most [`TURN_WAIT`]) for one of its address's handshakes at
    /// once; `None` if the wait runs out or the server is stopping.
    pub async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(TURN_WAIT, self.at_once.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// The address limits count by: an IPv4 address, or an IPv6 /64.
fn subscriber(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.gate.leave(self.address);
    }
}

/// The client's address: the peer's, or, for a trusted proxy's connection,
/// the one its PROXY protocol header (v1 or v2) names, read off the stream
/// before anything else. `Err` when a trusted proxy's header is missing or
/// malformed.
pub async fn client_address(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trusted: &[IpAddr],
) -> Result<SocketAddr, String> {
    if !trusted.contains(&peer.ip()) {
        return Ok(peer);
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), proxy_header(tcp, peer))
        .await
        .map_err(|_| "no PROXY header from a trusted proxy".to_owned())?
}

/// Longest PROXY header read: v1's 107 bytes, v2's 16 and 216 of
/// addresses, with room for a few TLVs.
const MAX_HEADER: usize = 536;

async fn proxy_header(tcp: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = tcp.peek(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before its PROXY header".into());
        }
        let parsed = ppp::HeaderResult::parse(&buf[..n]);
        let (len, client) = match &parsed {
            ppp::HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            ppp::HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h.addresses)),
            _ if ppp::PartialResult::is_incomplete(&parsed) && n < MAX_HEADER => {
                // More of the header is on its way.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
            _ => return Err("a malformed PROXY header".into()),
        };
        let mut header = vec![0u8; len];
        tcp.read_exact(&mut header)
            .await
            .map_err(|e| e.to_string())?;
        // LOCAL (a proxy's own health check) or UNKNOWN: the proxy itself.
        return Ok(client.unwrap_or(peer));
    }
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(a: &ppp::v2::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_unauthenticated: 6,
            max_unauthenticated_per_address: 4,
            handshakes_at_once_per_address: 2,
            handshakes_per_address: Rate::per_second(100.0, 1.0),
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_place_and_its_excess_waits_its_turn() {
        let gate = Arc::new(Gatekeeper::new(limits()));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let places: Vec<Place> = (0..4).map(|_| gate.arrive(a, 0).unwrap()).collect();
        assert_eq!(gate.arrive(a, 0).err(), Some(TurnedAway::Busy));
        let other = gate.arrive(b, 0).expect("another address still gets in");
        // Two handshakes at once from `a`; a third waits.
        let first = places[0].turn().await.unwrap();
        let _second = places[1].turn().await.unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), places[2].turn());
        assert!(waiting.await.is_err(), "a third waits");
        drop(first);
        assert!(places[2].turn().await.is_some(), "its turn comes");
        assert!(other.turn().await.is_some(), "b's turn is its own");
        drop(places);
        assert!(gate.arrive(a, 0).is_ok(), "places are given back");
    }

    #[test]
    fn an_address_starting_too_many_handshakes_is_turned_away_for_a_while() {
        let gate = Arc::new(Gatekeeper::new(ConnectionLimits {
            handshakes_per_address: Rate::per_second(3.0, 1.0),
            ..limits()
        }));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            drop(gate.arrive(a, 0).unwrap());
        }
        assert_eq!(gate.arrive(a, 0).err(), Some(TurnedAway::Rate));
        assert!(gate.arrive(a, 1_000).is_ok(), "a second later");
        let key = [7u8; 32];
        let per_device = ConnectionLimits::default().handshakes_per_device;
        for _ in 0..per_device.burst as usize {
            assert!(gate.device_may_handshake(&key, 0));
        }
        assert!(!gate.device_may_handshake(&key, 0));
        assert!(gate.device_may_handshake(&[8u8; 32], 0));
    }

    #[test]
    fn an_ipv6_prefix_counts_as_one_address() {
        let gate = Arc::new(Gatekeeper::new(limits()));
        let one = |n: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, n]);
        let places: Vec<Place> = (1..=4).map(|n| gate.arrive(one(n), 0).unwrap()).collect();
        assert_eq!(gate.arrive(one(5), 0).err(), Some(TurnedAway::Busy));
        let other: IpAddr = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert!(gate.arrive(other, 0).is_ok());
        drop(places);
    }
}
