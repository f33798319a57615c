//! Media keys from the MLS group, as RFC 9605 §5.2 describes:
//!
//! ```text
//! sframe_epoch_secret      = MLS-Exporter("SFrame 1.0 Base Key", "", Nh)
//! sender_base_key[index]   = HKDF-Expand(sframe_epoch_secret, encode_big_endian(index, 4), Nh)
//! ```
//!
//! with `Nh = 32` (SHA-256 suites). [`MediaKeys`] keeps the current epoch's secret and the
//! previous one for a [grace window](MediaKeys::GRACE), so frames sealed just before a
//! membership change still open just after it. Time is an input (sans-IO).
//! Secrets never appear in `Debug` output.

use std::time::{Duration, Instant};

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Exporter label of RFC 9605 §5.2.
pub const SFRAME_EXPORTER_LABEL: &str = "SFrame 1.0 Base Key";
/// Length of an epoch secret and of a sender base key (`Nh` of SHA-256).
pub const NH: usize = 32;

/// One epoch's media secret.
#[derive(Clone)]
struct EpochSecret {
    epoch: u64,
    secret: Zeroizing<[u8; NH]>,
}

/// Current and previous epoch media secrets.
#[derive(Clone, Default)]
pub struct MediaKeys {
    current: Option<EpochSecret>,
    previous: Option<(EpochSecret, Instant)>,
}

impl std::fmt::Debug for MediaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaKeys")
            .field("current_epoch", &self.current.as_ref().map(|c| c.epoch))
            .field(
                "previous_epoch",
                &self.previous.as_ref().map(|(p, _)| p.epoch),
            )
            .finish()
    }
}

impl MediaKeys {
    /// How long the previous epoch's keys stay usable after a change.
    pub const GRACE: Duration = Duration::from_secs(3);

    /// Installs a new epoch's exporter output; the old one stays for [`Self::GRACE`].
    pub fn install(&mut self, now: Instant, epoch: u64, exporter_secret: [u8; NH]) {
        if let Some(old) = self.current.take()
            && old.epoch != epoch
        {
            self.previous = Some((old, now + Self::GRACE));
        }
        self.current = Some(EpochSecret {
            epoch,
            secret: Zeroizing::new(exporter_secret),
        });
    }

    /// The current epoch, if any keys are installed.
    pub fn current_epoch(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.epoch)
    }

    /// The base key of `sender` (MLS leaf index) in `epoch`, if that epoch is current or
    /// still within its grace window at `now`.
    pub fn sender_base_key(
        &self,
        now: Instant,
        epoch: u64,
        sender: u32,
    ) -> Option<Zeroizing<[u8; NH]>> {
        let secret = match (&self.current, &self.previous) {
            (Some(current), _) if current.epoch == epoch => &current.secret,
            (_, Some((previous, until))) if previous.epoch == epoch && now < *until => {
                &previous.secret
            }
            _ => return None,
        };
        Some(sender_base_key(secret, sender))
    }
}

/// `HKDF-Expand(sframe_epoch_secret, encode_big_endian(index, 4), Nh)`.
pub fn sender_base_key(epoch_secret: &[u8; NH], sender: u32) -> Zeroizing<[u8; NH]> {
    let hkdf =
        Hkdf::<Sha256>::from_prk(epoch_secret).expect("a 32-byte PRK is valid for HKDF-SHA256");
    let mut out = Zeroizing::new([0u8; NH]);
    hkdf.expand(&sender.to_be_bytes(), out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_epoch_keys_live_for_the_grace_window_only() {
        #[allow(clippy::disallowed_methods)] // one arbitrary origin for simulated time
        let t0 = Instant::now();
        let mut keys = MediaKeys::default();
        keys.install(t0, 1, [1; NH]);
        assert!(keys.sender_base_key(t0, 1, 0).is_some());
        keys.install(t0, 2, [2; NH]);
        assert!(keys.sender_base_key(t0, 2, 0).is_some());
        assert!(
            keys.sender_base_key(t0 + Duration::from_secs(1), 1, 0)
                .is_some(),
            "within grace"
        );
        assert!(
            keys.sender_base_key(t0 + MediaKeys::GRACE, 1, 0).is_none(),
            "after grace"
        );
        assert!(
            keys.sender_base_key(t0, 0, 0).is_none(),
            "never-installed epoch"
        );
        assert_ne!(
            *keys.sender_base_key(t0, 2, 0).unwrap(),
            *keys.sender_base_key(t0, 2, 1).unwrap()
        );
        assert!(!format!("{keys:?}").contains("[2, 2"));
    }
}
