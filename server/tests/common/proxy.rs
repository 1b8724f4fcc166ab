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
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (to, held) = (upstream.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut device, _)) = listener.accept().await {
                let target = *to.lock().unwrap();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut device, &mut server).await;
                    }
                });
                held.lock().unwrap().push(link);
            }
        });
        Self {
            addr,
            upstream,
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

    /// New connections go to `upstream` from now on.
    pub fn point_at(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
