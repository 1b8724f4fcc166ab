//! Which documents other nodes wrote, in commit order (ADR 0017,
//! `0004_written.sql`). A store write that touched documents records their
//! keyed hashes under the next number in its own transaction and wakes the
//! other nodes' listeners (`scr_docs`: the writing node's name, and for a
//! rolling upgrade's sake the documents' hashes, which this release does
//! not read). A
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
    let hex = |d: &RowRef| -> String { d.iter().map(|b| format!("{b:02x}")).collect() };
    let refs: Vec<String> = docs
        .iter()
        .map(|d| format!("decode('{}', 'hex')", hex(d)))
        .collect();
    let node: String = node.chars().filter(char::is_ascii_hexdigit).collect();
    let mut sql = format!(
        "WITH given AS (UPDATE store_written_marks SET seq = seq + 1 WHERE mark = 'given' \
         RETURNING seq) INSERT INTO store_written (seq, node, doc_refs) \
         SELECT seq, '{node}', ARRAY[{}] FROM given; ",
        refs.join(", ")
    );
    // The wake-up still names the documents, as nodes of the release
    // before read them from it (during a rolling upgrade), after a mark
    // they skip and this release reads as "read the rows" (a notice
    // carries 8000 bytes at most: 200 documents each).
    for some in docs.chunks(200) {
        let named: Vec<String> = some.iter().map(hex).collect();
        sql.push_str(&format!(
            "SELECT pg_notify('{DOCS_CHANNEL}', '{node} {NUMBERED},{}'); ",
            named.join(",")
        ));
    }
    sql
}

/// What a wake-up from a node of this release carries after its name.
const NUMBERED: &str = "numbered";

/// What a notice on [`DOCS_CHANNEL`] asks of a node.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// Its own write, or nothing readable: nothing.
    Nothing,
    /// Read the rows after the last number read.
    Read,
    /// A node of the release before (numbering nothing) wrote these
    /// documents. (Any role may send a notice: naming documents only makes
    /// the node merge them again from the store.)
    Named(Vec<RowRef>),
}

/// Reads a notice's payload: the writing node's name, then either the
/// numbered mark or (from the release before) the documents' hashes.
pub(super) fn wake(payload: &str, me: &str) -> Wake {
    let (node, rest) = payload.split_once(' ').unwrap_or((payload, ""));
    if node == me {
        return Wake::Nothing;
    }
    if rest.is_empty() || rest.split(',').next() == Some(NUMBERED) {
        return Wake::Read;
    }
    let refs: Vec<RowRef> = rest
        .split(',')
        .filter_map(|hex| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                })
                .collect::<Option<_>>()?;
            RowRef::try_from(bytes).ok()
        })
        .collect();
    if refs.is_empty() {
        Wake::Nothing
    } else {
        Wake::Named(refs)
    }
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
                "SELECT m.seq, (SELECT seq FROM store_written_marks WHERE mark = 'given'),
                        w.seq, w.node, w.doc_refs
                 FROM store_written_marks m
                 LEFT JOIN LATERAL (SELECT seq, node, doc_refs FROM store_written
                                    WHERE seq > $1 ORDER BY seq LIMIT $2) w ON true
                 WHERE m.mark = 'pruned'",
                &[&after, &PAGE],
            )
            .await
            .map_err(super::failed("written documents"))?;
        let mark = |column| {
            rows.first()
                .and_then(|r| r.try_get::<_, Option<i64>>(column).ok().flatten())
                .unwrap_or(0)
        };
        let (pruned, given_now) = (mark(0), mark(1));
        // Rows this node never read are gone (pruned), or the numbers went
        // back (the database restored, or a standby that had not every
        // commit promoted): everything it holds may have been written.
        // Counted from now.
        if pruned > after || given_now < after {
            let _ = docs.send(DocNotice::Missed);
            *last = Some(if given_now < after {
                given_now
            } else {
                given_now.max(pruned)
            });
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
/// columns 2 to 4; none where no row was written after). Read without
/// trusting the rows: one that is not as this build writes them (any role
/// that can write the table could) is passed over, not a panic.
fn news(me: &str, rows: &[tokio_postgres::Row]) -> (Vec<RowRef>, Read) {
    let mut refs = Vec::new();
    let mut read = Read {
        count: 0,
        last: None,
    };
    for row in rows {
        let Ok(Some(seq)) = row.try_get::<_, Option<i64>>(2) else {
            continue;
        };
        read.count += 1;
        read.last = Some(seq);
        let Ok(Some(node)) = row.try_get::<_, Option<String>>(3) else {
            continue;
        };
        if node == me {
            continue;
        }
        let Ok(Some(written)) = row.try_get::<_, Option<Vec<Option<Vec<u8>>>>>(4) else {
            continue;
        };
        refs.extend(
            written
                .into_iter()
                .flatten()
                .filter_map(|d| RowRef::try_from(d).ok()),
        );
    }
    (refs, read)
}

async fn given(c: &deadpool_postgres::Object) -> Result<i64, PgError> {
    c.query_one(
        "SELECT seq FROM store_written_marks WHERE mark = 'given'",
        &[],
    )
    .await
    .map_err(super::failed("written documents"))?
    .try_get(0)
    .map_err(|_| PgError::Statement("written documents"))
}

/// [`prune`] from a synchronous caller (a test, an operator's tool).
pub fn prune_now(pg: &super::Pg, older_than: Duration) -> Result<(), PgError> {
    pg.run(move |pool| async move { prune(&pool, older_than).await })
}

/// Deletes rows older than `older_than` ([`KEPT`] when nodes prune),
/// moving the `pruned` mark past them (any node may, at any time: the mark
/// only grows).
pub(super) async fn prune(pool: &Pool, older_than: Duration) -> Result<(), PgError> {
    let c = super::client(pool).await?;
    c.execute(
        "WITH gone AS (DELETE FROM store_written
                       WHERE written_at < now() - make_interval(secs => $1) RETURNING seq)
         UPDATE store_written_marks SET seq = GREATEST(seq, (SELECT max(seq) FROM gone))
         WHERE mark = 'pruned' AND EXISTS (SELECT 1 FROM gone)",
        &[&older_than.as_secs_f64()],
    )
    .await
    .map(drop)
    .map_err(super::failed("pruning written documents"))
}

#[cfg(test)]
mod tests {
    use super::{Wake, record_sql, wake};

    #[test]
    fn a_write_wakes_with_its_documents_named_as_the_release_before_reads_them() {
        let sql = record_sql("ab", &[[0x11; 16], [0x22; 16]]);
        let (a, b) = ("11".repeat(16), "22".repeat(16));
        assert!(sql.contains(&format!("pg_notify('scr_docs', 'ab numbered,{a},{b}')")));
        // The release before took every comma-separated hex run after the
        // name; the mark is not one, so it read just the documents.
        assert!(!"numbered".chars().all(|c| c.is_ascii_hexdigit()));
        let many: Vec<[u8; 16]> = (0..450u16).map(|i| [(i % 251) as u8; 16]).collect();
        assert_eq!(record_sql("ab", &many).matches("pg_notify").count(), 3);
    }

    #[test]
    fn a_wake_up_reads_the_rows_and_one_from_the_release_before_names_documents() {
        let a = "00112233445566778899aabbccddeeff";
        let b = "ffeeddccbbaa99887766554433221100";
        assert_eq!(wake(&format!("node2 numbered,{a}"), "node1"), Wake::Read);
        assert_eq!(wake("node2", "node1"), Wake::Read);
        assert_eq!(wake(&format!("node1 numbered,{a}"), "node1"), Wake::Nothing);
        let Wake::Named(refs) = wake(&format!("node2 {a},{b}"), "node1") else {
            panic!("named");
        };
        assert_eq!((refs.len(), refs[0][1]), (2, 0x11));
        assert_eq!(wake(&format!("node1 {a}"), "node1"), Wake::Nothing);
        assert_eq!(wake("node2 zz,1", "node1"), Wake::Nothing);
    }
}
