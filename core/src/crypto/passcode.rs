//! Passcode verifiers: Argon2id (default parameters, random salt) as PHC
//! strings. Used for the device's offline unlock and the server's login.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// A verifier for `passcode`, or `None` if hashing failed.
pub fn hash_passcode(passcode: &str) -> Option<String> {
    Argon2::default()
        .hash_password(passcode.as_bytes())
        .ok()
        .map(|h| h.to_string())
}

/// Constant-time check of `passcode` against a verifier from [`hash_passcode`].
pub fn passcode_matches(passcode: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(passcode.as_bytes(), phc)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_passcode() {
        let phc = hash_passcode("2468").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(passcode_matches("2468", &phc));
        assert!(!passcode_matches("2469", &phc));
        assert!(!passcode_matches("2468", "not a phc string"));
    }
}
