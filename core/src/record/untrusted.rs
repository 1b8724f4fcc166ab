//! Automerge bytes from outside, parsed with automerge's panics contained.
//!
//! automerge 0.12 can panic on crafted bytes instead of returning an error:
//! a long fuzzing run of `compartment_document` found an `unwrap` in hexane's
//! LEB128 decoder, reached from `Automerge::load` and `load_incremental`
//! through the bundle-chunk parser (the input is
//! `fuzz/regressions/compartment_document/crash-hexane-leb128-unwrap`). A
//! device's sync message carries change chunks that the server's samod
//! would parse the same way, so an enrolled device could crash a document's
//! actor with one message. Until automerge returns an error there, bytes
//! from outside are parsed here first and a panic counts as malformed.
//!
//! The same parser also allocates without bound: after the panic was
//! contained, the fuzzer found 49 bytes that make it ask for more than
//! 2 GB (a delta column's run length, decoded into a `Vec`). An allocation
//! failure aborts the process and cannot be contained. Both are in the
//! parser of *bundle* chunks, which SCR Sync never writes: its devices and
//! server run automerge's version-1 sync, whose messages carry change and
//! compressed-change chunks, and stored documents are document chunks. So
//! outside bytes holding any other kind of chunk are refused before
//! automerge sees them (`plain_chunks`).
//!
//! Deflated parts are inflated by automerge without a bound: a compressed
//! change chunk whole, a document chunk column by column, before any
//! checksum is read. A few kilobytes of deflate can ask for gigabytes, so
//! outside bytes are inflated here first, capped, into nothing, and
//! refused past a budget (`inflation_within`). Honest sync messages hold
//! change chunks (never deflated) and, when a peer sends a whole document,
//! a document chunk whose larger columns are deflated.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// The four bytes every Automerge chunk starts with.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk kinds SCR Sync reads from outside: a document, a change, a
/// deflated change. (3 is a bundle: see above.)
const PLAIN_KINDS: [u8; 3] = [0, 1, 2];

/// Whether `bytes` is a sequence of whole chunks of the plain kinds, read
/// from each chunk's header (magic, checksum, kind, LEB128 length) only.
pub fn plain_chunks(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        if bytes.len() < 9 || bytes[..4] != MAGIC || !PLAIN_KINDS.contains(&bytes[8]) {
            return false;
        }
        let mut rest = &bytes[9..];
        let Some(len) = uleb128(&mut rest) else {
            return false;
        };
        let Some(after) = usize::try_from(len).ok().and_then(|l| rest.get(l..)) else {
            return false;
        };
        bytes = after;
    }
    true
}

/// Most bytes the deflated parts of one sync message, all its chunks
/// together, may inflate to: twice the new versions one push may carry
/// (512 of 64 KiB), four times the largest message.
pub const MAX_INFLATED_MESSAGE: u64 = 64 * 1024 * 1024;
/// Most bytes the deflated parts of one stored or bundled document may
/// inflate to (a heavy record of 5,000 entries inflates to a few MB).
pub const MAX_INFLATED_DOCUMENT: u64 = 256 * 1024 * 1024;

/// The deflated-change kind, and the document kind, as chunk headers say.
const KIND_DOCUMENT: u8 = 0;
const KIND_DEFLATED_CHANGE: u8 = 2;

/// Whether the deflated parts of `bytes` (whole chunks, as `plain_chunks`
/// passed them) inflate within what is left of `budget`, which they spend.
/// Each is inflated with the decoder automerge uses, capped, into nothing:
/// no allocation, and a stream the decoder refuses is one automerge
/// refuses too.
pub fn inflation_within(mut bytes: &[u8], budget: &mut u64) -> bool {
    while !bytes.is_empty() {
        let Some((kind, body, rest)) = split_chunk(bytes) else {
            return false;
        };
        let within = match kind {
            KIND_DOCUMENT => document_within(body, budget).is_some(),
            KIND_DEFLATED_CHANGE => inflate_within(body, budget).is_some(),
            _ => true,
        };
        if !within {
            return false;
        }
        bytes = rest;
    }
    true
}

/// One chunk's kind, its body, and the bytes after it, read from its
/// header (magic and checksum unread).
pub fn split_chunk(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let kind = *bytes.get(8)?;
    let mut rest = bytes.get(9..)?;
    let len = usize::try_from(uleb128(&mut rest)?).ok()?;
    let (body, after) = rest.split_at_checked(len)?;
    Some((kind, body, after))
}

/// A document chunk's body: actors, heads, the change columns' and the
/// operation columns' metadata (spec and length each), then their data in
/// that order; a column whose spec has bit 3 set is deflated.
fn document_within(body: &[u8], budget: &mut u64) -> Option<()> {
    let mut r = body;
    for _ in 0..uleb128(&mut r)? {
        let len = usize::try_from(uleb128(&mut r)?).ok()?;
        r = r.get(len..)?;
    }
    let heads = usize::try_from(uleb128(&mut r)?).ok()?.checked_mul(32)?;
    r = r.get(heads..)?;
    let mut meta = r;
    for _ in 0..2 {
        for _ in 0..uleb128(&mut r)? {
            uleb128(&mut r)?;
            uleb128(&mut r)?;
        }
    }
    let mut data = r;
    for _ in 0..2 {
        for _ in 0..uleb128(&mut meta)? {
            let spec = uleb128(&mut meta)?;
            let len = usize::try_from(uleb128(&mut meta)?).ok()?;
            let (column, rest) = data.split_at_checked(len)?;
            data = rest;
            if spec & 0b1000 != 0 {
                inflate_within(column, budget)?;
            }
        }
    }
    Some(())
}

/// Inflates `deflated` into nothing, spending its size from `budget`;
/// `None` past the budget or when it is not a deflate stream.
fn inflate_within(deflated: &[u8], budget: &mut u64) -> Option<()> {
    use std::io::Read;
    let mut capped = flate2::bufread::DeflateDecoder::new(deflated).take(budget.saturating_add(1));
    let inflated = std::io::copy(&mut capped, &mut std::io::sink()).ok()?;
    *budget = budget.checked_sub(inflated)?;
    Some(())
}

/// Reads an unsigned LEB128 number (as Automerge's formats write them),
/// advancing `input`; `None` if it runs out or overflows 64 bits.
pub fn uleb128(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Runs a parse of outside bytes; `None` if it panicked. Only for work
/// whose results are dropped on a panic (nothing shared is left half done).
pub fn contained<T>(parse: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(parse)).ok()
}

/// One element of a sync message's changes, parsed once for every check
/// that reads it. (Nearly every element is a change: boxing it would add
/// an allocation to each for the rare other kind.)
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// One change chunk.
    Change(automerge::Change),
    /// Anything else that loads: a document chunk (a peer sending a whole
    /// document), a deflated change, or several chunks in one element.
    Other,
}

/// Every element of a sync message's changes, parsed; `None` when one does
/// not parse, would make automerge's parser panic, or the message's
/// deflated parts inflate past [`MAX_INFLATED_MESSAGE`]. A lone change
/// chunk is parsed as a change (what the push check reads); anything else
/// is loaded into a scratch document that is then dropped (missing
/// dependencies are fine: only the parse is checked).
pub fn parse_changes<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<Parsed>> {
    let mut budget = MAX_INFLATED_MESSAGE;
    let mut parsed = Vec::new();
    for chunk in chunks {
        if !plain_chunks(chunk) || !inflation_within(chunk, &mut budget) {
            return None;
        }
        let lone_change = matches!(split_chunk(chunk), Some((1, _, [])));
        let one = if lone_change {
            let change = contained(|| automerge::Change::try_from(chunk).ok())??;
            // Parsing does not check the chunk's checksum (the first bytes
            // of its hash), which automerge's load then refuses: a change
            // the rules judged would never merge, and its neighbours would.
            if chunk.get(4..8) != change.hash().0.get(..4) {
                return None;
            }
            Parsed::Change(change)
        } else {
            contained(|| automerge::Automerge::new().load_incremental(chunk).is_ok())?
                .then_some(Parsed::Other)?
        };
        parsed.push(one);
    }
    Some(parsed)
}

/// The changes of a message whose every element is one change, as parsed;
/// `None` when one is not (the checks then apply them to a copy).
pub fn lone_changes(parsed: Vec<Parsed>) -> Option<Vec<automerge::Change>> {
    parsed
        .into_iter()
        .map(|p| match p {
            Parsed::Change(change) => Some(change),
            Parsed::Other => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASHER: &[u8] =
        include_bytes!("../../../fuzz/regressions/compartment_document/crash-hexane-leb128-unwrap");

    #[test]
    fn the_fuzzers_crasher_is_malformed_not_a_panic() {
        assert!(parse_changes([CRASHER]).is_none());
        assert!(
            crate::record::CompartmentDoc::load(crate::record::Compartment::Core, CRASHER).is_err()
        );
    }

    #[test]
    fn automerge_still_panics_on_it_so_the_guard_is_still_needed() {
        // When this fails, automerge returns an error on this input: the
        // guard can go (see the module comment).
        let raw = catch_unwind(|| automerge::Automerge::load(CRASHER).is_ok());
        assert!(raw.is_err(), "automerge no longer panics here");
    }

    #[test]
    fn bundles_and_broken_headers_are_refused_by_the_header_walk() {
        assert!(!plain_chunks(CRASHER), "the crasher is a bundle");
        let oom = include_bytes!(
            "../../../fuzz/regressions/compartment_document/oom-bundle-delta-run-length"
        );
        assert!(!plain_chunks(oom));
        assert!(parse_changes([oom.as_slice()]).is_none());
        assert!(plain_chunks(&[]));
        assert!(!plain_chunks(&MAGIC), "truncated header");
        let mut doc = automerge::AutoCommit::new();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "k", "v").unwrap();
        let (saved, change) = (doc.save(), doc.save_incremental());
        assert!(plain_chunks(&saved));
        let mut both = saved.clone();
        both.extend_from_slice(&change);
        assert!(plain_chunks(&both), "a document then its changes");
        assert!(!plain_chunks(&saved[..saved.len() - 1]), "a cut chunk");
        let mut bundle = saved.clone();
        bundle[8] = 3;
        assert!(!plain_chunks(&bundle));
    }

    #[test]
    fn real_changes_parse() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "k", "v").unwrap();
        let change = doc.save_incremental();
        assert!(parse_changes([change.as_slice(), doc.save().as_slice()]).is_some());
        assert!(parse_changes([]).is_some());
        assert!(parse_changes([b"not automerge".as_slice()]).is_none());
        // A change whose checksum does not match its content: automerge's
        // load refuses it, so the guard does.
        let mut bad = change.clone();
        bad[4] ^= 0xff;
        assert!(parse_changes([change.as_slice()]).is_some());
        assert!(parse_changes([bad.as_slice()]).is_none());
    }
}
