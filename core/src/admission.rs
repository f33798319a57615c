//! Proving knowledge of the meeting secret: the rendezvous key and the hello handshake.
//!
//! Keys ([`MeetingKeys::derive`]), all HKDF-SHA256 with the 256-bit meeting secret as input
//! keying material and no salt:
//! - rendezvous key = HKDF(secret, [`RENDEZVOUS_LABEL`] ‖ meeting id), 32 bytes. Members
//!   provide it on the DHT; only invitees can compute it, so the DHT learns nothing about
//!   which meeting a record belongs to.
//! - join MAC key = HKDF(secret, [`JOIN_MAC_LABEL`] ‖ meeting id), 32 bytes.
//! - DHT key = the SHA-256 multihash of the rendezvous key (`0x12 0x20 ‖ SHA-256(rendezvous
//!   key)`), as the libp2p Kademlia specification wants record keys to be, so that a DHT
//!   node of any implementation can serve as a bootstrap ([`MeetingKeys::dht_key`]).
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
//!
//! Hellos are rate limited before any of this ([`HelloLimiter`]): per peer, and globally
//! for peers that have not proved the secret yet, so a flood of hellos costs a member one
//! map look-up each.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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

/// Hellos one peer may send at once ([`HelloLimiter`]).
pub const PEER_HELLO_BURST: u32 = 8;
/// After its burst, one peer may send one hello per this interval.
pub const PEER_HELLO_INTERVAL: Duration = Duration::from_secs(1);
/// Hellos all peers that have not proved the secret may send together at once.
pub const GLOBAL_HELLO_BURST: u32 = 64;
/// After the global burst, one hello from such peers per this interval (20 a second).
pub const GLOBAL_HELLO_INTERVAL: Duration = Duration::from_millis(50);
/// Most peers whose hello rate is tracked; peers beyond it count against the global limit
/// only.
pub const LIMITER_PEERS: usize = 1024;

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

    /// The rendezvous key (what the DHT key is the hash of).
    pub fn rendezvous_key(&self) -> [u8; 32] {
        self.rendezvous
    }

    /// The DHT key members provide and joiners look up: the SHA-256 multihash of the
    /// rendezvous key (multihash code 0x12, length 0x20).
    pub fn dht_key(&self) -> Vec<u8> {
        use sha2::Digest as _;
        let digest = Sha256::digest(self.rendezvous);
        [&[0x12, 0x20][..], digest.as_slice()].concat()
    }

    /// MAC a joiner puts in its hello to `member`.
    pub fn hello_mac(
        &self,
        joiner: &PeerId,
        member: &PeerId,
        nonce: &[u8; NONCE_LEN],
        unix_ms: u64,
    ) -> [u8; MAC_LEN] {
        finish(self.hello_hmac(joiner, member, nonce, unix_ms))
    }

    /// MAC a member puts in its welcome to `joiner`, over the joiner's nonce.
    pub fn welcome_mac(
        &self,
        member: &PeerId,
        joiner: &PeerId,
        nonce: &[u8; NONCE_LEN],
    ) -> [u8; MAC_LEN] {
        finish(self.welcome_hmac(member, joiner, nonce))
    }

    /// Verifies a welcome MAC in constant time.
    pub fn verify_welcome(
        &self,
        member: &PeerId,
        joiner: &PeerId,
        nonce: &[u8; NONCE_LEN],
        mac: &[u8],
    ) -> Result<(), AdmissionError> {
        self.welcome_hmac(member, joiner, nonce)
            .verify_slice(mac)
            .map_err(|_| AdmissionError::BadMac)
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
        self.hello_hmac(joiner, member, nonce, unix_ms)
            .verify_slice(mac)
            .map_err(|_| AdmissionError::BadMac)?;
        let skew_ms = now_unix_ms.abs_diff(unix_ms);
        if u128::from(skew_ms) > MAX_CLOCK_SKEW.as_millis() {
            return Err(AdmissionError::Stale { skew_ms });
        }
        Ok(())
    }

    /// The HMAC over a hello's fields, ready to finish or verify.
    fn hello_hmac(
        &self,
        joiner: &PeerId,
        member: &PeerId,
        nonce: &[u8; NONCE_LEN],
        unix_ms: u64,
    ) -> HmacSha256 {
        self.hmac_over(&[
            HELLO_DOMAIN,
            &self.meeting_id.0,
            &joiner.to_bytes(),
            &member.to_bytes(),
            nonce,
            &unix_ms.to_be_bytes(),
        ])
    }

    /// The HMAC over a welcome's fields, ready to finish or verify.
    fn welcome_hmac(
        &self,
        member: &PeerId,
        joiner: &PeerId,
        nonce: &[u8; NONCE_LEN],
    ) -> HmacSha256 {
        self.hmac_over(&[
            WELCOME_DOMAIN,
            &self.meeting_id.0,
            &member.to_bytes(),
            &joiner.to_bytes(),
            nonce,
        ])
    }

    /// The join-key HMAC fed with each part, length-prefixed (`u32` big-endian).
    fn hmac_over(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.join_mac.as_ref())
            .expect("HMAC accepts a key of any length");
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

fn finish(mac: HmacSha256) -> [u8; MAC_LEN] {
    mac.finalize().into_bytes().into()
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

/// Which limit a hello exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateLimited {
    /// This peer sent too many hellos.
    #[error("this peer sends hellos faster than allowed")]
    Peer,
    /// Peers that have not proved the secret send too many hellos together.
    #[error("unknown peers send hellos faster than allowed")]
    Global,
}

/// A generic cell rate limiter: `burst` events at once, then one per `interval`.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// When the bucket is full again (nothing owed); in the past while idle.
    full_at: Option<Instant>,
}

impl Bucket {
    /// Takes one token if there is one.
    fn take(&mut self, now: Instant, burst: u32, interval: Duration) -> bool {
        let full_at = self.full_at.map_or(now, |t| t.max(now));
        // `burst` tokens means at most `burst` intervals owed after this event.
        if full_at + interval > now + interval * burst {
            return false;
        }
        self.full_at = Some(full_at + interval);
        true
    }

    fn is_full(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|t| t <= now)
    }
}

/// Bounds how many hellos a member checks (sans-IO: the caller passes the time).
///
/// Every peer may send [`PEER_HELLO_BURST`] hellos at once and one per
/// [`PEER_HELLO_INTERVAL`] after that. Hellos from peers that have not proved the secret
/// yet (`known == false`) also share a global budget of [`GLOBAL_HELLO_BURST`] and one per
/// [`GLOBAL_HELLO_INTERVAL`], so a flood from many fresh identities cannot make a member
/// verify more than that; members and lobby joiners are not held back by it. A refused
/// hello takes no token. At most [`LIMITER_PEERS`] peers are tracked (idle ones are
/// forgotten by [`HelloLimiter::forget_idle`]); an untracked peer counts against the global
/// budget only.
#[derive(Debug, Default)]
pub struct HelloLimiter {
    peers: HashMap<PeerId, Bucket>,
    global: Bucket,
}

impl HelloLimiter {
    /// Whether a hello from `peer` may be checked now; takes its tokens if so.
    pub fn check(&mut self, now: Instant, peer: PeerId, known: bool) -> Result<(), RateLimited> {
        let tracked = self.peers.len() < LIMITER_PEERS || self.peers.contains_key(&peer);
        let mut bucket = self.peers.get(&peer).copied().unwrap_or_default();
        if tracked && !bucket.take(now, PEER_HELLO_BURST, PEER_HELLO_INTERVAL) {
            return Err(RateLimited::Peer);
        }
        if !known
            && !self
                .global
                .take(now, GLOBAL_HELLO_BURST, GLOBAL_HELLO_INTERVAL)
        {
            return Err(RateLimited::Global);
        }
        if tracked {
            self.peers.insert(peer, bucket);
        }
        Ok(())
    }

    /// Forgets peers whose budget is whole again (they are as good as new).
    pub fn forget_idle(&mut self, now: Instant) {
        self.peers.retain(|_, bucket| !bucket.is_full(now));
    }

    /// How many peers are tracked.
    pub fn tracked(&self) -> usize {
        self.peers.len()
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
    fn the_dht_key_is_the_sha256_multihash_of_the_rendezvous_key() {
        let key = keys(1).dht_key();
        assert_eq!(key.len(), 34);
        assert_eq!(&key[..2], &[0x12, 0x20], "multihash sha2-256, 32 bytes");
        // Independent computation: `printf '%s' <rendezvous hex> | xxd -r -p | sha256sum`.
        assert_eq!(hex::encode(&key[2..]), PINNED_DHT_DIGEST);
        assert_ne!(key, keys(2).dht_key());
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
    fn macs_follow_the_documented_layout() {
        // docs/protocol.md §3, computed here field by field.
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, &[1; 32])
            .expand_multi_info(&[JOIN_MAC_LABEL, &[9; 16]], &mut key)
            .unwrap();
        let layout = |parts: &[&[u8]]| -> [u8; MAC_LEN] {
            let mut mac = HmacSha256::new_from_slice(&key).unwrap();
            for part in parts {
                mac.update(&(part.len() as u32).to_be_bytes());
                mac.update(part);
            }
            mac.finalize().into_bytes().into()
        };
        let (joiner, member) = (PeerId::random(), PeerId::random());
        let nonce = [3u8; NONCE_LEN];
        let (j, m) = (joiner.to_bytes(), member.to_bytes());
        assert_eq!(
            keys(1).hello_mac(&joiner, &member, &nonce, 42),
            layout(&[b"hello", &[9; 16], &j, &m, &nonce, &42u64.to_be_bytes()])
        );
        assert_eq!(
            keys(1).welcome_mac(&member, &joiner, &nonce),
            layout(&[b"welcome", &[9; 16], &m, &j, &nonce])
        );
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

    /// How many of `n` hellos at `at`, each from `peer()`, the limiter lets through.
    fn passes(
        limiter: &mut HelloLimiter,
        at: Instant,
        n: usize,
        mut peer: impl FnMut() -> PeerId,
        known: bool,
    ) -> usize {
        (0..n)
            .filter(|_| limiter.check(at, peer(), known).is_ok())
            .count()
    }

    #[test]
    fn one_peer_gets_its_burst_then_one_hello_a_second() {
        // An arbitrary origin for simulated time; the limiter never reads the clock.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut limiter = HelloLimiter::default();
        let (flooder, other) = (PeerId::random(), PeerId::random());
        let passed = passes(&mut limiter, t0, 100, || flooder, true);
        assert_eq!(passed, PEER_HELLO_BURST as usize);
        assert_eq!(limiter.check(t0, flooder, true), Err(RateLimited::Peer));
        // Another peer is not affected.
        assert_eq!(limiter.check(t0, other, true), Ok(()));
        // Refused hellos took nothing: one interval later exactly one more passes.
        let t1 = t0 + PEER_HELLO_INTERVAL;
        assert_eq!(limiter.check(t1, flooder, true), Ok(()));
        assert_eq!(limiter.check(t1, flooder, true), Err(RateLimited::Peer));
        // Over ten seconds of flooding, ten more.
        let passed = (0..1000u32)
            .filter(|i| {
                let at = t1 + Duration::from_millis(10 * u64::from(*i + 1));
                limiter.check(at, flooder, true).is_ok()
            })
            .count();
        assert_eq!(passed, 10);
        // Idle long enough, the peer is forgotten and gets its whole burst again.
        let later = t1 + Duration::from_secs(60);
        limiter.forget_idle(later);
        assert_eq!(limiter.tracked(), 0);
        let passed = passes(&mut limiter, later, 100, || flooder, true);
        assert_eq!(passed, PEER_HELLO_BURST as usize);
    }

    #[test]
    fn unknown_peers_share_a_global_budget_that_members_do_not_use() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut limiter = HelloLimiter::default();
        let passed = passes(&mut limiter, t0, 1000, PeerId::random, false);
        assert_eq!(passed, GLOBAL_HELLO_BURST as usize);
        assert_eq!(
            limiter.check(t0, PeerId::random(), false),
            Err(RateLimited::Global)
        );
        // A peer that proved the secret (a member, a lobby joiner) still gets through.
        assert_eq!(limiter.check(t0, PeerId::random(), true), Ok(()));
        // The budget refills at one hello per interval.
        let t1 = t0 + GLOBAL_HELLO_INTERVAL * 3;
        let passed = passes(&mut limiter, t1, 100, PeerId::random, false);
        assert_eq!(passed, 3);
        // Tracking is bounded: a flood of fresh identities fills at most LIMITER_PEERS.
        let mut at = t1;
        for _ in 0..(LIMITER_PEERS * 3) {
            at += GLOBAL_HELLO_INTERVAL;
            let _ = limiter.check(at, PeerId::random(), false);
        }
        assert_eq!(limiter.tracked(), LIMITER_PEERS);
        // An untracked peer is still held by the global budget.
        let untracked = PeerId::random();
        let passed = passes(&mut limiter, at, 100, || untracked, false);
        assert_eq!(passed, 0);
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
    const PINNED_DHT_DIGEST: &str =
        "2a67c216821e58a069e6eee2dfff52159c33d399d927a47fe3b3cc1d9839ba38";
}
