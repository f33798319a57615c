//! Who may use the relay's TURN service, with which credentials, and how much: pure rules,
//! no I/O and no clocks (time arrives as an argument).
//!
//! - [`Allowlist`]: every identity (`open`) or only listed ed25519 identities.
//! - Credentials in the "TURN REST API" form coturn calls `use-auth-secret`:
//!   `username = "<expiry unix seconds>:<peer id>"`,
//!   `password = base64(HMAC-SHA1(shared secret, username))`. [`mint`] issues them,
//!   [`check_username`] and [`password_for`] verify them. Any standard TURN client (or a
//!   coturn configured with the same `static-auth-secret`) interoperates.
//! - Quotas: [`AllocationCounts`] caps concurrent allocations per identity, [`TokenBucket`]
//!   caps relayed bytes per second per identity.
//!
//! The identity behind a TURN request is the peer id inside its username; since only the
//! relay can compute the password for a username, a valid message integrity proves the
//! credentials were issued to that identity.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use libp2p::PeerId;
use sha1::Sha1;

/// Separator between expiry and peer id in a username (coturn's default).
pub const USERNAME_SEPARATOR: char = ':';
/// Longest username accepted, in bytes.
pub const MAX_USERNAME_LEN: usize = 128;

/// Why TURN credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The username is not `<expiry>:<peer id>`.
    #[error("malformed username")]
    Malformed,
    /// The username's expiry has passed.
    #[error("credentials expired at {expired_at} (now {now})")]
    Expired {
        /// Expiry in the username, Unix seconds.
        expired_at: u64,
        /// The time of the check, Unix seconds.
        now: u64,
    },
    /// The identity is not on the allowlist.
    #[error("identity {peer} is not allowed on this relay")]
    NotAllowed {
        /// The refused identity.
        peer: PeerId,
    },
    /// The password (message integrity) does not match the username.
    #[error("wrong password")]
    WrongPassword,
}

impl CredentialError {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CredentialError::Malformed => "malformed",
            CredentialError::Expired { .. } => "expired",
            CredentialError::NotAllowed { .. } => "not_allowed",
            CredentialError::WrongPassword => "wrong_password",
        }
    }
}

/// Why an allowlist entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allowlist entry {entry:?} is neither a peer id nor 64 hex digits of an ed25519 public key"
)]
pub struct AllowlistError {
    /// The offending entry.
    pub entry: String,
}

/// Which identities may obtain TURN credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowlist {
    /// Anyone (a public relay).
    Open,
    /// Only these identities.
    Only(HashSet<PeerId>),
}

impl Allowlist {
    /// Parses entries: peer ids (`12D3KooW…`) or ed25519 public keys as 64 hex digits.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowlistError> {
        let mut peers = HashSet::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            peers.insert(parse_identity(entry).ok_or_else(|| AllowlistError {
                entry: entry.to_owned(),
            })?);
        }
        Ok(Allowlist::Only(peers))
    }

    /// Whether `peer` may obtain credentials.
    pub fn allows(&self, peer: &PeerId) -> bool {
        match self {
            Allowlist::Open => true,
            Allowlist::Only(peers) => peers.contains(peer),
        }
    }
}

/// The identity an allowlist entry names: a peer id (`12D3KooW…`) or an ed25519 public key
/// as 64 hex digits.
pub fn parse_identity(entry: &str) -> Option<PeerId> {
    if let Ok(peer) = entry.parse::<PeerId>() {
        return Some(peer);
    }
    let bytes = hex_decode(entry)?;
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&bytes).ok()?;
    Some(libp2p::identity::PublicKey::from(key).to_peer_id())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A credential pair as handed to a client.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `<expiry>:<peer id>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// Expiry, Unix seconds.
    pub expires_unix: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"..")
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

/// The password of `username` under `secret`: `base64(HMAC-SHA1(secret, username))`.
pub fn password_for(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Mints credentials for `peer` valid for `ttl` from `now_unix`.
pub fn mint(secret: &[u8], peer: &PeerId, now_unix: u64, ttl: Duration) -> Credentials {
    let expires_unix = now_unix.saturating_add(ttl.as_secs());
    let username = format!("{expires_unix}{USERNAME_SEPARATOR}{peer}");
    let password = password_for(secret, &username);
    Credentials {
        username,
        password,
        expires_unix,
    }
}

/// Splits a username into expiry and identity.
pub fn parse_username(username: &str) -> Result<(u64, PeerId), CredentialError> {
    if username.len() > MAX_USERNAME_LEN {
        return Err(CredentialError::Malformed);
    }
    let (expiry, peer) = username
        .split_once(USERNAME_SEPARATOR)
        .ok_or(CredentialError::Malformed)?;
    let expiry = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    let peer = peer.parse().map_err(|_| CredentialError::Malformed)?;
    Ok((expiry, peer))
}

/// Checks a username's form, expiry and identity; returns the identity.
pub fn check_username(
    username: &str,
    now_unix: u64,
    allowlist: &Allowlist,
) -> Result<PeerId, CredentialError> {
    let (expired_at, peer) = parse_username(username)?;
    if expired_at < now_unix {
        return Err(CredentialError::Expired {
            expired_at,
            now: now_unix,
        });
    }
    if !allowlist.allows(&peer) {
        return Err(CredentialError::NotAllowed { peer });
    }
    Ok(peer)
}

/// Why an allocation was refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity {peer} already holds {held} allocations (at most {max})")]
pub struct QuotaExceeded {
    /// The identity.
    pub peer: PeerId,
    /// Allocations it holds.
    pub held: usize,
    /// The quota.
    pub max: usize,
}

/// Concurrent allocations per identity, capped.
#[derive(Debug, Clone)]
pub struct AllocationCounts {
    max_per_identity: usize,
    held: HashMap<PeerId, usize>,
}

impl AllocationCounts {
    /// No allocations yet; at most `max_per_identity` each.
    pub fn new(max_per_identity: usize) -> Self {
        Self {
            max_per_identity,
            held: HashMap::new(),
        }
    }

    /// Changes the quota (a reload); allocations already held stay.
    pub fn set_max(&mut self, max_per_identity: usize) {
        self.max_per_identity = max_per_identity;
    }

    /// Whether `peer` may take one more (without taking it).
    pub fn check(&self, peer: &PeerId) -> Result<(), QuotaExceeded> {
        let held = self.held(peer);
        if held >= self.max_per_identity {
            return Err(QuotaExceeded {
                peer: *peer,
                held,
                max: self.max_per_identity,
            });
        }
        Ok(())
    }

    /// Takes one allocation for `peer`, if the quota allows.
    pub fn acquire(&mut self, peer: &PeerId) -> Result<(), QuotaExceeded> {
        self.check(peer)?;
        *self.held.entry(*peer).or_default() += 1;
        Ok(())
    }

    /// Gives one allocation of `peer` back.
    pub fn release(&mut self, peer: &PeerId) {
        if let Some(held) = self.held.get_mut(peer) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(peer);
            }
        }
    }

    /// Allocations `peer` holds.
    pub fn held(&self, peer: &PeerId) -> usize {
        self.held.get(peer).copied().unwrap_or(0)
    }

    /// Allocations held by everyone.
    pub fn total(&self) -> usize {
        self.held.values().sum()
    }
}

/// A byte-rate limiter: `rate` bytes per second with a burst of `burst` bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `bytes` at `now` if the bucket holds them; `false` means drop the packet.
    pub fn allow(&mut self, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
        let bytes = bytes as f64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"north-wing-secret";

    #[test]
    fn password_is_the_coturn_rest_api_form() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog") is the RFC 2104
        // style reference de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9.
        let password = password_for(b"key", "The quick brown fox jumps over the lazy dog");
        assert_eq!(password, "3nybhbi3iqa8ino29wqQcBydtNk=");
    }

    #[test]
    fn minted_credentials_verify_until_they_expire() {
        let peer = PeerId::random();
        let creds = mint(SECRET, &peer, 1_000, Duration::from_secs(60));
        assert_eq!(creds.username, format!("1060:{peer}"));
        assert_eq!(creds.password, password_for(SECRET, &creds.username));
        assert_eq!(
            check_username(&creds.username, 1_060, &Allowlist::Open),
            Ok(peer)
        );
        assert_eq!(
            check_username(&creds.username, 1_061, &Allowlist::Open),
            Err(CredentialError::Expired {
                expired_at: 1060,
                now: 1061
            })
        );
        assert_ne!(
            password_for(b"other secret", &creds.username),
            creds.password
        );
    }

    #[test]
    fn malformed_usernames_are_refused() {
        for bad in [
            "",
            "1060",
            "abc:12D3KooW",
            "1060:not-a-peer",
            ":",
            &"9".repeat(200),
        ] {
            assert_eq!(
                check_username(bad, 0, &Allowlist::Open),
                Err(CredentialError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn allowlist_takes_peer_ids_and_hex_keys() {
        let key = libp2p::identity::ed25519::Keypair::generate();
        let hex: String = key
            .public()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let by_key = libp2p::identity::PublicKey::from(key.public()).to_peer_id();
        let other = PeerId::random();
        let list = Allowlist::parse(&[hex, other.to_string()]).unwrap();
        assert!(list.allows(&by_key));
        assert!(list.allows(&other));
        assert!(!list.allows(&PeerId::random()));
        let stranger = PeerId::random();
        let creds = mint(SECRET, &stranger, 0, Duration::from_secs(10));
        assert_eq!(
            check_username(&creds.username, 0, &list),
            Err(CredentialError::NotAllowed { peer: stranger })
        );
        assert!(Allowlist::parse(&["nonsense"]).is_err());
        assert!(Allowlist::Open.allows(&stranger));
    }

    #[test]
    fn allocation_quota_counts_per_identity() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut counts = AllocationCounts::new(2);
        counts.acquire(&a).unwrap();
        counts.acquire(&a).unwrap();
        let err = counts.acquire(&a).unwrap_err();
        assert_eq!((err.held, err.max), (2, 2));
        counts.acquire(&b).unwrap();
        assert_eq!(counts.total(), 3);
        counts.release(&a);
        counts.acquire(&a).unwrap();
        counts.release(&b);
        counts.release(&b);
        assert_eq!(counts.held(&b), 0);
    }

    #[test]
    fn token_bucket_limits_the_rate_and_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000, 1_500, start);
        assert!(bucket.allow(start, 1_000));
        assert!(!bucket.allow(start, 1_000), "only 500 bytes left");
        assert!(bucket.allow(start, 500));
        let later = start + Duration::from_millis(500);
        assert!(bucket.allow(later, 500));
        assert!(!bucket.allow(later, 1));
        let much_later = start + Duration::from_secs(100);
        assert!(bucket.allow(much_later, 1_500), "refilled to the burst");
        assert!(!bucket.allow(much_later, 1));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let creds = mint(SECRET, &PeerId::random(), 0, Duration::from_secs(1));
        assert!(!format!("{creds:?}").contains(&creds.password));
    }
}
