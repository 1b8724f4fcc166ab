#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scr_core::fuzz_entry::sealed_envelope(data));
