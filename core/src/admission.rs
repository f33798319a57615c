//! Proving knowledge of the meeting secret: the rendezvous key and the hello handshake.
//!
//! Keys ([`MeetingKeys::derive`]), all HKDF-SHA256 with the 256-bit meeting secret as input
//! keying material and no salt:
//! - rendezvous key = HKDF(secret, [`RENDEZVOUS_LABEL`] ‖ meeting id), 32 bytes. Members
//!   provide it on the DHT; only invitees can compute it, so the DHT learns nothing about
//!   which meeting a record belongs to.
//! - join MAC key = HKDF(secret, [`JOIN_MAC_LABEL`] ‖ meeting id), 32 bytes.
//!
//! Handshake (one request/response on an authenticated libp2p connection; see
//! `docs/protocol.md`):
//! 1. The joiner J sends `Hello { nonce, unix_ms, mac }` to a member M, where
//!    `mac = HMAC(join key, "hello" ‖ meeting id ‖ J ‖ M ‖ nonce ‖ unix_ms)`.
//! 2. M checks the MAC (constant time), that `unix_ms` is within [`MAX_CLOCK_SKEW`] of its
//!    clock, and that `(J, nonce)` was not seen before ([`ReplayGuard`]). On success M
//!    answers with `welcome_mac = HMAC(join key, "welcome" ‖ meeting id ‖ M ‖ J ‖ nonce)`,
//!    proving to J that M knows the secret too; otherwise it answers a bare refusal that
//!    says nothing about the meeting.
//!
//! Peer ids are those of the Noise-authenticated connection, so a hello cannot be replayed
//! from another identity, nor towards another member.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use libp2p::PeerId;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::invite::{MeetingId, MeetingSecret};

/// HKDF info label of the DHT rendezvous key.
pub const RENDEZVOUS_LABEL: &[u8] = b"conclave rendezvous v1";
/// HKDF info label of the join MAC key.
pub const JOIN_MAC_LABEL: &[u8] = b"conclave join mac v1";
/// Domain separator of a joiner's hello MAC.
const HELLO_DOMAIN: &[u8] = b"hello";
/// Domain separator of a member's welcome MAC.
const WELCOME_DOMAIN: &[u8] = b"welcome";
/// Largest accepted difference between a hello's timestamp and our clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(120);
/// Most hellos remembered for replay detection.
pub const REPLAY_CAPACITY: usize = 4096;

/// Length of a hello nonce.
pub const NONCE_LEN: usize = 16;
/// Length of a MAC.
pub const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a hello (or a welcome) was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The MAC does not verify: the sender does not know this meeting's secret.
    #[error("the proof of the meeting secret does not verify")]
    BadMac,
    /// The hello's timestamp is too far from our clock.
    #[error("the hello is {skew_ms} ms away from our clock, more than allowed")]
    Stale {
        /// Absolute difference in milliseconds.
        skew_ms: u64,
    },
    /// This exact hello was already used.
    #[error("the hello was replayed")]
    Replayed,
}

/// The keys derived from one meeting's secret.
#[derive(Clone)]
pub struct MeetingKeys {
    meeting_id: MeetingId,
    rendezvous: [u8; 32],
    join_mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MeetingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeetingKeys")
            .field("meeting_id", &self.meeting_id)
            .finish_non_exhaustive()
    }
}

impl MeetingKeys {
    /// Derives the rendezvous key and join MAC key of a meeting.
    pub fn derive(meeting_id: MeetingId, secret: &MeetingSecret) -> Self {
        let hkdf = Hkdf::<Sha256>::new(None, secret.expose());
        Self {
            meeting_id,
            rendezvous: expand(&hkdf, RENDEZVOUS_LABEL, &meeting_id),
            join_mac: Zeroizing::new(expand(&hkdf, JOIN_MAC_LABEL, &meeting_id)),
        }
    }

    /// The meeting these keys belong to.
    pub fn meeting_id(&self) -> MeetingId {
        self.meeting_id
    }

    /// The DHT key members provide and joiners look up.
    pub fn rendezvous_key(&self) -> [u8; 32] {
        self.rendezvous
    }

    /// MAC a joiner puts in its hello to `member`.
    pub fn hello_mac(
        &self,
        joiner: &PeerId,
        member: &PeerId,
        nonce: &[u8; NONCE_LEN],
        unix_ms: u64,
    ) -> [u8; MAC_LEN] {
        self.mac(&[
            HELLO_DOMAIN,
            &self.meeting_id.0,
            &joiner.to_bytes(),
            &member.to_bytes(),
            nonce,
            &unix_ms.to_be_bytes(),
        ])
    }

    /// MAC a member puts in its welcome to `joiner`, over the joiner's nonce.
    pub fn welcome_mac(
        &self,
        member: &PeerId,
        joiner: &PeerId,
        nonce: &[u8; NONCE_LEN],
    ) -> [u8; MAC_LEN] {
        self.mac(&[
            WELCOME_DOMAIN,
            &self.meeting_id.0,
            &member.to_bytes(),
            &joiner.to_bytes(),
            nonce,
        ])
    }

    /// Verifies a welcome MAC in constant time.
    pub fn verify_welcome(
        &self,
        member: &PeerId,
        joiner: &PeerId,
        nonce: &[u8; NONCE_LEN],
        mac: &[u8],
    ) -> Result<(), AdmissionError> {
        self.verify(
            &[
                WELCOME_DOMAIN,
                &self.meeting_id.0,
                &member.to_bytes(),
                &joiner.to_bytes(),
                nonce,
            ],
            mac,
        )
    }

    /// Verifies a hello's MAC (constant time) and freshness; replay is checked by
    /// [`ReplayGuard`].
    pub fn verify_hello(
        &self,
        joiner: &PeerId,
        member: &PeerId,
        nonce: &[u8; NONCE_LEN],
        unix_ms: u64,
        mac: &[u8],
        now_unix_ms: u64,
    ) -> Result<(), AdmissionError> {
        self.verify(
            &[
                HELLO_DOMAIN,
                &self.meeting_id.0,
                &joiner.to_bytes(),
                &member.to_bytes(),
                nonce,
                &unix_ms.to_be_bytes(),
            ],
            mac,
        )?;
        let skew_ms = now_unix_ms.abs_diff(unix_ms);
        if u128::from(skew_ms) > MAX_CLOCK_SKEW.as_millis() {
            return Err(AdmissionError::Stale { skew_ms });
        }
        Ok(())
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut mac = self.hmac();
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), AdmissionError> {
        let mut mac = self.hmac();
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.verify_slice(tag).map_err(|_| AdmissionError::BadMac)
    }

    fn hmac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.join_mac.as_ref())
            .expect("HMAC accepts a key of any length")
    }
}

fn expand(hkdf: &Hkdf<Sha256>, label: &[u8], meeting_id: &MeetingId) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf.expand_multi_info(&[label, &meeting_id.0], &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// Remembers recently accepted hellos so that none is accepted twice.
///
/// Bounded: entries older than twice [`MAX_CLOCK_SKEW`] can no longer pass the freshness
/// check and are forgotten; past [`REPLAY_CAPACITY`] the oldest are dropped first (such a
/// flood of valid hellos can only come from invitees).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<(PeerId, [u8; NONCE_LEN]), u64>,
    order: VecDeque<((PeerId, [u8; NONCE_LEN]), u64)>,
}

impl ReplayGuard {
    /// Records a hello; fails if the same `(joiner, nonce)` was recorded before.
    pub fn check_and_record(
        &mut self,
        joiner: PeerId,
        nonce: [u8; NONCE_LEN],
        hello_unix_ms: u64,
        now_unix_ms: u64,
    ) -> Result<(), AdmissionError> {
        self.forget_older_than(now_unix_ms.saturating_sub(2 * MAX_CLOCK_SKEW.as_millis() as u64));
        let key = (joiner, nonce);
        if self.seen.contains_key(&key) {
            return Err(AdmissionError::Replayed);
        }
        if self.order.len() >= REPLAY_CAPACITY
            && let Some((oldest, _)) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(key, hello_unix_ms);
        self.order.push_back((key, now_unix_ms));
        Ok(())
    }

    /// How many hellos are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no hello is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_older_than(&mut self, cutoff_unix_ms: u64) {
        while let Some((key, at)) = self.order.front() {
            if *at >= cutoff_unix_ms {
                break;
            }
            self.seen.remove(key);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: u8) -> MeetingKeys {
        MeetingKeys::derive(MeetingId([9; 16]), &MeetingSecret::from_bytes([secret; 32]))
    }

    #[test]
    fn rendezvous_key_depends_on_secret_and_id() {
        let a = keys(1);
        assert_eq!(a.rendezvous_key(), keys(1).rendezvous_key());
        assert_ne!(a.rendezvous_key(), keys(2).rendezvous_key());
        let other_id = MeetingKeys::derive(MeetingId([8; 16]), &MeetingSecret::from_bytes([1; 32]));
        assert_ne!(a.rendezvous_key(), other_id.rendezvous_key());
    }

    #[test]
    fn rendezvous_key_matches_rfc5869_hkdf_known_answer() {
        // Independent computation (Python's hmac module, RFC 5869 HKDF with an empty salt):
        // PRK = HMAC-SHA256(key = 32 zero bytes, msg = 32 bytes of 0x01);
        // OKM = HMAC-SHA256(PRK, "conclave rendezvous v1" || 16 bytes of 0x09 || 0x01).
        assert_eq!(hex::encode(keys(1).rendezvous_key()), PINNED_RENDEZVOUS);
    }

    #[test]
    fn hello_verifies_only_with_the_right_secret_and_peers() {
        let (joiner, member, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let nonce = [5u8; NONCE_LEN];
        let mac = keys(1).hello_mac(&joiner, &member, &nonce, 1_000_000);
        assert_eq!(
            keys(1).verify_hello(&joiner, &member, &nonce, 1_000_000, &mac, 1_000_500),
            Ok(())
        );
        assert_eq!(
            keys(2).verify_hello(&joiner, &member, &nonce, 1_000_000, &mac, 1_000_500),
            Err(AdmissionError::BadMac)
        );
        assert_eq!(
            keys(1).verify_hello(&other, &member, &nonce, 1_000_000, &mac, 1_000_500),
            Err(AdmissionError::BadMac)
        );
        assert_eq!(
            keys(1).verify_hello(&joiner, &other, &nonce, 1_000_000, &mac, 1_000_500),
            Err(AdmissionError::BadMac)
        );
        assert_eq!(
            keys(1).verify_hello(&joiner, &member, &nonce, 1_000_001, &mac, 1_000_500),
            Err(AdmissionError::BadMac)
        );
        assert_eq!(
            keys(1).verify_hello(&joiner, &member, &nonce, 1_000_000, &mac[..31], 1_000_500),
            Err(AdmissionError::BadMac)
        );
        let late = 1_000_000 + MAX_CLOCK_SKEW.as_millis() as u64 + 1;
        assert!(matches!(
            keys(1).verify_hello(&joiner, &member, &nonce, 1_000_000, &mac, late),
            Err(AdmissionError::Stale { .. })
        ));
    }

    #[test]
    fn welcome_proves_the_member_knows_the_secret() {
        let (joiner, member) = (PeerId::random(), PeerId::random());
        let nonce = [6u8; NONCE_LEN];
        let mac = keys(1).welcome_mac(&member, &joiner, &nonce);
        assert_eq!(
            keys(1).verify_welcome(&member, &joiner, &nonce, &mac),
            Ok(())
        );
        assert_eq!(
            keys(2).verify_welcome(&member, &joiner, &nonce, &mac),
            Err(AdmissionError::BadMac)
        );
        assert_eq!(
            keys(1).verify_welcome(&joiner, &member, &nonce, &mac),
            Err(AdmissionError::BadMac)
        );
    }

    #[test]
    fn replayed_hellos_are_refused_and_memory_is_bounded() {
        let mut guard = ReplayGuard::default();
        let joiner = PeerId::random();
        assert_eq!(
            guard.check_and_record(joiner, [1; NONCE_LEN], 10, 10),
            Ok(())
        );
        assert_eq!(
            guard.check_and_record(joiner, [1; NONCE_LEN], 10, 20),
            Err(AdmissionError::Replayed)
        );
        assert_eq!(
            guard.check_and_record(PeerId::random(), [1; NONCE_LEN], 10, 20),
            Ok(())
        );
        // Far in the future, old entries are forgotten (they could not pass freshness anyway).
        let later = 10 + 3 * MAX_CLOCK_SKEW.as_millis() as u64;
        assert_eq!(
            guard.check_and_record(PeerId::random(), [2; NONCE_LEN], later, later),
            Ok(())
        );
        assert_eq!(guard.len(), 1);
        for i in 0..(REPLAY_CAPACITY as u64 + 10) {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            guard.check_and_record(joiner, nonce, later, later).unwrap();
        }
        assert_eq!(guard.len(), REPLAY_CAPACITY);
    }

    #[test]
    fn debug_never_shows_keys() {
        let k = keys(1);
        let rendered = format!("{k:?}");
        assert!(!rendered.contains(&hex::encode(k.rendezvous_key())));
        assert!(!rendered.contains(&hex::encode(k.join_mac.as_ref())));
    }

    const PINNED_RENDEZVOUS: &str =
        "d53870dc57a3f3b80e9cf2c3e4f666dcf5848457830a7ab6235c58cf3448d3a9";
}
