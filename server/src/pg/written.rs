//! Which documents other nodes wrote, in commit order (ADR 0017,
//! `0004_written.sql`). A store write that touched documents records their
//! keyed hashes under the next number in its own transaction and wakes the
//! other nodes' listeners (`scr_docs`, the writing node's name only). A
//! node reads the rows after the last number it read: on a wake-up, now
//! and then as a backstop, and when its listening connection is made
//! again, so a notice lost meanwhile loses nothing. Rows older than
//! [`KEPT`] are pruned; a node that had not read that far is told to
//! refresh everything it holds ([`DocNotice::Missed`]).

use std::time::Duration;

use deadpool_postgres::Pool;
use scr_core::store::rows::RowRef;

use super::PgError;

/// What a node heard of other nodes' document writes.
#[derive(Debug, PartialEq, Eq)]
pub enum DocNotice {
    /// These documents (by keyed hash) were written by another node.
    Written(Vec<scr_core::crypto::Ref>),
    /// Writes may have been missed (rows pruned before this node read
    /// them, or its first reading): any document may have been written.
    Missed,
}

/// The channel that wakes other nodes after a document write.
pub const DOCS_CHANNEL: &str = "scr_docs";

/// How long rows are kept: far longer than a listening connection takes to
/// come back.
pub const KEPT: Duration = Duration::from_secs(600);
/// Rows read at a time.
const PAGE: i64 = 256;

/// The SQL a store write runs before its `COMMIT` (`pg::held`): its
/// documents recorded under the next number, and the other nodes woken.
/// The `given` row stays locked until the commit, so numbers become
/// visible in order and a reader never skips one still to come. Only hex
/// digits and the node's (hex) name go into the text: nothing to quote.
pub(super) fn record_sql(node: &str, docs: &[RowRef]) -> String {
    let refs: Vec<String> = docs
        .iter()
        .map(|d| {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("decode('{hex}', 'hex')")
        })
        .collect();
    let node: String = node.chars().filter(char::is_ascii_hexdigit).collect();
    format!(
        "WITH given AS (UPDATE store_written_marks SET seq = seq + 1 WHERE mark = 'given' \
         RETURNING seq) INSERT INTO store_written (seq, node, doc_refs) \
         SELECT seq, '{node}', ARRAY[{}] FROM given; \
         SELECT pg_notify('{}', '{node}'); ",
        refs.join(", "),
        DOCS_CHANNEL
    )
}

/// Reads what other nodes wrote after `last` (the last number this node
/// read) and tells it to `docs`; `last` moves only past what was told.
/// With no `last` yet (the first time), counting starts now and whatever
/// the node already holds is refreshed (nothing, at its start).
pub(super) async fn follow(
    pool: &Pool,
    me: &str,
    docs: &tokio::sync::mpsc::UnboundedSender<DocNotice>,
    last: &mut Option<i64>,
) -> Result<(), PgError> {
    let c = super::client(pool).await?;
    let Some(mut after) = *last else {
        *last = Some(given(&c).await?);
        let _ = docs.send(DocNotice::Missed);
        return Ok(());
    };
    loop {
        let rows = c
            .query(
                "SELECT m.seq, w.seq, w.node, w.doc_refs FROM store_written_marks m
                 LEFT JOIN LATERAL (SELECT seq, node, doc_refs FROM store_written
                                    WHERE seq > $1 ORDER BY seq LIMIT $2) w ON true
                 WHERE m.mark = 'pruned'",
                &[&after, &PAGE],
            )
            .await
            .map_err(super::failed("written documents"))?;
        let pruned: i64 = rows.first().map_or(0, |r| r.get(0));
        if pruned > after {
            // Rows this node never read are gone: everything it holds may
            // have been written. Counted from now.
            let now = given(&c).await?;
            let _ = docs.send(DocNotice::Missed);
            *last = Some(now.max(pruned));
            return Ok(());
        }
        let (refs, read) = news(me, &rows);
        if !refs.is_empty() {
            let _ = docs.send(DocNotice::Written(refs));
        }
        if let Some(seq) = read.last {
            after = seq;
            *last = Some(seq);
        }
        if read.count < PAGE as usize {
            return Ok(());
        }
    }
}

struct Read {
    count: usize,
    last: Option<i64>,
}

/// The documents other nodes wrote, in these rows (seq, node, doc_refs in
/// columns 1 to 3; none where no row was written after).
fn news(me: &str, rows: &[tokio_postgres::Row]) -> (Vec<RowRef>, Read) {
    let mut refs = Vec::new();
    let mut read = Read {
        count: 0,
        last: None,
    };
    for row in rows {
        let Some(seq) = row.get::<_, Option<i64>>(1) else {
            continue;
        };
        read.count += 1;
        read.last = Some(seq);
        if row.get::<_, String>(2) != me {
            let written: Vec<Vec<u8>> = row.get(3);
            refs.extend(written.into_iter().filter_map(|d| RowRef::try_from(d).ok()));
        }
    }
    (refs, read)
}

async fn given(c: &deadpool_postgres::Object) -> Result<i64, PgError> {
    c.query_one(
        "SELECT seq FROM store_written_marks WHERE mark = 'given'",
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(super::failed("written documents"))
}

/// Deletes rows older than [`KEPT`], moving the `pruned` mark past them
/// (any node may, at any time: the mark only grows).
pub(super) async fn prune(pool: &Pool) -> Result<(), PgError> {
    let c = super::client(pool).await?;
    c.execute(
        "WITH gone AS (DELETE FROM store_written
                       WHERE written_at < now() - make_interval(secs => $1) RETURNING seq)
         UPDATE store_written_marks SET seq = GREATEST(seq, (SELECT max(seq) FROM gone))
         WHERE mark = 'pruned' AND EXISTS (SELECT 1 FROM gone)",
        &[&KEPT.as_secs_f64()],
    )
    .await
    .map(drop)
    .map_err(super::failed("pruning written documents"))
}
