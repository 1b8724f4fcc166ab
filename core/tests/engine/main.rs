//! The engine on a device: grants verified offline, unlock and lock-out,
//! the three access tests and patient choices applied, every decision
//! audited before anything is released, and retention forgetting patients.
#![allow(clippy::unwrap_used)]

mod support;

mod access;
mod audit_queue;
mod honest_pushes;
mod retention;
mod sessions;
mod sync_status;
mod writes;
