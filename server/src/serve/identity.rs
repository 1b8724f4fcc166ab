//! The server's identity: its static Noise key (devices pin it at
//! enrollment) and its grant-signing key, both sealed in the server store
//! under a key-encryption key kept outside the database, in `server.key`.

use std::io::Write;
use std::path::Path;

use scr_core::Store;
use scr_core::channel::StaticKeypair;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::grant::GrantSigner;
use zeroize::Zeroizing;

use super::error::ServeError;

pub struct ServerIdentity {
    pub noise: StaticKeypair,
    pub signer: GrantSigner,
    signer_seed: Zeroizing<[u8; 32]>,
}

/// The key-encryption key file. Created on first start only: written to a
/// temporary file, synced and renamed (mode 0600), so a crash never leaves a
/// short key. If the store already exists without its key file, start fails
/// instead of silently making a key that cannot open it.
pub fn key_provider(data_dir: &Path) -> Result<StaticKeyProvider, ServeError> {
    key_provider_for(data_dir, data_dir.join("server.db").exists())
}

/// [`key_provider`] for a store kept elsewhere (PostgreSQL): `store_exists`
/// says whether that store was ever opened, so a node given no key file
/// fails instead of making a key that cannot open it.
pub fn key_provider_for(
    data_dir: &Path,
    store_exists: bool,
) -> Result<StaticKeyProvider, ServeError> {
    let path = data_dir.join("server.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if store_exists {
                return Err(ServeError::MissingKeyFile);
            }
            let mut key = Zeroizing::new([0u8; 32]);
            getrandom::fill(key.as_mut()).map_err(|_| ServeError::Random)?;
            let tmp = data_dir.join("server.key.tmp");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&tmp)
                .map_err(|e| ServeError::Io("create server.key", e.kind()))?;
            file.write_all(key.as_ref())
                .and_then(|()| file.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .and_then(|()| std::fs::File::open(data_dir).and_then(|d| d.sync_all()))
                .map_err(|e| ServeError::Io("write server.key", e.kind()))?;
            Zeroizing::new(key.to_vec())
        }
        Err(e) => return Err(ServeError::Io("read server.key", e.kind())),
    };
    let key = SecretKey::from_slice(&bytes).ok_or(ServeError::BadKeyFile)?;
    Ok(StaticKeyProvider::new(key))
}

/// The secret `name`, made once: two nodes starting together on one new
/// store keep the first one written (read and written in one transaction
/// that holds the name), never one each.
fn load_or_make(store: &Store, name: &str) -> Result<Zeroizing<[u8; 32]>, ServeError> {
    if let Some(secret) = store.secret(name)? {
        return as_seed(&secret);
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|_| ServeError::Random)?;
    store.update_secret(name, |old| old.unwrap_or(seed.as_ref()).to_vec())?;
    let kept = store.secret(name)?.ok_or(ServeError::BadKeyFile)?;
    as_seed(&kept)
}

fn as_seed(secret: &[u8]) -> Result<Zeroizing<[u8; 32]>, ServeError> {
    let arr: [u8; 32] = secret.try_into().map_err(|_| ServeError::BadKeyFile)?;
    Ok(Zeroizing::new(arr))
}

/// The root key of the audit archive (its sealing and lookup keys derive
/// from it), sealed in the server store like the identity keys.
pub fn archive_root(store: &Store) -> Result<SecretKey, ServeError> {
    Ok(SecretKey::from_bytes(*load_or_make(
        store,
        "audit-archive-root",
    )?))
}

impl ServerIdentity {
    pub fn load_or_create(store: &Store) -> Result<Self, ServeError> {
        let noise = StaticKeypair::from_private(*load_or_make(store, "server-noise-static")?);
        let signer_seed = load_or_make(store, "server-grant-signing")?;
        let signer = GrantSigner::from_seed(*signer_seed);
        Ok(Self {
            noise,
            signer,
            signer_seed,
        })
    }

    /// The signing seed, for signing on a blocking thread.
    pub(crate) fn signer_seed(&self) -> Zeroizing<[u8; 32]> {
        self.signer_seed.clone()
    }
}
