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

/// Checks passcodes one at a time with working memory kept between checks:
/// a login slot's. Argon2id's default parameters take 19 MiB a check;
/// allocated afresh each time, that memory is what a busy server's
/// allocator kept resident after the login ended. The same check as
/// [`passcode_matches`] (the verifier's own algorithm, version, parameters
/// and salt; outputs compared in constant time), through the argon2
/// crate's own `hash_password_into_with_memory`.
#[derive(Default)]
pub struct PasscodeChecker {
    memory: Vec<argon2::Block>,
}

impl PasscodeChecker {
    pub fn matches(&mut self, passcode: &str, phc: &str) -> bool {
        self.check(passcode, phc).unwrap_or(false)
    }

    fn check(&mut self, passcode: &str, phc: &str) -> Option<bool> {
        let hash = argon2::PasswordHash::new(phc).ok()?;
        let (salt, expected) = (hash.salt.as_ref()?, hash.hash.as_ref()?);
        let params = argon2::Params::try_from(&hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(hash.algorithm.as_str()).ok()?;
        let version = match hash.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let blocks = params.block_count();
        if self.memory.len() < blocks {
            self.memory.resize(blocks, argon2::Block::default());
        }
        let mut out = zeroize::Zeroizing::new(vec![0u8; expected.len()]);
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                passcode.as_bytes(),
                salt,
                &mut out,
                &mut self.memory[..blocks],
            )
            .ok()?;
        let computed = argon2::password_hash::phc::Output::new(&out).ok()?;
        // `Output`'s equality is constant-time.
        Some(&computed == expected)
    }
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

    #[test]
    fn a_checker_with_kept_memory_agrees_with_the_plain_check() {
        let mut checker = PasscodeChecker::default();
        let phc = hash_passcode("2468").unwrap();
        // Twice each: the second check runs in the memory the first left.
        for _ in 0..2 {
            assert!(checker.matches("2468", &phc));
            assert!(!checker.matches("2469", &phc));
        }
        assert!(!checker.matches("2468", "not a phc string"));
        // Another verifier's parameters (a smaller memory cost): the kept
        // memory is larger than it needs, and the answer is the same.
        let small = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(4096, 3, 1, None).unwrap(),
        )
        .hash_password(b"1357")
        .unwrap()
        .to_string();
        assert!(passcode_matches("1357", &small));
        assert!(checker.matches("1357", &small));
        assert!(!checker.matches("1358", &small));
    }
}
