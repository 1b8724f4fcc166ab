//! The server's identity: its static Noise key (devices pin it at
//! enrollment) and its grant-signing key, both sealed in the server store
//! under a key-encryption key kept outside the database, in `server.key`.

use std::io::Write;
use std::path::Path;

use scr_core::Store;
use scr_core::channel::StaticKeypair;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::grant::GrantSigner;

use crate::serve::ServeError;

pub struct ServerIdentity {
    pub noise: StaticKeypair,
    pub signer: GrantSigner,
}

/// The key-encryption key file, created (mode 0600) on first start.
pub fn key_provider(data_dir: &Path) -> Result<StaticKeyProvider, ServeError> {
    let path = data_dir.join("server.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(key.as_mut()).map_err(|_| ServeError::Random)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .map_err(|e| ServeError::Io("create server.key", e.kind()))?;
            file.write_all(key.as_ref())
                .and_then(|()| file.sync_all())
                .map_err(|e| ServeError::Io("write server.key", e.kind()))?;
            key.to_vec()
        }
        Err(e) => return Err(ServeError::Io("read server.key", e.kind())),
    };
    let key = SecretKey::from_slice(&bytes).ok_or(ServeError::BadKeyFile)?;
    Ok(StaticKeyProvider::new(key))
}

fn load_or_make(store: &Store, name: &str) -> Result<[u8; 32], ServeError> {
    if let Some(secret) = store.secret(name)? {
        return secret
            .as_slice()
            .try_into()
            .map_err(|_| ServeError::BadKeyFile);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|_| ServeError::Random)?;
    store.put_secret(name, &seed)?;
    Ok(seed)
}

impl ServerIdentity {
    pub fn load_or_create(store: &Store) -> Result<Self, ServeError> {
        let noise = StaticKeypair::from_private(load_or_make(store, "server-noise-static")?);
        let signer = GrantSigner::from_seed(load_or_make(store, "server-grant-signing")?);
        Ok(Self { noise, signer })
    }
}
