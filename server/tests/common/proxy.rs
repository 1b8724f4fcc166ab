//! A loopback TCP proxy that a test can cut (every open connection dropped
//! at once, as when a tablet loses signal) and point at another upstream
//! (a restarted server).
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    /// Bytes each new connection may carry from the device before it is
    /// cut (a connection lost mid-request); `None`: no limit.
    budget: Arc<Mutex<Option<usize>>>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let budget: Arc<Mutex<Option<usize>>> = Arc::default();
        let (to, held, limit) = (upstream.clone(), links.clone(), budget.clone());
        let accept = tokio::spawn(async move {
            while let Ok((device, _)) = listener.accept().await {
                let target = *to.lock().unwrap();
                let limit = *limit.lock().unwrap();
                let link = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        carry(device, server, limit).await;
                    }
                });
                held.lock().unwrap().push(link);
            }
        });
        Self {
            addr,
            upstream,
            budget,
            links,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    /// Drops every open connection (both sides see the socket close).
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// New connections are cut after carrying `bytes` from the device
    /// (`None`: never).
    pub fn cut_after(&self, bytes: Option<usize>) {
        *self.budget.lock().unwrap() = bytes;
    }

    /// New connections go to `upstream` from now on.
    pub fn point_at(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }
}

/// Copies both ways until either side closes or the device has sent
/// `limit` bytes; then both sockets drop.
async fn carry(device: TcpStream, server: TcpStream, limit: Option<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut dr, mut dw) = device.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut left = limit.unwrap_or(usize::MAX);
        let mut buf = vec![0u8; 16 * 1024];
        while left > 0 {
            let n = match dr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n.min(left),
            };
            left -= n;
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut sr, &mut dw);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
