//! Other nodes' writes, heard (ADR 0017): every write another node must see
//! bumps its concern's counter and sends `NOTIFY scr_changes` in the same
//! transaction (`pg_notify` is delivered at commit, or never). A node
//! listens on a connection of its own; each notice moves its [`Changes`].
//! A notice sent while that connection was down is lost, so on every
//! (re)connection the node compares the counters with the last it saw and
//! moves `Changes` if any moved meanwhile: a dropped connection loses
//! nothing, it only delays.
//!
//! Document writes are numbered instead (`pg::written`): a notice on
//! `scr_docs` only wakes the node, which reads the documents other nodes
//! wrote after the last number it read ([`DocNotice::Written`]), so
//! notices arriving together cost one read, and one sent by anybody else
//! tells nothing. A reconnection reads from that number too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::written::DocNotice;
use super::{Pg, PgConfig};

/// The channel every notice goes on.
pub const CHANNEL: &str = "scr_changes";
/// How long the listening connection's startup and `LISTEN` may take.
const STARTUP: Duration = Duration::from_secs(10);
/// How often the counters are read while listening (the backstop).
const RECHECK: Duration = Duration::from_secs(30);

/// The SQL a writer runs in its transaction, after bumping `concern`'s
/// counter (see `change_counters`).
pub fn notify_sql(concern: &str) -> String {
    format!("SELECT pg_notify('{CHANNEL}', '{concern}')")
}

/// What a node has heard of other nodes' writes.
#[derive(Clone)]
pub struct Changes {
    moved: watch::Receiver<u64>,
    stats: Arc<Stats>,
    documents: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<DocNotice>>>>,
}

#[derive(Default)]
struct Stats {
    notices: AtomicU64,
    caught_up: AtomicU64,
    reconnects: AtomicU64,
}

impl Changes {
    /// Moves at every notice, and at every catch-up that found a change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.moved.clone()
    }

    /// Notices heard (those arriving together, read as one change, counted
    /// once).
    pub fn notices(&self) -> u64 {
        self.stats.notices.load(Ordering::Relaxed)
    }

    /// Catch-ups after a reconnection that found writes whose notices were
    /// missed.
    pub fn caught_up(&self) -> u64 {
        self.stats.caught_up.load(Ordering::Relaxed)
    }

    /// Other nodes' document writes, as heard (for the one task that
    /// follows them; `None` once taken).
    pub fn take_documents(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<DocNotice>> {
        self.documents.lock().ok().and_then(|mut d| d.take())
    }

    /// Times the listening connection was tried again after it dropped or
    /// failed to start.
    pub fn reconnects(&self) -> u64 {
        self.stats.reconnects.load(Ordering::Relaxed)
    }
}

/// Starts listening (on `pg`'s runtime) until the runtime stops.
pub fn listen(pg: &Pg, config: &PgConfig) -> Changes {
    let (tx, moved) = watch::channel(0u64);
    let stats = Arc::new(Stats::default());
    let (docs, documents) = tokio::sync::mpsc::unbounded_channel();
    // The pool, not the `Pg`: a task on the runtime holding the runtime's
    // handle would keep it alive forever.
    let (config, counters_of, seen) = (config.clone(), stats.clone(), pg.pool.clone());
    let me: Arc<str> = pg.node.clone();
    pg.runtime.spawn(async move {
        let mut last: Option<HashMap<String, i64>> = None;
        let mut written: Option<i64> = None;
        let mut delay = Duration::from_millis(100);
        let told = Told { tx, docs, me };
        loop {
            let heard = listen_once(
                &config,
                &seen,
                &told,
                &counters_of,
                (&mut last, &mut written),
            )
            .await;
            if heard {
                delay = Duration::from_millis(100);
            }
            counters_of.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
    Changes {
        moved,
        stats,
        documents: Arc::new(std::sync::Mutex::new(Some(documents))),
    }
}

/// Where what is heard goes.
struct Told {
    tx: watch::Sender<u64>,
    docs: tokio::sync::mpsc::UnboundedSender<DocNotice>,
    /// This node's name: its own writes' notices are not news.
    me: Arc<str>,
}

/// One listening connection, until it drops. Returns whether it got as
/// far as listening.
async fn listen_once(
    config: &PgConfig,
    pool: &deadpool_postgres::Pool,
    told: &Told,
    stats: &Stats,
    (last, written): (&mut Option<HashMap<String, i64>>, &mut Option<i64>),
) -> bool {
    let tx = &told.tx;
    let Ok(mut cfg) = config.url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    cfg.application_name("scr-server-listen");
    super::dead_peer_limits(&mut cfg);
    // The whole startup bounded, not only the TCP connect: a peer that
    // accepts and never answers must not hold the listener.
    let Ok(Ok((client, mut connection))) =
        tokio::time::timeout(STARTUP, cfg.connect(tokio_postgres::NoTls)).await
    else {
        return false;
    };
    let (notes, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
    let (me, named) = (told.me.clone(), told.docs.clone());
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            let tokio_postgres::AsyncMessage::Notification(n) = message else {
                continue;
            };
            if n.channel() == CHANNEL {
                let _ = notes.send(());
            } else if n.channel() == super::written::DOCS_CHANNEL {
                match super::written::wake(n.payload(), &me) {
                    super::written::Wake::Nothing => {}
                    super::written::Wake::Read => {
                        let _ = wake.send(());
                    }
                    super::written::Wake::Named(refs) => {
                        let _ = named.send(DocNotice::Written(refs));
                    }
                }
            }
        }
    });
    let listening = tokio::time::timeout(
        STARTUP,
        client.batch_execute(&format!(
            "LISTEN {CHANNEL}; LISTEN {}",
            super::written::DOCS_CHANNEL
        )),
    )
    .await;
    if !matches!(listening, Ok(Ok(()))) {
        driver.abort();
        return false;
    }
    // Listening from here: whatever committed before is in the counters
    // and the written rows.
    let _ = super::written::follow(pool, &told.me, &told.docs, written).await;
    match counters(pool).await {
        Ok(now) => {
            if last.as_ref().is_some_and(|seen| *seen != now) {
                stats.caught_up.fetch_add(1, Ordering::Relaxed);
                tx.send_modify(|n| *n += 1);
            }
            *last = Some(now);
        }
        // Cannot tell what was missed: assume something was.
        Err(_) => {
            if last.is_some() {
                tx.send_modify(|n| *n += 1);
            }
        }
    }
    let mut check = tokio::time::interval(RECHECK);
    check.tick().await;
    loop {
        tokio::select! {
            note = heard.recv() => {
                if note.is_none() {
                    break;
                }
                // Notices arriving together are one change to follow (a
                // flood, from whoever may send them, costs one read).
                while heard.try_recv().is_ok() {}
                stats.notices.fetch_add(1, Ordering::Relaxed);
                tx.send_modify(|n| *n += 1);
                if let Ok(now) = counters(pool).await {
                    *last = Some(now);
                }
            }
            woke = woken.recv() => {
                if woke.is_none() {
                    break;
                }
                // Every wake-up waiting is answered by this one read.
                while woken.try_recv().is_ok() {}
                let _ = super::written::follow(pool, &told.me, &told.docs, written).await;
            }
            // A backstop: the counters and the written rows read now and
            // then, so a notice lost on a connection that has not yet
            // noticed it is dead delays a change by this much at most.
            _ = check.tick() => {
                let _ = super::written::follow(pool, &told.me, &told.docs, written).await;
                let _ = super::written::prune(pool, super::written::KEPT).await;
                if let Ok(now) = counters(pool).await {
                    if last.as_ref().is_some_and(|seen| *seen != now) {
                        stats.caught_up.fetch_add(1, Ordering::Relaxed);
                        tx.send_modify(|n| *n += 1);
                    }
                    *last = Some(now);
                }
            }
        }
    }
    driver.abort();
    true
}

async fn counters(pool: &deadpool_postgres::Pool) -> Result<HashMap<String, i64>, super::PgError> {
    let c = super::client(pool).await?;
    let rows = c
        .query("SELECT concern, seq FROM change_counters", &[])
        .await
        .map_err(super::failed("change counters"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
}
