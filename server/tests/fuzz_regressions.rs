//! The server's fuzz targets' inputs (`fuzz/regressions/<target>/`: seeds
//! and every crasher found) replayed through the same entry points.

use std::path::Path;

type Entry = fn(&[u8]);

#[test]
fn every_input_a_fuzzer_found_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let targets: [(&str, Entry); 2] = [
        (
            "sync_wire_message",
            scr_server::fuzz_entry::sync_wire_message,
        ),
        ("record_file", scr_server::fuzz_entry::record_file),
    ];
    for (name, entry) in targets {
        let mut n = 0;
        for file in std::fs::read_dir(root.join(name)).expect("the target's inputs") {
            let bytes = std::fs::read(file.expect("an entry").path()).expect("readable");
            entry(&bytes);
            n += 1;
        }
        assert!(n > 0, "{name} has no regression inputs");
    }
}
