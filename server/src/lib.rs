//! SCR Sync server: samod over the encrypted SQLite store, devices on the
//! Noise channel, a directory of enrolled devices, health and metrics, and
//! the end-to-end demo.

pub mod access_log;
pub mod actors;
pub mod archive;
pub mod audit;
pub mod catalogue;
#[cfg(feature = "demo")]
pub mod demo;
pub mod directory;
pub mod encounters;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod grants;
pub mod guard;
pub mod holdings;
pub mod layout;
pub mod login;
pub mod operators;
pub mod outside_writes;
pub mod owners;
pub mod patients;
pub mod pg;
pub mod policy;
pub mod privacy;
pub mod rate;
pub mod records;
pub mod refusals;
pub mod repair;
pub mod request;
pub mod sent_log;
pub mod serve;
pub mod sqlite;
pub mod users;
