//! The meeting security code: equal codes at two members prove they share the same MLS
//! epoch (same members, same keys), so nobody sits in the middle.
//!
//! Format, version 1 (also in `docs/protocol.md`): the first 20 bytes of the MLS epoch
//! authenticator, cut into four 5-byte big-endian integers, each reduced modulo 100 000 and
//! printed as five digits; groups joined by spaces (`01234 56789 01234 56789`, ~66 bits).
//! It changes with every epoch, so with every membership change.

use crate::identity::DigitGroups;

/// Four groups of five digits, rendered like a safety number.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecurityCode(DigitGroups<4>);

impl SecurityCode {
    /// Derives the code from an epoch authenticator (at least 20 bytes).
    pub fn from_authenticator(authenticator: &[u8]) -> Self {
        Self(DigitGroups::from_bytes(authenticator))
    }
}

impl std::fmt::Display for SecurityCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for SecurityCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecurityCode({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // 0x00_0000_0001 = 1, 0x00_0001_86a0 = 100000 -> 0, 0xff_ffff_ffff mod 100000 = 27775.
        let mut auth = [0u8; 32];
        auth[4] = 1;
        auth[7..10].copy_from_slice(&[0x01, 0x86, 0xa0]);
        auth[10..15].copy_from_slice(&[0xff; 5]);
        assert_eq!(
            SecurityCode::from_authenticator(&auth).to_string(),
            "00001 00000 27775 00000"
        );
    }
}
