#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scr_server::fuzz_entry::sync_wire_message(data));
