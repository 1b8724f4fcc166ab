//! The server's decoders of bytes from outside, for the fuzz targets in
//! `fuzz/` and the regression tests that replay what they found: samod wire
//! messages off a device's session, and an operator's record file.

/// One incoming samod message, read by the guard in front of samod.
pub fn sync_wire_message(data: &[u8]) {
    if let Some(incoming) = crate::guard::wire::parse(data) {
        let _ = crate::guard::wire::acceptable(&incoming);
        let _ = crate::guard::wire::document_with_changes(&incoming);
    }
}

/// `admin load-record --file`: the error names a place, never the data.
pub fn record_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = crate::records::parse(text)
    {
        let message = e.to_string();
        assert!(message.len() < 400, "an error echoes the input back");
    }
}
