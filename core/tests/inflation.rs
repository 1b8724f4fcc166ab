//! A deflate bomb in a sync message is refused without being inflated:
//! a few hundred kilobytes of deflate that automerge would inflate, whole
//! and before reading any checksum, to 128 MiB (a compressed change chunk)
//! or into one column of a document chunk. This binary counts what it
//! allocates, so it sees the difference between refusing the bomb and
//! inflating it first: without `untrusted::inflation_within` the parse
//! below allocates the whole inflated size.
#![allow(clippy::unwrap_used)]
// A counting allocator is the one way to see an allocation from outside.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use automerge::transaction::Transactable;
use scr_core::record::untrusted::{MAX_INFLATED_MESSAGE, Parsed, inflation_within, parse_changes};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; the
// counters only add and subtract the sizes it was asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(live, Ordering::SeqCst);
        // SAFETY: the caller's layout, unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The tests here measure one process-wide peak: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The most a parse may allocate beyond what was live when it started.
const PARSE_ALLOWANCE: usize = 8 * 1024 * 1024;

/// 128 MiB of zeros, deflated (about 128 KB).
fn bomb() -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1024 * 1024];
    for _ in 0..128 {
        e.write_all(&block).unwrap();
    }
    e.finish().unwrap()
}

fn uleb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A chunk of `kind` around `body`: magic, a checksum (any: automerge
/// inflates before it reads it), the kind, the length.
fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, kind];
    uleb(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A document chunk with no actors and no heads whose one change column
/// (a deflated one: bit 3 of its spec) is `column`.
fn document_with_column(column: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.push(1);
    uleb((1 << 4) | 0b1000, &mut body);
    uleb(column.len() as u64, &mut body);
    body.push(0);
    body.extend_from_slice(column);
    chunk(0, &body)
}

/// What parsing `chunks` as a sync message's changes allocated at its
/// peak, beyond what was live before, and its answer.
fn peak_of_parse(chunks: &[&[u8]]) -> (usize, bool) {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let parsed = parse_changes(chunks.iter().copied()).is_some();
    (PEAK.load(Ordering::SeqCst) - before, parsed)
}

/// `bomb` refused, and refusing it cheap.
fn refused_without_inflating(bomb: &[u8]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (peak, parsed) = peak_of_parse(&[bomb]);
    assert!(!parsed, "refused");
    assert!(
        peak < PARSE_ALLOWANCE,
        "refusing it allocated {peak} bytes at its peak"
    );
}

#[test]
fn a_deflated_change_bomb_is_refused_without_inflating_it() {
    refused_without_inflating(&chunk(2, &bomb()));
}

#[test]
fn a_document_column_bomb_is_refused_without_inflating_it() {
    refused_without_inflating(&document_with_column(&bomb()));
}

#[test]
fn honest_changes_and_documents_with_deflated_columns_pass_and_spend_the_budget() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut doc = automerge::AutoCommit::new();
    for i in 0..400 {
        doc.put(
            automerge::ROOT,
            format!("key {i}"),
            format!("value {i} of a version"),
        )
        .unwrap();
    }
    let saved = doc.save();
    // Columns over 256 bytes are deflated by automerge's save: this
    // document has some, so the walk inflated something.
    let mut budget = MAX_INFLATED_MESSAGE;
    assert!(inflation_within(&saved, &mut budget));
    assert!(
        budget < MAX_INFLATED_MESSAGE,
        "a deflated column was counted"
    );
    doc.put(automerge::ROOT, "one more", "value").unwrap();
    let change = doc.save_incremental();
    let parsed = parse_changes([saved.as_slice(), change.as_slice()]).unwrap();
    assert!(matches!(
        parsed.as_slice(),
        [Parsed::Other, Parsed::Change(_)]
    ));
    // One message's budget is shared by its chunks.
    let mut small = 64;
    assert!(!inflation_within(&saved, &mut small));
}
