//! The meeting security code: equal codes at two members prove they share the same MLS
//! epoch (same members, same keys), so nobody sits in the middle.
//!
//! Format, version 1 (also in `docs/protocol.md`): the first 20 bytes of the MLS epoch
//! authenticator, cut into four 5-byte big-endian integers, each reduced modulo 100 000 and
//! printed as five digits; groups joined by spaces (`01234 56789 01234 56789`, ~66 bits).
//! It changes with every epoch, so with every membership change.

/// Four groups of five digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecurityCode([u32; 4]);

impl SecurityCode {
    /// Derives the code from an epoch authenticator (at least 20 bytes).
    pub fn from_authenticator(authenticator: &[u8]) -> Self {
        let mut groups = [0u32; 4];
        for (group, chunk) in groups.iter_mut().zip(authenticator.chunks_exact(5)) {
            let value = chunk
                .iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
            *group = u32::try_from(value % 100_000).expect("a value below 100000 fits in u32");
        }
        Self(groups)
    }
}

impl std::fmt::Display for SecurityCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a:05} {b:05} {c:05} {d:05}")
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
