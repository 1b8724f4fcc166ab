//! The NHS number: ten digits whose last is a Modulus 11 check digit.
//!
//! Neither `Debug` nor the error type ever prints the digits: an NHS number is
//! patient-identifying and must not reach a log line, a panic or an FFI error.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated NHS number. Construct with [`NhsNumber::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber([u8; 10]);

/// Why a string is not an NHS number. Carries no digits from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number has 10 digits; this input has {0}")]
    WrongLength(usize),
    #[error("an NHS number holds only digits and spaces")]
    NotADigit,
    #[error("the check digit does not match (Modulus 11)")]
    CheckDigitMismatch,
    #[error("no valid check digit exists for these nine digits")]
    NoValidCheckDigit,
}

impl NhsNumber {
    /// Parses ten digits, allowing spaces anywhere (as printed: `943 476 5919`).
    pub fn parse(input: &str) -> Result<Self, NhsNumberError> {
        let mut digits = [0u8; 10];
        let mut count = 0usize;
        for ch in input.chars() {
            if ch == ' ' {
                continue;
            }
            let digit = ch.to_digit(10).ok_or(NhsNumberError::NotADigit)?;
            if count < 10 {
                // to_digit(10) is at most 9, so the cast is lossless.
                digits[count] = digit as u8;
            }
            count += 1;
        }
        if count != 10 {
            return Err(NhsNumberError::WrongLength(count));
        }
        match check_digit(&digits) {
            None => Err(NhsNumberError::NoValidCheckDigit),
            Some(check) if check != digits[9] => Err(NhsNumberError::CheckDigitMismatch),
            Some(_) => Ok(Self(digits)),
        }
    }

    /// The ten digits with no spaces, for keyed hashing and wire formats.
    pub fn digits(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }

    /// True for the range 999 000 0000 to 999 999 9999, never issued to a person.
    pub fn is_test_range(&self) -> bool {
        self.0[..3] == [9, 9, 9]
    }
}

/// Modulus 11: weights 10..=2 over the first nine digits; `None` when the
/// computed check is 10, which makes the number invalid.
fn check_digit(digits: &[u8; 10]) -> Option<u8> {
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10u32).rev())
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        check => u8::try_from(check).ok(),
    }
}

impl fmt::Display for NhsNumber {
    /// Formats as `943 476 5919`. Only call where showing the number is intended.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits();
        write!(f, "{} {} {}", &d[..3], &d[3..6], &d[6..])
    }
}

impl fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(<redacted>)")
    }
}

impl FromStr for NhsNumber {
    type Err = NhsNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for NhsNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.digits())
    }
}

impl<'de> Deserialize<'de> for NhsNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        NhsNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_example_from_the_domain_notes() {
        let n = NhsNumber::parse("943 476 5919").unwrap();
        assert_eq!(n.digits(), "9434765919");
        assert_eq!(n.to_string(), "943 476 5919");
        assert!(!n.is_test_range());
        assert_eq!(NhsNumber::parse("9434765919").unwrap(), n);
    }

    #[test]
    fn printed_numbers_that_fail_the_check_are_refused() {
        assert_eq!(
            NhsNumber::parse("9999999998"),
            Err(NhsNumberError::CheckDigitMismatch)
        );
        assert_eq!(
            NhsNumber::parse("9990001234"),
            Err(NhsNumberError::CheckDigitMismatch)
        );
    }

    #[test]
    fn malformed_input_gets_a_typed_error() {
        assert_eq!(NhsNumber::parse(""), Err(NhsNumberError::WrongLength(0)));
        assert_eq!(
            NhsNumber::parse("943 476 591"),
            Err(NhsNumberError::WrongLength(9))
        );
        assert_eq!(
            NhsNumber::parse("94347659190"),
            Err(NhsNumberError::WrongLength(11))
        );
        assert_eq!(
            NhsNumber::parse("943-476-5919"),
            Err(NhsNumberError::NotADigit)
        );
        assert_eq!(
            NhsNumber::parse("９４３４７６５９１９"),
            Err(NhsNumberError::NotADigit)
        );
    }

    #[test]
    fn a_check_of_ten_means_no_number_exists() {
        // 000000006x: sum = 6*2 = 12, r = 1, check = 10.
        assert_eq!(
            NhsNumber::parse("0000000060"),
            Err(NhsNumberError::NoValidCheckDigit)
        );
    }

    #[test]
    fn debug_and_errors_never_show_the_digits() {
        let n = NhsNumber::parse("9434765919").unwrap();
        assert!(!format!("{n:?}").contains("943"));
        let err = NhsNumber::parse("9434765918").unwrap_err();
        assert!(!err.to_string().contains("943"));
    }

    #[test]
    fn serde_round_trip_validates() {
        let n = NhsNumber::parse("9434765919").unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"9434765919\"");
        assert_eq!(serde_json::from_str::<NhsNumber>(&json).unwrap(), n);
        assert!(serde_json::from_str::<NhsNumber>("\"9434765918\"").is_err());
    }

    proptest! {
        #[test]
        fn exactly_one_digit_completes_any_valid_nine(prefix in proptest::array::uniform9(0u8..10)) {
            let mut digits = [0u8; 10];
            digits[..9].copy_from_slice(&prefix);
            let valid: Vec<u8> = (0..10u8)
                .filter(|last| {
                    digits[9] = *last;
                    let s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
                    NhsNumber::parse(&s).is_ok()
                })
                .collect();
            prop_assert!(valid.len() <= 1);
        }

        #[test]
        fn display_then_parse_round_trips(prefix in proptest::array::uniform9(0u8..10)) {
            let mut digits = [0u8; 10];
            digits[..9].copy_from_slice(&prefix);
            if let Some(check) = check_digit(&digits) {
                digits[9] = check;
                let s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
                let n = NhsNumber::parse(&s).unwrap();
                prop_assert_eq!(NhsNumber::parse(&n.to_string()).unwrap(), n);
            }
        }
    }
}
