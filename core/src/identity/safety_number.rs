//! Safety numbers: a short, stable, human-comparable rendering of a public key.
//!
//! Format (version 1, also in `docs/protocol.md`): `H = SHA-512` iterated
//! [`ITERATIONS`] times, starting from `"conclave safety number v1" ‖ public key` and
//! feeding `H ‖ public key` back each round. The first 30 bytes of the result are cut into
//! six 5-byte big-endian integers; each is reduced modulo 100 000 and printed as five
//! digits. The six groups are joined by spaces: `04213 88120 ...` (30 digits, ~99 bits).
//! The iteration count makes a search for a colliding key costlier, as in Signal.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

/// Domain-separation label of the safety number derivation.
pub const SAFETY_NUMBER_LABEL: &[u8] = b"conclave safety number v1";
/// How many times the hash is iterated.
pub const ITERATIONS: usize = 5200;
/// Groups of five digits in a safety number.
pub const GROUPS: usize = 6;

/// Thirty decimal digits that identify one public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SafetyNumber(DigitGroups<GROUPS>);

/// `N` groups of five decimal digits cut from bytes: the human-comparable rendering shared
/// by safety numbers and meeting security codes
/// ([`SecurityCode`](crate::group::SecurityCode)). The first `5 × N` bytes are cut into
/// 5-byte big-endian integers, each reduced modulo 100 000; shown as five-digit groups
/// joined by spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DigitGroups<const N: usize>([u32; N]);

impl<const N: usize> DigitGroups<N> {
    /// The groups of the first `5 × N` bytes of `bytes` (a group without its five bytes
    /// stays zero).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        let mut groups = [0u32; N];
        for (group, chunk) in groups.iter_mut().zip(bytes.chunks_exact(5)) {
            let value = chunk
                .iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
            *group = u32::try_from(value % 100_000).expect("a value below 100000 fits in u32");
        }
        Self(groups)
    }
}

impl<const N: usize> std::fmt::Display for DigitGroups<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, group) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{group:05}")?;
        }
        Ok(())
    }
}

impl SafetyNumber {
    /// Computes the safety number of a public key.
    pub fn of(key: &VerifyingKey) -> Self {
        let public = key.as_bytes();
        let mut digest = Sha512::new()
            .chain_update(SAFETY_NUMBER_LABEL)
            .chain_update(public)
            .finalize();
        for _ in 1..ITERATIONS {
            digest = Sha512::new()
                .chain_update(digest)
                .chain_update(public)
                .finalize();
        }
        Self(DigitGroups::from_bytes(&digest))
    }
}

impl std::fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafetyNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_groups_are_five_digits_each() {
        // 0x00_0000_0007 = 7; 0xff_ffff_ffff mod 100000 = 27775; no bytes left: zero.
        let mut bytes = [0u8; 10];
        bytes[4] = 7;
        bytes[5..].copy_from_slice(&[0xff; 5]);
        assert_eq!(
            DigitGroups::<3>::from_bytes(&bytes).to_string(),
            "00007 27775 00000"
        );
    }
    use ed25519_dalek::SigningKey;

    #[test]
    fn format_is_six_groups_of_five_digits() {
        let key = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let text = SafetyNumber::of(&key).to_string();
        let groups: Vec<&str> = text.split(' ').collect();
        assert_eq!(groups.len(), 6);
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        );
    }

    #[test]
    fn is_stable_across_releases() {
        // Known answer: changing the derivation would silently break every user's
        // verified contacts, so this value is pinned.
        let key = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        assert_eq!(SafetyNumber::of(&key).to_string(), PINNED_FOR_KEY_OF_SEVENS);
    }

    #[test]
    fn differs_between_keys() {
        let a = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        let b = SigningKey::from_bytes(&[2u8; 32]).verifying_key();
        assert_ne!(SafetyNumber::of(&a), SafetyNumber::of(&b));
    }

    const PINNED_FOR_KEY_OF_SEVENS: &str = "91345 63597 89032 45315 58467 18165";
}
