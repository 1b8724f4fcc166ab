//! Load: many simulated tablets against the server, all connected at once.
//!
//! The server runs as its own process (`scr-server serve`), so its memory
//! is its own: one node on its embedded SQLite store, or (`--nodes 2
//! --store postgres`) two nodes over one PostgreSQL, the tablets spread
//! over both, measured against one node on SQLite in the same run. Each
//! simulated tablet (`load/tablet.rs`) does what a real one does over the
//! real protocol: enrolls, logs in, syncs its nurse's caseload cold, then
//! holds the session open and pushes visit changes while every other
//! tablet does the same, answering what the server sends it.
//!
//! Reported: connect, login and cold-sync latency (p50, p99), push latency
//! (a change sent until the server's reply shows it merged) and throughput
//! per node, propagation (a push until the nurse's other tablet, on the
//! other node when there are two, received it), the store's time per write
//! transaction (PostgreSQL's, or SQLite's), peak open sessions, the
//! servers' resident and peak memory, and errors.
//!
//!   cargo bench -p scr-server --bench load -- --devices 2000
//!   scripts/with-postgres cargo bench -p scr-server --bench load -- --nodes 2 --devices 400 --store postgres
//!   cargo test  -p scr-server --bench load     (a 40-tablet smoke run)

#![allow(clippy::unwrap_used)]

#[path = "load/site.rs"]
mod site;
#[path = "load/tablet.rs"]
mod tablet;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use site::{Plan, Site, http_get, memory_mb, metric, prepare, serve_nodes};
use tablet::{Timings, percentiles};
use tokio::sync::Barrier;

async fn run(plan: Plan) {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (tablets, docs) = prepare(dir.path(), &plan).await;
    let setup = t.elapsed();
    let (servers, sync_addrs, health_addrs, server_key) = serve_nodes(dir.path(), &plan);
    let pids: Vec<u32> = servers.iter().map(|s| s.0.id()).collect();
    let site = Arc::new(Site {
        sync_addrs,
        server_key,
        tablets,
        docs,
    });
    let rss = |field: &str| pids.iter().map(|p| memory_mb(*p, field)).sum::<u64>();
    let idle_mb = rss("VmRSS:");
    let timings = Arc::new(std::sync::Mutex::new(Timings::default()));
    let ready = Arc::new(Barrier::new(plan.devices + 1));
    let failed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let started = Instant::now();
    // Where a long run is, every ten seconds.
    let progress = {
        let (timings, failed) = (timings.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let (synced, pushed) = timings
                    .lock()
                    .map(|t| (t.cold_sync.len(), t.push.len()))
                    .unwrap_or_default();
                eprintln!(
                    "  ... {:.0} s: {synced} synced, {pushed} pushes, {} failed",
                    started.elapsed().as_secs_f64(),
                    failed.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..plan.devices {
        let (site, ready, timings) = (site.clone(), ready.clone(), timings.clone());
        let (failed, errors) = (failed.clone(), errors.clone());
        let (pushes, node) = (plan.pushes, plan.node_of(i));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = tablet::tablet(site, (i, node), pushes, ready, timings).await {
                failed.fetch_add(1, Ordering::Relaxed);
                *errors.lock().unwrap().entry(e).or_default() += 1;
            }
        }));
        // A tablet every 2 ms: a burst, not a single instant.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ready.wait().await;
    let all_synced = started.elapsed();
    let mut open_sessions = 0;
    for h in &health_addrs {
        open_sessions += metric(&http_get(h, "/metrics").await, "scr_sync_sessions_open");
    }
    let connected_mb = rss("VmRSS:");
    let t = Instant::now();
    ready.wait().await;
    let push_phase = t.elapsed();
    // Every push reaches the nurse's other tablet (or 20 s pass).
    let expected = timings.lock().map(|t| t.push.len()).unwrap_or(0);
    let waited = Instant::now();
    while timings.lock().map(|t| t.propagation.len()).unwrap_or(0) < expected
        && waited.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ready.wait().await;
    for task in tasks {
        let _ = task.await;
    }
    let (mut writes, mut write_us) = (0, 0);
    for h in &health_addrs {
        let text = http_get(h, "/metrics").await;
        writes += metric(&text, "scr_store_writes_total");
        write_us += metric(&text, "scr_store_write_microseconds_total");
    }
    let peak_mb = rss("VmHWM:");
    drop(servers);
    progress.abort();

    let t = timings.lock().unwrap();
    let what = match &plan.store {
        Some(_) => format!("{} nodes over one PostgreSQL", plan.nodes),
        None => "one node on SQLite".to_owned(),
    };
    println!(
        "load, {what}: {} tablets ({} nurses x {} patients, 2 documents each), setup {:.1} s",
        plan.devices,
        plan.nurses,
        plan.caseload,
        setup.as_secs_f64()
    );
    println!(
        "  all enrolled, logged in and synced in {:.1} s; open sync sessions at the peak: {open_sessions}",
        all_synced.as_secs_f64()
    );
    println!(
        "  {}",
        percentiles("enroll (Noise handshake)", t.connect.clone())
    );
    println!("  {}", percentiles("login (Argon2id)", t.login.clone()));
    println!(
        "  {}",
        percentiles("cold sync of the caseload", t.cold_sync.clone())
    );
    let secs = push_phase.as_secs_f64().max(1e-3);
    println!(
        "  {}; {:.0} pushes/s in all",
        percentiles(
            "push merged",
            t.push.iter().map(|(_, d)| *d).collect::<Vec<_>>()
        ),
        t.push.len() as f64 / secs
    );
    for n in 0..plan.nodes.max(1) {
        let mine: Vec<Duration> = t
            .push
            .iter()
            .filter(|(node, _)| *node == n)
            .map(|(_, d)| *d)
            .collect();
        println!(
            "    node {n}: {:.0} pushes/s, {}",
            mine.len() as f64 / secs,
            percentiles("merged", mine.clone())
        );
    }
    for (cross, label) in [(false, "on the same node"), (true, "across nodes")] {
        let mine: Vec<Duration> = t
            .propagation
            .iter()
            .filter(|(c, _)| *c == cross)
            .map(|(_, d)| *d)
            .collect();
        if !mine.is_empty() {
            println!(
                "  {} of {} pushes",
                percentiles(
                    &format!("a push to the nurse's other tablet, {label}"),
                    mine
                ),
                t.push.len()
            );
        }
    }
    println!(
        "  the store: {writes} write transactions, {:.2} ms each on average",
        write_us as f64 / 1e3 / writes.max(1) as f64
    );
    println!(
        "  server memory (all nodes): {idle_mb} MB idle, {connected_mb} MB with all connected, peak {peak_mb} MB"
    );
    println!(
        "  errors: {} tablets failed {:?}",
        failed.load(Ordering::Relaxed),
        errors.lock().unwrap()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    // `cargo bench` passes --bench; under `cargo test` this is a smoke run.
    let full = args.iter().any(|a| a == "--bench");
    let devices = value("--devices").unwrap_or(if full { 2_000 } else { 40 });
    let on_postgres = args
        .windows(2)
        .any(|w| w[0] == "--store" && w[1] == "postgres");
    let plan = |nodes: usize, store: Option<String>| Plan {
        devices,
        // Two tablets per nurse (a user's parallel logins are capped).
        nurses: value("--nurses").unwrap_or((devices / 2).max(1)),
        caseload: value("--caseload").unwrap_or(5) as u32,
        pushes: value("--pushes").unwrap_or(if full { 3 } else { 1 }),
        nodes,
        store,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if on_postgres {
        let cluster = std::env::var("SCR_TEST_POSTGRES")
            .expect("--store postgres needs a cluster: run it through scripts/with-postgres");
        // The floor first, in the same run: one node on its SQLite files.
        runtime.block_on(run(plan(1, None)));
        let nodes = value("--nodes").unwrap_or(2);
        runtime.block_on(run(plan(nodes, Some(site::fresh_database(&cluster)))));
    } else {
        runtime.block_on(run(plan(value("--nodes").unwrap_or(1).min(1), None)));
    }
}
