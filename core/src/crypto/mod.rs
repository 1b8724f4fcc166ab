//! The only place that touches cryptographic primitives.
//!
//! - Sealing: XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) in a
//!   versioned envelope `[version][24-byte random nonce][ciphertext+tag]`.
//!   The associated data binds a ciphertext to its place (table and row
//!   identity), so a row moved, swapped or replayed elsewhere fails to open.
//! - Keyed hashes (BLAKE3 keyed mode) stand in for identifiers we must look
//!   up by (NHS numbers, document ids): the file never holds them in clear.
//! - Subkeys come from BLAKE3's `derive_key` KDF, one context string each.
//!
//! Keys are `ZeroizeOnDrop` and have no `Debug`.

mod envelope;
mod key_provider;
mod keys;
pub mod passcode;

pub use envelope::{ENVELOPE_OVERHEAD, ENVELOPE_V1, open, seal};
pub use key_provider::{KeyProvider, KeyProviderError, PassphraseKeyProvider, StaticKeyProvider};
pub use keys::{LookupKey, Ref, SecretKey};

/// Why sealed bytes did not open. Names what failed, never the contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed value is truncated")]
    Truncated,
    #[error("sealed value has unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("sealed value failed authentication (wrong key, tampered, or moved)")]
    Authentication,
    #[error("the system random number generator failed")]
    Random,
}
