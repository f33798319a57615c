//! Invites: the one copy-pasteable string that lets someone join a meeting.
//!
//! Format, version 1 (also in `docs/protocol.md`):
//!
//! ```text
//! conclave:v1/<meeting id: 32 lowercase hex>?secret=<43 base64url chars>[&host=<peer id>][&relay=<multiaddr>]...
//! ```
//!
//! - the meeting id is 128 random bits, the secret 256 random bits (base64url, no padding);
//! - `host` (at most once) is the inviter's peer id, a hint to dial directly;
//! - `relay` (up to [`MAX_RELAYS`]) are relay/bootstrap multiaddrs, each ending in
//!   `/p2p/<relay peer id>`;
//! - `lobby=1` (at most once) says the host admits each joiner by hand.
//!
//! The parser is strict: surrounding whitespace is ignored, anything else that is not
//! exactly this shape is refused with an [`InviteError`] naming the defect. Whoever holds
//! the invite holds the meeting secret: it never reaches a log line, and [`MeetingSecret`]'s
//! `Debug` is redacted.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The URI scheme, including the colon.
pub const SCHEME: &str = "conclave:";
/// The only invite format version this build writes and reads.
pub const VERSION: &str = "v1";
/// Longest accepted invite, in bytes.
pub const MAX_INVITE_LEN: usize = 4096;
/// Most relay hints in one invite.
pub const MAX_RELAYS: usize = 8;

/// Why an invite string was refused. Each variant names one defect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Nothing was given.
    #[error("the invite is empty")]
    Empty,
    /// Longer than any invite Conclave writes.
    #[error("the invite is {len} bytes long, more than the {max} an invite can be")]
    TooLong {
        /// Length given.
        len: usize,
        /// Longest accepted.
        max: usize,
    },
    /// Does not start with `conclave:`.
    #[error("the invite must start with \"conclave:\"")]
    WrongScheme,
    /// A version this build does not know.
    #[error("invite version \"{found}\" is not supported (this build reads \"v1\")")]
    UnsupportedVersion {
        /// The version text found.
        found: String,
    },
    /// The meeting id is not 32 lowercase hex digits.
    #[error("the meeting id must be 32 hexadecimal digits, found {found:?}")]
    BadMeetingId {
        /// The text found.
        found: String,
    },
    /// No `secret=` parameter.
    #[error("the invite has no secret (secret=...)")]
    MissingSecret,
    /// The secret is not 43 base64url characters (256 bits).
    #[error("the secret must be 43 base64url characters (256 bits)")]
    BadSecret,
    /// The host hint is not a peer id.
    #[error("the host {found:?} is not a valid peer id")]
    BadHost {
        /// The text found.
        found: String,
    },
    /// A relay hint is not a multiaddr ending in `/p2p/<peer id>`.
    #[error("the relay address {found:?} is not a multiaddr ending in /p2p/<peer id>")]
    BadRelay {
        /// The text found.
        found: String,
    },
    /// `lobby=` with another value than `1`.
    #[error("lobby must be 1, found {found:?}")]
    BadLobby {
        /// The text found.
        found: String,
    },
    /// More relay hints than allowed.
    #[error("the invite lists {count} relays, at most {max} are allowed")]
    TooManyRelays {
        /// How many were given.
        count: usize,
        /// Most allowed.
        max: usize,
    },
    /// A parameter that only appears once appeared again.
    #[error("the parameter {name:?} appears more than once")]
    DuplicateParameter {
        /// Parameter name.
        name: String,
    },
    /// A parameter this version does not define.
    #[error("unknown parameter {name:?}")]
    UnknownParameter {
        /// Parameter name.
        name: String,
    },
    /// A `name=value` pair without `=`.
    #[error("the parameter {text:?} has no value (expected name=value)")]
    MalformedParameter {
        /// The text found.
        text: String,
    },
    /// Characters outside the invite alphabet (spaces, quotes, control characters...).
    #[error("the invite contains the character {found:?}, which no invite contains")]
    BadCharacter {
        /// The offending character.
        found: char,
    },
}

/// A meeting's public 128-bit identifier.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct MeetingId(pub [u8; 16]);

impl MeetingId {
    /// A fresh random meeting id.
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeetingId({self})")
    }
}

impl FromStr for MeetingId {
    type Err = InviteError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || InviteError::BadMeetingId {
            found: text.chars().take(40).collect(),
        };
        if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(text, &mut id).map_err(|_| bad())?;
        Ok(Self(id))
    }
}

/// A meeting's 256-bit secret. Knowing it is what makes someone an invitee.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct MeetingSecret([u8; 32]);

impl MeetingSecret {
    /// A fresh random secret.
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self(secret)
    }

    /// Wraps raw secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw secret, for key derivation only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MeetingSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeetingSecret(..)")
    }
}

/// A parsed invite.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// Which meeting.
    pub meeting_id: MeetingId,
    /// The meeting secret.
    pub secret: MeetingSecret,
    /// The inviter's peer id, if given.
    pub host: Option<PeerId>,
    /// Relay / bootstrap addresses, each ending in `/p2p/<peer id>`.
    pub relays: Vec<Multiaddr>,
    /// The host admits each joiner by hand (`lobby=1`).
    pub lobby: bool,
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("meeting_id", &self.meeting_id)
            .field("secret", &self.secret)
            .field("host", &self.host)
            .field("relays", &self.relays)
            .field("lobby", &self.lobby)
            .finish()
    }
}

impl Invite {
    /// A new meeting with a fresh id and secret.
    pub fn new_meeting(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self {
            meeting_id: MeetingId::random(rng),
            secret: MeetingSecret::random(rng),
            host: None,
            relays: Vec::new(),
            lobby: false,
        }
    }

    /// Renders the invite as its `conclave:` URI. This string contains the secret: hand it
    /// to people, never to logs.
    pub fn to_uri(&self) -> String {
        let mut uri = format!(
            "{SCHEME}{VERSION}/{}?secret={}",
            self.meeting_id,
            URL_SAFE_NO_PAD.encode(self.secret.expose())
        );
        if let Some(host) = &self.host {
            uri.push_str("&host=");
            uri.push_str(&host.to_base58());
        }
        if self.lobby {
            uri.push_str("&lobby=1");
        }
        for relay in &self.relays {
            uri.push_str("&relay=");
            uri.push_str(&relay.to_string());
        }
        uri
    }
}

impl FromStr for Invite {
    type Err = InviteError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

fn parse(text: &str) -> Result<Invite, InviteError> {
    let rest = strip_scheme(text.trim())?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (version, id_text) = path.split_once('/').unwrap_or((path, ""));
    if version != VERSION {
        return Err(InviteError::UnsupportedVersion {
            found: version.chars().take(16).collect(),
        });
    }
    let meeting_id: MeetingId = id_text.parse()?;
    let mut params = Params::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(InviteError::MalformedParameter {
                text: pair.chars().take(40).collect(),
            });
        };
        params.take(name, value, query)?;
    }
    Ok(Invite {
        meeting_id,
        secret: params.secret.ok_or(InviteError::MissingSecret)?,
        host: params.host,
        relays: params.relays,
        lobby: params.lobby,
    })
}

/// Checks the text as a whole (not empty, bounded, only URI characters, our scheme) and
/// returns what follows the scheme.
fn strip_scheme(text: &str) -> Result<&str, InviteError> {
    if text.is_empty() {
        return Err(InviteError::Empty);
    }
    if text.len() > MAX_INVITE_LEN {
        return Err(InviteError::TooLong {
            len: text.len(),
            max: MAX_INVITE_LEN,
        });
    }
    if let Some(found) = text.chars().find(|c| !is_invite_char(*c)) {
        return Err(InviteError::BadCharacter { found });
    }
    let scheme_len = SCHEME.len();
    if text.len() < scheme_len || !text[..scheme_len].eq_ignore_ascii_case(SCHEME) {
        return Err(InviteError::WrongScheme);
    }
    Ok(&text[scheme_len..])
}

/// The query parameters of an invite, as they are read.
#[derive(Default)]
struct Params {
    secret: Option<MeetingSecret>,
    host: Option<PeerId>,
    relays: Vec<Multiaddr>,
    lobby: bool,
}

impl Params {
    /// Takes one `name=value` pair of `query`: each parameter at most once (relays up to
    /// [`MAX_RELAYS`]), unknown ones refused.
    fn take(&mut self, name: &str, value: &str, query: &str) -> Result<(), InviteError> {
        match name {
            "secret" if self.secret.is_some() => return Err(duplicate(name)),
            "secret" => self.secret = Some(parse_secret(value)?),
            "host" if self.host.is_some() => return Err(duplicate(name)),
            "host" => {
                self.host = Some(value.parse::<PeerId>().map_err(|_| InviteError::BadHost {
                    found: value.chars().take(80).collect(),
                })?);
            }
            "lobby" if self.lobby => return Err(duplicate(name)),
            "lobby" if value != "1" => {
                return Err(InviteError::BadLobby {
                    found: value.chars().take(8).collect(),
                });
            }
            "lobby" => self.lobby = true,
            "relay" => {
                self.relays.push(parse_relay(value)?);
                if self.relays.len() > MAX_RELAYS {
                    return Err(InviteError::TooManyRelays {
                        count: query.matches("relay=").count(),
                        max: MAX_RELAYS,
                    });
                }
            }
            other => {
                return Err(InviteError::UnknownParameter {
                    name: other.chars().take(40).collect(),
                });
            }
        }
        Ok(())
    }
}

fn duplicate(name: &str) -> InviteError {
    InviteError::DuplicateParameter {
        name: name.to_owned(),
    }
}

fn is_invite_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            ':' | '/' | '?' | '&' | '=' | '-' | '_' | '.' | '%' | '[' | ']'
        )
}

fn parse_secret(value: &str) -> Result<MeetingSecret, InviteError> {
    if value.len() != 43 {
        return Err(InviteError::BadSecret);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| InviteError::BadSecret)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| InviteError::BadSecret)?;
    Ok(MeetingSecret(bytes))
}

/// Parses a relay multiaddr, which must name the relay's peer id at the end.
pub fn parse_relay(value: &str) -> Result<Multiaddr, InviteError> {
    let bad = || InviteError::BadRelay {
        found: value.chars().take(120).collect(),
    };
    let addr: Multiaddr = value.parse().map_err(|_| bad())?;
    match addr.iter().last() {
        Some(Protocol::P2p(_)) if addr.len() > 1 => Ok(addr),
        _ => Err(bad()),
    }
}

/// The peer id at the end of a `/p2p/<id>` multiaddr.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn sample() -> Invite {
        let mut rng = StdRng::seed_from_u64(7);
        let mut invite = Invite::new_meeting(&mut rng);
        invite.host = Some(crate::identity::Identity::generate().peer_id());
        let relay_peer = crate::identity::Identity::generate().peer_id();
        invite.relays = vec![
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay_peer}")
                .parse()
                .unwrap(),
        ];
        invite
    }

    #[test]
    fn round_trips() {
        let invite = sample();
        let uri = invite.to_uri();
        assert!(uri.starts_with("conclave:v1/"));
        assert_eq!(uri.parse::<Invite>().unwrap(), invite);
        assert_eq!(format!("  {uri}\n").parse::<Invite>().unwrap(), invite);
    }

    #[test]
    fn each_defect_has_its_own_error() {
        let uri = sample().to_uri();
        let cases: Vec<(String, InviteError)> = vec![
            ("".into(), InviteError::Empty),
            (
                "x".repeat(5000),
                InviteError::TooLong {
                    len: 5000,
                    max: MAX_INVITE_LEN,
                },
            ),
            (
                uri.replacen("conclave:", "zoom:", 1),
                InviteError::WrongScheme,
            ),
            (
                uri.replacen("v1/", "v2/", 1),
                InviteError::UnsupportedVersion { found: "v2".into() },
            ),
            (
                uri.replacen(&sample().meeting_id.to_string(), "xyz", 1),
                InviteError::BadMeetingId {
                    found: "xyz".into(),
                },
            ),
            (
                uri.replacen("secret=", "secrets=", 1),
                InviteError::UnknownParameter {
                    name: "secrets".into(),
                },
            ),
            (
                format!("{uri}&host=abc"),
                InviteError::DuplicateParameter {
                    name: "host".into(),
                },
            ),
            (
                format!("{uri}&relay=/ip4/1.2.3.4/tcp/1"),
                InviteError::BadRelay {
                    found: "/ip4/1.2.3.4/tcp/1".into(),
                },
            ),
            (
                format!("{uri}&oops"),
                InviteError::MalformedParameter {
                    text: "oops".into(),
                },
            ),
            (format!("{uri} x"), InviteError::BadCharacter { found: ' ' }),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Invite>().err(), Some(expected), "for {text:?}");
        }
    }

    #[test]
    fn secret_and_id_defects() {
        let invite = sample();
        let id = invite.meeting_id.to_string();
        let good_secret = URL_SAFE_NO_PAD.encode(invite.secret.expose());
        let short = format!("conclave:v1/{id}?secret={}", &good_secret[..42]);
        assert_eq!(short.parse::<Invite>().err(), Some(InviteError::BadSecret));
        let missing = format!("conclave:v1/{id}");
        assert_eq!(
            missing.parse::<Invite>().err(),
            Some(InviteError::MissingSecret)
        );
        let upper = format!("conclave:v1/{}?secret={good_secret}", id.to_uppercase());
        assert!(matches!(
            upper.parse::<Invite>(),
            Err(InviteError::BadMeetingId { .. })
        ));
        let bad_host = format!("conclave:v1/{id}?secret={good_secret}&host=notapeer");
        assert_eq!(
            bad_host.parse::<Invite>().err(),
            Some(InviteError::BadHost {
                found: "notapeer".into()
            })
        );
        let relay = invite.relays[0].to_string();
        let many = format!(
            "conclave:v1/{id}?secret={good_secret}{}",
            format!("&relay={relay}").repeat(9)
        );
        assert_eq!(
            many.parse::<Invite>().err(),
            Some(InviteError::TooManyRelays { count: 9, max: 8 })
        );
    }

    #[test]
    fn lobby_flag_round_trips_and_is_strict() {
        let mut invite = sample();
        invite.lobby = true;
        let uri = invite.to_uri();
        assert!(uri.contains("&lobby=1"));
        assert_eq!(uri.parse::<Invite>().unwrap(), invite);
        assert_eq!(
            format!("{uri}&lobby=1").parse::<Invite>().err(),
            Some(InviteError::DuplicateParameter {
                name: "lobby".into()
            })
        );
        let two = uri.replace("lobby=1", "lobby=2");
        assert_eq!(
            two.parse::<Invite>().err(),
            Some(InviteError::BadLobby { found: "2".into() })
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let invite = sample();
        let secret = URL_SAFE_NO_PAD.encode(invite.secret.expose());
        let rendered = format!("{invite:?} {:?}", invite.secret);
        assert!(!rendered.contains(&secret));
        assert!(!rendered.contains(&hex::encode(invite.secret.expose())));
        assert!(rendered.contains("MeetingSecret(..)"));
    }

    proptest! {
        #[test]
        fn any_invite_round_trips(id in any::<[u8; 16]>(), secret in any::<[u8; 32]>(), port in 1u16.., relays in 0usize..=MAX_RELAYS, with_host in any::<bool>(), lobby in any::<bool>()) {
            let relay_peer = PeerId::random();
            let invite = Invite {
                meeting_id: MeetingId(id),
                secret: MeetingSecret(secret),
                host: with_host.then(PeerId::random),
                relays: (0..relays).map(|i| format!("/ip4/127.0.0.{i}/udp/{port}/quic-v1/p2p/{relay_peer}").parse().unwrap()).collect(),
                lobby,
            };
            prop_assert_eq!(invite.to_uri().parse::<Invite>().unwrap(), invite);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = text.parse::<Invite>();
        }
    }
}
