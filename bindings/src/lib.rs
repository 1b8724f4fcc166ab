//! The UniFFI facade over `scr-core` lands here (Kotlin, Swift, Python).
//! Until then this crate only pins the dependency edge: bindings depend on
//! the core and nothing depends on the bindings.

pub use scr_core::NhsNumber;
