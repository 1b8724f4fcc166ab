//! The app's key provider, a foreign trait: Android Keystore or iOS
//! Keychain supplies the 32-byte key-encryption key. If it throws, the
//! engine gets a typed error and stays usable for a later try.

use scr_core::crypto::{self, SecretKey};

use scr_core::crypto::KeyProviderError as CoreKeyError;

/// Why the app's key provider gave no key.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum KeyProviderError {
    /// The keystore is locked or the key is missing.
    #[error("the key is not available")]
    Unavailable,
    #[error("the key provider failed: {detail}")]
    Failed { detail: String },
}

// A foreign implementation that throws something else arrives as this.
impl From<uniffi::UnexpectedUniFFICallbackError> for KeyProviderError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        KeyProviderError::Failed { detail: e.reason }
    }
}

#[uniffi::export(foreign)]
pub trait KeyProvider: Send + Sync {
    /// The 32-byte key-encryption key.
    fn key_encryption_key(&self) -> Result<Vec<u8>, KeyProviderError>;
}

/// The foreign provider as the core's.
pub(crate) struct Foreign(pub std::sync::Arc<dyn KeyProvider>);

impl crypto::KeyProvider for Foreign {
    fn key_encryption_key(&self) -> Result<SecretKey, CoreKeyError> {
        let bytes = zeroize::Zeroizing::new(self.0.key_encryption_key().map_err(|e| match e {
            KeyProviderError::Unavailable => CoreKeyError::Unavailable,
            KeyProviderError::Failed { detail } => CoreKeyError::Failed(detail),
        })?);
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CoreKeyError::BadKey)?;
        Ok(SecretKey::from_bytes(key))
    }
}
