//! Key material. Random keys come from the OS generator; subkeys from
//! BLAKE3's KDF with a fixed context string per purpose.

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::CryptoError;

/// A 256-bit symmetric key. No `Debug`, no `Clone`: copies are explicit.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn random() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Accepts exactly 32 bytes (for key material arriving over the FFI).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A subkey for one purpose. `context` must be a hard-coded, globally
    /// unique string (BLAKE3 `derive_key` requirement).
    pub fn derive(&self, context: &str) -> SecretKey {
        SecretKey(blake3::derive_key(context, &self.0))
    }

    pub fn duplicate(&self) -> SecretKey {
        SecretKey(self.0)
    }
}

/// A keyed hash standing in for an identifier in the database.
pub type Ref = [u8; 16];

/// A key used only for keyed hashes of identifiers.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct LookupKey([u8; 32]);

impl LookupKey {
    pub fn from_secret(key: &SecretKey, context: &str) -> Self {
        Self(blake3::derive_key(context, key.expose()))
    }

    /// A keyed hash over length-prefixed parts, so ("ab","c") != ("a","bc").
    pub fn hash(&self, parts: &[&[u8]]) -> Ref {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }
}
