//! The static x25519 keys that identify a device or the server.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto::CryptoError;

/// A static key pair. The private half is zeroised on drop; no `Debug`.
pub struct StaticKeypair {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl StaticKeypair {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut private = Zeroizing::new([0u8; 32]);
        getrandom::fill(private.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(Self::from_private(*private))
    }

    pub fn from_private(private: [u8; 32]) -> Self {
        let secret = StaticSecret::from(private);
        let public = PublicKey::from(&secret).to_bytes();
        Self {
            private: Zeroizing::new(secret.to_bytes()),
            public,
        }
    }

    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    pub(crate) fn private(&self) -> &[u8] {
        self.private.as_ref()
    }

    /// The private key, for sealing at rest in the owner's store.
    pub fn private_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.private.clone()
    }
}

/// Lower-case hex of a public key: the samod peer id of its owner.
pub fn hex_key(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
