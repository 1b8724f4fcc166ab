//! One simulated tablet of the load bench, over the real protocol:
//! enrolls with a one-time token, logs in (Argon2id on the server), opens
//! a Noise sync session and syncs its nurse's caseload (Automerge sync, by
//! hand, over samod's wire messages), then pushes visit changes, timed
//! until merged, while answering what the server sends it (the changes
//! its nurse's other tablet pushed, timed from their push).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT, ReadDoc};
use scr_core::channel::{self, Hello, Purpose, StaticKeypair, hex_key};
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::record::{EntryContent, EntryId, EntryVersion, Provenance, VersionStatus};
use tokio::sync::Barrier;

use super::site::{Site, nurse_id};

/// One samod wire message.
fn wire(kind: &str, doc: &str, me: &str, server: &str, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    let ok = e.map(5).is_ok()
        && e.str("type").and_then(|e| e.str(kind)).is_ok()
        && e.str("documentId").and_then(|e| e.str(doc)).is_ok()
        && e.str("senderId").and_then(|e| e.str(me)).is_ok()
        && e.str("targetId").and_then(|e| e.str(server)).is_ok()
        && e.str("data").and_then(|e| e.bytes(data)).is_ok();
    assert!(ok);
    buf
}

/// A received samod message: its type, document and data.
fn unwire(bytes: &[u8]) -> (String, String, Vec<u8>) {
    let mut d = minicbor::Decoder::new(bytes);
    let (mut kind, mut doc, mut data) = (String::new(), String::new(), Vec::new());
    let n = d.map().ok().flatten().unwrap_or(0);
    for _ in 0..n {
        match d.str() {
            Ok("type") => kind = d.str().unwrap_or_default().to_owned(),
            Ok("documentId") => doc = d.str().unwrap_or_default().to_owned(),
            Ok("data") => data = d.bytes().unwrap_or_default().to_vec(),
            Ok(_) => {
                if d.skip().is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (kind, doc, data)
}

#[derive(Default)]
pub struct Timings {
    pub connect: Vec<Duration>,
    pub login: Vec<Duration>,
    pub cold_sync: Vec<Duration>,
    /// Each push until merged, and the node that merged it.
    pub push: Vec<(usize, Duration)>,
    /// Each push until another tablet of the nurse received it, and
    /// whether that tablet is on another node.
    pub propagation: Vec<(bool, Duration)>,
    /// Each push's change: when it was sent, from which node and tablet.
    pub sent: HashMap<ChangeHash, (Instant, usize, usize)>,
}

pub struct Tablet {
    session: channel::PlainSession<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    me: String,
    /// The nurse logged in on it (the author of what it writes).
    user: String,
    server: String,
    /// The care-events document it pushes visits to.
    care: String,
    docs: HashMap<String, (Automerge, State)>,
    /// Which tablet, on which node.
    index: usize,
    node: usize,
    timings: Arc<std::sync::Mutex<Timings>>,
}

impl Tablet {
    async fn send(&mut self, kind: &str, doc: &str) -> Result<(), String> {
        let (d, s) = self.docs.get_mut(doc).ok_or("unknown document")?;
        if let Some(m) = d.generate_sync_message(s) {
            let bytes = wire(kind, doc, &self.me, &self.server, &m.encode());
            self.session.send(&bytes).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Receives one message and answers it; the document it was about.
    async fn receive(&mut self) -> Result<String, String> {
        // A heartbeat every ten seconds while waiting, as a real tablet's
        // session sends (the server counts 30 s of silence as a lost link).
        let mut waited = 0;
        let bytes = loop {
            match tokio::time::timeout(Duration::from_secs(10), self.session.recv()).await {
                Ok(received) => {
                    break received
                        .map_err(|e| e.to_string())?
                        .ok_or("the server closed the session")?;
                }
                Err(_) if waited < 12 => {
                    waited += 1;
                    self.session.heartbeat().await.map_err(|e| e.to_string())?;
                }
                Err(_) => return Err("no message for 120 s".into()),
            }
        };
        let (kind, doc, data) = unwire(&bytes);
        match kind.as_str() {
            "sync" if self.docs.contains_key(&doc) => {
                let (d, s) = self.docs.get_mut(&doc).ok_or("unknown document")?;
                let m = Message::decode(&data).map_err(|e| e.to_string())?;
                let before = d.get_heads();
                d.receive_sync_message(s, m).map_err(|e| e.to_string())?;
                let arrived = Instant::now();
                if d.get_heads() != before {
                    let new: Vec<ChangeHash> =
                        d.get_changes(&before).iter().map(|c| c.hash()).collect();
                    let mut t = self.timings.lock().map_err(|_| "poisoned")?;
                    for hash in new {
                        if let Some(&(at, node, from)) = t.sent.get(&hash)
                            && from != self.index
                        {
                            t.propagation.push((node != self.node, arrived - at));
                        }
                    }
                }
                self.send("sync", &doc).await?;
                Ok(doc)
            }
            "doc-unavailable" => Err("a caseload document was unavailable".into()),
            "error" => Err("the server sent an error".into()),
            _ => Ok(doc), // announcements of other documents: not ours
        }
    }

    /// Holds the session open, as an idle tablet does (answering what the
    /// server sends: other tablets' changes; a heartbeat every ten seconds
    /// of silence), until `until` resolves.
    async fn idle_until(&mut self, until: impl std::future::Future<Output = impl Sized>) {
        let listen = async {
            while self.receive().await.is_ok() {}
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = until => {}
            () = listen => {}
        }
    }

    fn in_step(&self, doc: &str, want: Option<ChangeHash>) -> bool {
        self.docs.get(doc).is_some_and(|(d, s)| {
            let theirs = s.their_heads.clone().unwrap_or_default();
            !theirs.is_empty()
                && match want {
                    Some(h) => theirs.contains(&h),
                    None => d.get_heads().iter().all(|h| theirs.contains(h)),
                }
        })
    }
}

async fn ws(
    addr: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    // As the app connects (`channel::open_websocket`: Nagle off).
    scr_core::channel::open_websocket(&format!("ws://{addr}/sync"))
        .await
        .map_err(|e| e.to_string())
}

/// A tablet's first minutes: enroll, log in, sync its caseload cold.
async fn connect(
    site: &Site,
    (index, node): (usize, usize),
    timings: &Arc<std::sync::Mutex<Timings>>,
) -> Result<Tablet, String> {
    let (token, nurse) = site.tablets[index].clone();
    let addr = &site.sync_addrs[node];
    let keys = StaticKeypair::generate().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let hello = Hello::new(Purpose::Sync, Some(&token)).encode();
    drop(
        channel::connect(ws(addr).await?, &keys, &site.server_key, &hello)
            .await
            .map_err(|e| format!("enroll: {e}"))?,
    );
    let enrolled = t.elapsed();
    let t = Instant::now();
    let login = LoginRequest {
        user_id: nurse_id(nurse),
        card_serial: format!("CARD-{nurse}"),
        passcode: "jo-2468".into(),
    };
    match scr_core::sync::login(ws(addr).await?, &keys, &site.server_key, &login).await {
        Ok(LoginResponse::Granted { .. }) => {}
        Ok(other) => return Err(format!("login refused: {other:?}")),
        Err(e) => return Err(format!("login: {e}")),
    }
    let login_time = t.elapsed();

    let t = Instant::now();
    let hello = Hello::new(Purpose::Sync, None).encode();
    let ch = channel::connect(ws(addr).await?, &keys, &site.server_key, &hello)
        .await
        .map_err(|e| format!("sync session: {e}"))?;
    let mut session = channel::PlainSession::open(ch)
        .await
        .map_err(|e| e.to_string())?;
    let me = hex_key(&keys.public());
    let join = {
        let mut buf = Vec::new();
        let mut e = minicbor::Encoder::new(&mut buf);
        let ok = e.map(3).is_ok()
            && e.str("type").and_then(|e| e.str("join")).is_ok()
            && e.str("senderId").and_then(|e| e.str(&me)).is_ok()
            && e.str("supportedProtocolVersions").is_ok()
            && e.array(1).and_then(|e| e.str("1")).is_ok();
        assert!(ok);
        buf
    };
    session.send(&join).await.map_err(|e| e.to_string())?;
    session.recv().await.map_err(|e| e.to_string())?;
    let docs: Vec<String> = site.docs[nurse].clone();
    let mut tab = Tablet {
        session,
        care: docs[0].clone(),
        me,
        user: nurse_id(nurse),
        server: hex_key(&site.server_key),
        docs: docs
            .iter()
            .map(|d| (d.clone(), (Automerge::new(), State::new())))
            .collect(),
        index,
        node,
        timings: timings.clone(),
    };
    for d in &docs {
        tab.send("request", d).await?;
    }
    while !docs.iter().all(|d| tab.in_step(d, None)) {
        tab.receive().await?;
    }
    let cold = t.elapsed();
    {
        let mut t = timings.lock().map_err(|_| "poisoned")?;
        t.connect.push(enrolled);
        t.login.push(login_time);
        t.cold_sync.push(cold);
    }

    Ok(tab)
}

/// `pushes` visit changes to the first care-events document, each timed
/// until the server's reply shows it merged.
async fn push(
    mut tab: Tablet,
    index: usize,
    pushes: usize,
    timings: &std::sync::Mutex<Timings>,
) -> Result<Tablet, String> {
    let node = tab.node;
    let care = tab.care.clone();
    for n in 0..pushes {
        tokio::time::sleep(Duration::from_millis(
            (index as u64 * 37 + n as u64 * 101) % 1000,
        ))
        .await;
        // A visit note as the nurse's app writes it: a new version under
        // the document's versions, authored as her grant says (anything
        // else the server's push check refuses, and it never merges).
        let version = EntryVersion::new(
            EntryId::new(),
            Vec::new(),
            VersionStatus::Current,
            EntryContent::EncounterSummary {
                setting: "home visit".into(),
                occurred_at: "2026-12-06".into(),
                note: format!("load {index}-{n}: dressing changed"),
            },
            Provenance {
                author_id: tab.user.clone(),
                role: "R0050".into(),
                organisation: "RX1".into(),
                device: tab.me.clone(),
                recorded_at_ms: scr_core::clock::now_ms(),
            },
        );
        let json = serde_json::to_string(&version).map_err(|e| e.to_string())?;
        let head = {
            let (d, _) = tab.docs.get_mut(&care).ok_or("no care events")?;
            let versions = match d.get(ROOT, "versions").map_err(|e| e.to_string())? {
                Some((_, id)) => id,
                None => return Err("care events without versions".into()),
            };
            let mut tx = d.transaction();
            tx.put(&versions, version.version_id.to_string(), json)
                .map_err(|e| e.to_string())?;
            tx.commit();
            d.get_heads()[0]
        };
        let t = Instant::now();
        timings
            .lock()
            .map_err(|_| "poisoned")?
            .sent
            .insert(head, (t, node, index));
        tab.send("sync", &care).await?;
        while !tab.in_step(&care, Some(head)) {
            tab.receive().await?;
        }
        timings
            .lock()
            .map_err(|_| "poisoned")?
            .push
            .push((node, t.elapsed()));
    }
    Ok(tab)
}

/// One tablet's life: connected and synced, then (once every tablet is,
/// at the first barrier) pushing, its session held open until every
/// tablet is done (the second) and their pushes have arrived (the third).
pub async fn tablet(
    site: Arc<Site>,
    (index, node): (usize, usize),
    pushes: usize,
    ready: Arc<Barrier>,
    timings: Arc<std::sync::Mutex<Timings>>,
) -> Result<(), String> {
    let mut connected = connect(&site, (index, node), &timings).await;
    if let Ok(tab) = &mut connected {
        tab.idle_until(ready.wait()).await;
    } else {
        ready.wait().await;
    }
    let mut pushed = match connected {
        Ok(tab) => push(tab, index, pushes, &timings).await,
        Err(e) => Err(e),
    };
    // Held open (answering what arrives) until every tablet has pushed,
    // then until the pushes have reached the other tablets.
    for _ in 0..2 {
        if let Ok(tab) = &mut pushed {
            tab.idle_until(ready.wait()).await;
        } else {
            ready.wait().await;
        }
    }
    pushed.map(drop)
}

pub fn percentiles(label: &str, mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return format!("{label}: none");
    }
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "{label} p50 {:.0} ms, p99 {:.0} ms (n={})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v.len()
    )
}
