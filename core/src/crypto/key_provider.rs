//! Where the key-encryption key (KEK) comes from. On phones the app supplies
//! it from the Android Keystore or iOS Keychain; the CLI and tests derive it
//! from a passphrase with Argon2id.

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};

use super::SecretKey;

/// Why the key provider could not supply a key. The store maps this to a
/// "locked" error and stays usable for a later attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProviderError {
    #[error("the key is not available (keystore locked or key missing)")]
    Unavailable,
    #[error("the key provider returned a key of the wrong length")]
    BadKey,
    #[error("the key provider failed: {0}")]
    Failed(String),
}

/// Supplies the 32-byte key-encryption key that wraps the store's own keys.
pub trait KeyProvider: Send + Sync {
    fn key_encryption_key(&self) -> Result<SecretKey, KeyProviderError>;
}

/// A fixed key held in memory (tests, and apps that keep raw key bytes in a
/// keychain item).
pub struct StaticKeyProvider(SecretKey);

impl StaticKeyProvider {
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }
}

impl KeyProvider for StaticKeyProvider {
    fn key_encryption_key(&self) -> Result<SecretKey, KeyProviderError> {
        Ok(self.0.duplicate())
    }
}

/// Argon2id over a passphrase and a per-store random salt. Parameters are
/// OWASP's minimum for Argon2id (19 MiB, 2 passes, 1 lane).
pub struct PassphraseKeyProvider {
    key: SecretKey,
}

const SALT_LEN: usize = 16;

impl PassphraseKeyProvider {
    pub fn derive(passphrase: &str, salt: &[u8]) -> Result<Self, KeyProviderError> {
        let params = Params::new(
            Params::DEFAULT_M_COST,
            Params::DEFAULT_T_COST,
            Params::DEFAULT_P_COST,
            Some(32),
        )
        .map_err(|_| KeyProviderError::Failed("argon2 parameters".into()))?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), salt, &mut out)
            .map_err(|_| KeyProviderError::Failed("argon2 derivation".into()))?;
        let key = SecretKey::from_bytes(out);
        zeroize::Zeroize::zeroize(&mut out);
        Ok(Self { key })
    }

    /// Reads the salt from `salt_path`, creating it (random) on first use.
    pub fn with_salt_file(passphrase: &str, salt_path: &Path) -> Result<Self, KeyProviderError> {
        let salt = match std::fs::read(salt_path) {
            Ok(salt) if salt.len() == SALT_LEN => salt,
            Ok(_) => return Err(KeyProviderError::Failed("salt file is damaged".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut salt = vec![0u8; SALT_LEN];
                getrandom::fill(&mut salt)
                    .map_err(|_| KeyProviderError::Failed("random salt".into()))?;
                std::fs::write(salt_path, &salt)
                    .map_err(|e| KeyProviderError::Failed(format!("writing salt: {}", e.kind())))?;
                salt
            }
            Err(e) => {
                return Err(KeyProviderError::Failed(format!(
                    "reading salt: {}",
                    e.kind()
                )));
            }
        };
        Self::derive(passphrase, &salt)
    }
}

impl KeyProvider for PassphraseKeyProvider {
    fn key_encryption_key(&self) -> Result<SecretKey, KeyProviderError> {
        Ok(self.key.duplicate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_passphrase_and_salt_give_the_same_key() {
        let a = PassphraseKeyProvider::derive("correct horse", b"0123456789abcdef").unwrap();
        let b = PassphraseKeyProvider::derive("correct horse", b"0123456789abcdef").unwrap();
        let c = PassphraseKeyProvider::derive("correct horsf", b"0123456789abcdef").unwrap();
        let d = PassphraseKeyProvider::derive("correct horse", b"0123456789abcdeX").unwrap();
        let k = |p: &PassphraseKeyProvider| *p.key_encryption_key().unwrap().expose();
        assert_eq!(k(&a), k(&b));
        assert_ne!(k(&a), k(&c));
        assert_ne!(k(&a), k(&d));
    }

    #[test]
    fn salt_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt");
        let a = PassphraseKeyProvider::with_salt_file("pw", &path).unwrap();
        let salt = std::fs::read(&path).unwrap();
        assert_eq!(salt.len(), SALT_LEN);
        let b = PassphraseKeyProvider::with_salt_file("pw", &path).unwrap();
        assert_eq!(
            a.key_encryption_key().unwrap().expose(),
            b.key_encryption_key().unwrap().expose()
        );
        std::fs::write(&path, b"short").unwrap();
        assert!(PassphraseKeyProvider::with_salt_file("pw", &path).is_err());
    }
}
