//! The sealed-value envelope, format version 1:
//! `[0x01][24-byte nonce][XChaCha20-Poly1305 ciphertext with 16-byte tag]`.
//! The version byte is authenticated too (it is part of the associated data).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{CryptoError, SecretKey};

pub const ENVELOPE_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const AAD_DOMAIN: &[u8] = b"scr-sync/sealed";

/// Seals `plaintext` under `key`, bound to `place` (e.g. table name and row key).
pub fn seal(key: &SecretKey, place: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let nonce = XNonce::from(nonce);
    let aad = associated_data(ENVELOPE_V1, place);
    let cipher = cipher(key);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Authentication)?;
    let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + plaintext.len());
    out.push(ENVELOPE_V1);
    out.extend_from_slice(nonce.as_slice());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens an envelope made by [`seal`] with the same key and place.
pub fn open(key: &SecretKey, place: &[&[u8]], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Truncated)?;
    if version != ENVELOPE_V1 {
        return Err(CryptoError::UnknownVersion(version));
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Truncated)?;
    let aad = associated_data(version, place);
    cipher(key)
        .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
        .map_err(|_| CryptoError::Authentication)
}

fn cipher(key: &SecretKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*key.expose()).into())
}

/// Length-prefixed parts, so no two different places share associated data.
fn associated_data(version: u8, place: &[&[u8]]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.push(version);
    for part in place {
        aad.extend_from_slice(&(part.len() as u64).to_le_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes([7u8; 32])
    }

    #[test]
    fn opens_what_it_sealed() {
        let sealed = seal(&key(), &[b"chunks", b"row1"], b"penicillin").unwrap();
        assert_eq!(sealed.len(), ENVELOPE_OVERHEAD + 10);
        assert_eq!(sealed[0], ENVELOPE_V1);
        assert_eq!(
            open(&key(), &[b"chunks", b"row1"], &sealed).unwrap(),
            b"penicillin"
        );
    }

    #[test]
    fn a_moved_row_does_not_open() {
        let sealed = seal(&key(), &[b"chunks", b"row1"], b"x").unwrap();
        assert_eq!(
            open(&key(), &[b"chunks", b"row2"], &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open(&key(), &[b"records", b"row1"], &sealed),
            Err(CryptoError::Authentication)
        );
        // Length prefixes: the same bytes split differently are another place.
        assert_eq!(
            open(&key(), &[b"chunksrow1"], &sealed),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn wrong_key_truncation_and_unknown_version_are_told_apart() {
        let sealed = seal(&key(), &[b"t"], b"x").unwrap();
        let other = SecretKey::from_bytes([8u8; 32]);
        assert_eq!(
            open(&other, &[b"t"], &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open(&key(), &[b"t"], &sealed[..20]),
            Err(CryptoError::Truncated)
        );
        assert_eq!(open(&key(), &[b"t"], &[]), Err(CryptoError::Truncated));
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert_eq!(
            open(&key(), &[b"t"], &v2),
            Err(CryptoError::UnknownVersion(2))
        );
    }

    #[test]
    fn nonces_differ_between_seals() {
        let a = seal(&key(), &[b"t"], b"same").unwrap();
        let b = seal(&key(), &[b"t"], b"same").unwrap();
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn round_trip_any_plaintext(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let sealed = seal(&key(), &[b"p"], &data).unwrap();
            prop_assert_eq!(open(&key(), &[b"p"], &sealed).unwrap(), data);
        }

        #[test]
        fn any_single_bit_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 1..64), bit in 0usize..8, pos in any::<prop::sample::Index>()) {
            let mut sealed = seal(&key(), &[b"p"], &data).unwrap();
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(open(&key(), &[b"p"], &sealed).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = open(&key(), &[b"p"], &bytes);
        }
    }
}
