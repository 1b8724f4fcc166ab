#![no_main]

// libfuzzer-sys's panic hook aborts on every panic, even one the code under
// test contains on purpose (automerge's parser panics on some crafted bytes:
// see scr_core::record::untrusted). A quiet hook lets a contained panic be
// handled; a panic that escapes still aborts in libfuzzer-sys's wrapper and
// counts as a crash.
libfuzzer_sys::fuzz_target!(
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| scr_core::fuzz_entry::compartment_document(data)
);
