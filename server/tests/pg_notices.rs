//! Several nodes over one PostgreSQL (ADR 0017): a write another node must
//! see sends a notice in its own transaction, and every node listens. A
//! notice missed while a node's listening connection was down is caught up
//! from the change counters when it comes back: nothing is lost.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::retention::DeviceClass;
use scr_server::directory::Directory;
use scr_server::pg::store::PgStore;
use scr_server::pg::written::DocNotice;
use scr_server::pg::{Pg, PgConfig, listen};

mod common;

fn moved_within(rx: &mut tokio::sync::watch::Receiver<u64>, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if rx.has_changed().unwrap_or(false) {
            rx.mark_unchanged();
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn enrolled_and_revoked(directory: &Directory, key: u8) {
    let token = directory
        .create_enrollment_token("RX1", DeviceClass::NurseTablet, i64::MAX)
        .unwrap();
    directory.enroll(&[key; 32], &token, 0, |_| true).unwrap();
    directory.revoke(&[key; 32]).unwrap();
}

/// A login role of its own for node A, which the test can shut out; the
/// URL that connects as it.
fn own_role(url: &str) -> (String, String) {
    let mut raw = [0u8; 4];
    getrandom::fill(&mut raw).unwrap();
    let role: String = std::iter::once("node_a_".to_owned())
        .chain(raw.iter().map(|b| format!("{b:02x}")))
        .collect();
    common::postgres::admin(url, &format!("CREATE ROLE {role} LOGIN SUPERUSER"));
    let url_a = url.replacen("postgres@", &format!("{role}@"), 1);
    (role, url_a)
}

/// `role`'s connections cut, and it cannot come back until [`let_back`].
fn cut_off(url: &str, role: &str) {
    common::postgres::admin(
        url,
        &format!(
            "ALTER ROLE {role} NOLOGIN;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';"
        ),
    );
}

fn let_back(url: &str, role: &str) {
    common::postgres::admin(url, &format!("ALTER ROLE {role} LOGIN"));
}

/// Waits until the listener has tried (and failed) to come back twice
/// since it had tried `before` times.
fn retried(changes: &listen::Changes, before: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while changes.reconnects() < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never retried"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the node heard of other nodes' document writes: until `enough`
/// holds of it (15 s at most, far more than it takes on a loaded machine),
/// and a moment more, so that anything told beyond it shows too.
fn documents_heard(
    told: &mut tokio::sync::mpsc::UnboundedReceiver<DocNotice>,
    enough: impl Fn(&[DocNotice]) -> bool,
) -> Vec<DocNotice> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut heard = Vec::new();
    loop {
        while let Ok(notice) = told.try_recv() {
            heard.push(notice);
        }
        if enough(&heard) || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(notice) = told.try_recv() {
        heard.push(notice);
    }
    heard
}

/// Enough: told to refresh everything.
fn missed(heard: &[DocNotice]) -> bool {
    heard.contains(&DocNotice::Missed)
}

/// Enough: `n` documents told as written (or told to refresh everything).
fn told_of(n: usize) -> impl Fn(&[DocNotice]) -> bool {
    move |heard| {
        missed(heard)
            || heard
                .iter()
                .map(|h| match h {
                    DocNotice::Written(refs) => refs.len(),
                    DocNotice::Missed => 0,
                })
                .sum::<usize>()
                >= n
    }
}

/// The documents `heard` says were written, in order (being told to
/// refresh everything instead fails the test, saying `why`).
fn documents_in(heard: Vec<DocNotice>, why: &str) -> Vec<scr_core::crypto::Ref> {
    heard
        .into_iter()
        .flat_map(|n| match n {
            DocNotice::Written(refs) => refs,
            DocNotice::Missed => panic!("{why}"),
        })
        .collect()
}

/// Node A, listening as a role of its own (which the test can shut out),
/// and what it hears of other nodes' document writes.
struct Listening {
    role: String,
    changes: listen::Changes,
    told: tokio::sync::mpsc::UnboundedReceiver<DocNotice>,
    /// Its pool and runtime: the listener runs on them.
    _node: Pg,
}

fn listening_as_own_role(url: &str) -> Listening {
    let (role, url_a) = own_role(url);
    let node: Pg = common::postgres::connect(&url_a);
    let changes = listen::listen(&node, &PgConfig::new(&url_a));
    let told = changes.take_documents().unwrap();
    Listening {
        role,
        changes,
        told,
        _node: node,
    }
}

fn other_node_store(url: &str) -> scr_core::Store {
    use scr_core::crypto::{SecretKey, StaticKeyProvider};
    let pg = common::postgres::connect(url);
    let kek = StaticKeyProvider::new(SecretKey::from_bytes([9; 32]));
    scr_core::Store::over(std::sync::Arc::new(PgStore::new(pg)), &kek).unwrap()
}

fn chunk(doc: &str, n: u8) -> scr_core::store::ChunkKey {
    scr_core::store::ChunkKey::from_parts([doc, "incremental", &format!("{n:02x}")]).unwrap()
}

#[test]
fn another_nodes_revocation_is_heard_within_a_second() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let node_a = common::postgres::connect(&url);
    let changes = listen::listen(&node_a, &PgConfig::new(&url));
    let mut heard = changes.watch();
    // Listening before the write (the listener connects in the background).
    std::thread::sleep(Duration::from_millis(500));
    heard.mark_unchanged();
    let node_b = Directory::on_postgres(common::postgres::connect(&url));
    enrolled_and_revoked(&node_b, 1);
    assert!(
        moved_within(&mut heard, Duration::from_secs(1)),
        "node A never heard node B's revocation"
    );
    assert!(changes.notices() >= 1);
}

#[test]
fn a_notice_missed_while_listening_was_cut_is_caught_up() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let (role, url_a) = own_role(&url);
    let node_a: Pg = common::postgres::connect(&url_a);
    let changes = listen::listen(&node_a, &PgConfig::new(&url_a));
    let mut heard = changes.watch();
    std::thread::sleep(Duration::from_millis(500));
    heard.mark_unchanged();

    // Its connections cut, and it cannot come back yet.
    cut_off(&url, &role);
    let reconnects = changes.reconnects();
    let node_b = Directory::on_postgres(common::postgres::connect(&url));
    enrolled_and_revoked(&node_b, 2);
    // Its notice went out while node A could not hear it.
    retried(&changes, reconnects);
    let notices = changes.notices();
    heard.mark_unchanged();

    let_back(&url, &role);
    assert!(
        moved_within(&mut heard, Duration::from_secs(10)),
        "node A came back and never learned of the revocation it missed"
    );
    assert_eq!(changes.notices(), notices, "no notice: it was caught up");
    assert!(changes.caught_up() >= 1);
}

#[test]
fn documents_another_node_wrote_while_listening_was_cut_are_read_from_the_last_number() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let Listening {
        role,
        changes,
        mut told,
        _node,
    } = listening_as_own_role(&url);
    // At its first connection, the node counts from then on (and refreshes
    // what it holds: nothing yet).
    assert_eq!(documents_heard(&mut told, missed), vec![DocNotice::Missed]);
    let node_b = other_node_store(&url);
    node_b.put_chunk(&chunk("docA", 1), b"one").unwrap();
    let heard = documents_heard(&mut told, told_of(1));
    assert_eq!(
        heard,
        vec![DocNotice::Written(vec![node_b.document_ref("docA")])],
        "node A was told which document node B wrote"
    );

    // Node A's listening connection cut while node B writes two more.
    cut_off(&url, &role);
    retried(&changes, changes.reconnects());
    node_b.put_chunk(&chunk("docB", 1), b"two").unwrap();
    node_b.put_chunk(&chunk("docC", 1), b"three").unwrap();
    let_back(&url, &role);
    let written = documents_in(
        documents_heard(&mut told, told_of(2)),
        "caught up by number, not by refreshing everything",
    );
    assert_eq!(
        written,
        vec![node_b.document_ref("docB"), node_b.document_ref("docC")],
        "the writes missed while cut off, in order, once each"
    );
}

#[test]
fn a_node_that_had_not_read_as_far_as_was_pruned_refreshes_everything() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let Listening {
        role,
        changes,
        mut told,
        _node,
    } = listening_as_own_role(&url);
    documents_heard(&mut told, missed);
    cut_off(&url, &role);
    retried(&changes, changes.reconnects());
    let node_b = other_node_store(&url);
    node_b.put_chunk(&chunk("docA", 1), b"one").unwrap();
    // Pruned as old (as every node does after ten minutes), by another
    // node.
    std::thread::sleep(Duration::from_millis(20));
    let other = common::postgres::connect(&url);
    scr_server::pg::written::prune_now(&other, Duration::from_millis(10)).unwrap();
    let left = common::postgres::bytes_of(&url, "SELECT doc_refs[1] FROM store_written");
    assert!(left.is_empty(), "pruned");
    let_back(&url, &role);
    assert_eq!(
        documents_heard(&mut told, missed),
        vec![DocNotice::Missed],
        "what was pruned unread is caught up by refreshing everything held"
    );
}

#[test]
fn documents_written_by_several_writers_at_once_are_each_told() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let node_a: Pg = common::postgres::connect(&url);
    let changes = listen::listen(&node_a, &PgConfig::new(&url));
    let mut told = changes.take_documents().unwrap();
    documents_heard(&mut told, missed);
    // Four writers (two nodes' handles each) commit at once: a reader that
    // skipped a number still to commit would never tell its document.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let store = other_node_store(&url);
                (0..40)
                    .map(|i| {
                        let doc = format!("doc-{w}-{i}");
                        store.put_chunk(&chunk(&doc, 1), b"x").unwrap();
                        store.document_ref(&doc)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut written: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let mut heard = documents_in(
        documents_heard(&mut told, told_of(160)),
        "nothing was missed",
    );
    written.sort_unstable();
    heard.sort_unstable();
    assert_eq!(heard.len(), 160);
    assert_eq!(heard, written, "each write told once");
}

#[test]
fn a_written_row_not_as_this_build_writes_them_is_passed_over() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let Listening {
        mut told, _node, ..
    } = listening_as_own_role(&url);
    documents_heard(&mut told, missed);
    // Rows any role that can write the table could add: an empty element,
    // an array of arrays, a node of no name.
    common::postgres::admin(
        &url,
        "WITH g AS (UPDATE store_written_marks SET seq = seq + 1 WHERE mark = 'given' RETURNING seq)
           INSERT INTO store_written (seq, node, doc_refs)
           SELECT seq, 'ff', ARRAY[NULL::bytea, '\\x00'::bytea] FROM g;
         WITH g AS (UPDATE store_written_marks SET seq = seq + 1 WHERE mark = 'given' RETURNING seq)
           INSERT INTO store_written (seq, node, doc_refs)
           SELECT seq, 'ff', ARRAY[ARRAY['\\x00'::bytea]] FROM g;
         SELECT pg_notify('scr_docs', 'ff');",
    );
    let node_b = other_node_store(&url);
    node_b.put_chunk(&chunk("docA", 1), b"one").unwrap();
    let written = documents_in(documents_heard(&mut told, told_of(1)), "nothing was missed");
    assert_eq!(
        written,
        vec![node_b.document_ref("docA")],
        "the node still listens and reads on past them"
    );
}

#[test]
fn a_node_of_the_release_before_naming_its_writes_is_heard() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let Listening {
        mut told, _node, ..
    } = listening_as_own_role(&url);
    documents_heard(&mut told, missed);
    // During a rolling upgrade: a node that numbers nothing names the
    // documents it wrote in its notice.
    let node_b = other_node_store(&url);
    let doc = node_b.document_ref("docA");
    let hex: String = doc.iter().map(|b| format!("{b:02x}")).collect();
    common::postgres::admin(&url, &format!("SELECT pg_notify('scr_docs', 'beef {hex}')"));
    assert_eq!(
        documents_in(documents_heard(&mut told, told_of(1)), "nothing was missed"),
        vec![doc]
    );
}
