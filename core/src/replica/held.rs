//! One held compartment document: what of it is on disk, and when the next
//! write compacts it into a snapshot.

use automerge::ChangeHash;

use crate::record::CompartmentDoc;
use crate::store::{ChunkKey, DocumentInfo};

/// The next write replaces a document's chunks with one snapshot once there
/// are this many chunks (samod compacts at a similar count)...
const COMPACT_AFTER_CHUNKS: usize = 32;
/// ...or once loose changes reach this fraction of the snapshot's size, which
/// keeps bytes on disk within 1.25x of Automerge's own `save()` while small
/// documents (cheap to save) compact often and large ones rarely.
const COMPACT_AT_FRACTION: usize = 4;

pub(super) struct HeldDoc {
    pub(super) info: DocumentInfo,
    pub(super) doc: CompartmentDoc,
    /// Heads already persisted: changes after these still need writing.
    pub(super) saved_heads: Vec<ChangeHash>,
    /// Chunk keys on disk that this in-memory document includes.
    pub(super) on_disk: Vec<ChunkKey>,
    /// Bytes of snapshots and of loose changes among `on_disk`.
    pub(super) snapshot_bytes: usize,
    pub(super) change_bytes: usize,
}

impl HeldDoc {
    pub(super) fn new(
        info: DocumentInfo,
        mut doc: CompartmentDoc,
        snapshot: ChunkKey,
        snapshot_bytes: usize,
    ) -> Self {
        let saved_heads = doc.heads();
        Self {
            info,
            doc,
            saved_heads,
            on_disk: vec![snapshot],
            snapshot_bytes,
            change_bytes: 0,
        }
    }

    pub(super) fn should_compact(&self, new_changes: usize, new_bytes: usize) -> bool {
        self.on_disk.len() + new_changes > COMPACT_AFTER_CHUNKS
            || (self.change_bytes + new_bytes) * COMPACT_AT_FRACTION > self.snapshot_bytes
    }
}
