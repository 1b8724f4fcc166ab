//! SCR Sync server. Today it holds the end-to-end demo of the on-device
//! replica; the sync server (samod over the encrypted store, Noise channel,
//! admin commands) is built here next.

pub mod demo;
