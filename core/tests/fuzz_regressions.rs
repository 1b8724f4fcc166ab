//! Every input in `fuzz/regressions/<target>/` (seeds, and each crasher a
//! fuzzer ever found) replayed through the same entry point the fuzz target
//! calls: none may panic again. Runs in `cargo test`, so CI keeps them fixed
//! without a fuzzer.

use std::path::Path;

type Entry = fn(&[u8]);

const TARGETS: &[(&str, Entry)] = &[
    ("sealed_envelope", scr_core::fuzz_entry::sealed_envelope),
    (
        "role_profile_grant",
        scr_core::fuzz_entry::role_profile_grant,
    ),
    ("audit_event", scr_core::fuzz_entry::audit_event),
    ("audit_batch", scr_core::fuzz_entry::audit_batch),
    (
        "channel_hello_and_frames",
        scr_core::fuzz_entry::channel_hello_and_frames,
    ),
    ("channel_requests", scr_core::fuzz_entry::channel_requests),
    (
        "compartment_document",
        scr_core::fuzz_entry::compartment_document,
    ),
    ("nhs_number", scr_core::fuzz_entry::nhs_number),
];

/// Replays one target's inputs; returns how many there were.
pub fn replay(root: &Path, name: &str, entry: Entry) -> usize {
    let dir = root.join(name);
    let mut n = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|_| panic!("no {}", dir.display())) {
        let path = file.expect("a directory entry").path();
        let bytes = std::fs::read(&path).expect("a readable input");
        entry(&bytes);
        n += 1;
    }
    n
}

#[test]
fn every_input_a_fuzzer_found_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    for (name, entry) in TARGETS {
        let n = replay(&root, name, *entry);
        assert!(n > 0, "{name} has no regression inputs");
    }
}
