//! TURN credentials over libp2p: the `/conclave/turn/1.0.0` request-response protocol.
//!
//! Protocol flow (one request, one response, per stream; the stream is Noise-encrypted and
//! authenticated, so the relay knows which identity asks):
//! 1. client → relay: [`TurnRequest`] (empty: the identity is the connection's peer id);
//! 2. relay → client: [`TurnResponse::Credentials`] with an [`IceServer`] (STUN and TURN
//!    URLs, short-lived "TURN REST API" username and password, expiry),
//!    [`TurnResponse::Servers`] with several (the relay's and external TURN servers), or
//!    [`TurnResponse::Refused`] with a reason (not on the relay's allowlist, TURN disabled).
//!
//! Frames are those of the control protocol (see [`super`]): u32 big-endian length,
//! version byte, CBOR body, every list and string bounded.
//!
//! The client side (which relays are asked, when a round is repeated) is
//! [`crate::net::turn_fetch`]; the relay side is `conclave-relay`'s node.

use serde::{Deserialize, Serialize};

use super::{Message, WireError};

/// Most URLs in one [`IceServer`].
pub const MAX_URLS: usize = 8;
/// Most servers in one [`TurnResponse::Servers`].
pub const MAX_SERVERS: usize = 8;
/// Longest URL, username or credential, in bytes.
pub const MAX_FIELD_LEN: usize = 256;

/// A request for TURN credentials. The requester's identity is the connection's peer id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRequest {}

/// The SHA-256 digest of a DER certificate: what a client pins for a `turns:` server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CertificatePin([u8; 32]);

impl CertificatePin {
    /// The pin of the DER certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(der).into())
    }

    /// Whether `der` is the pinned certificate.
    pub fn matches(&self, der: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(Self::of(der).0.ct_eq(&self.0))
    }
}

impl std::fmt::Display for CertificatePin {
    /// Colon-separated upper-case hex pairs, as `openssl x509 -fingerprint -sha256` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CertificatePin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertificatePin({self})")
    }
}

impl std::str::FromStr for CertificatePin {
    type Err = WireError;

    /// 32 bytes in hex, with or without colons between the pairs, either case.
    fn from_str(text: &str) -> Result<Self, WireError> {
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        let mut pin = [0u8; 32];
        hex::decode_to_slice(&digits, &mut pin).map_err(|_| WireError::InvalidField {
            field: "certificate pin",
        })?;
        Ok(Self(pin))
    }
}

impl From<CertificatePin> for String {
    fn from(pin: CertificatePin) -> Self {
        pin.to_string()
    }
}

impl TryFrom<String> for CertificatePin {
    type Error = WireError;

    fn try_from(text: String) -> Result<Self, WireError> {
        text.parse()
    }
}

/// One ICE server entry, in the shape of WebRTC's `RTCIceServer`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`, `turn:HOST:PORT?transport=tcp`,
    /// `turns:HOST:PORT?transport=tcp` (TURN over TLS).
    pub urls: Vec<String>,
    /// TURN username (`<expiry unix seconds>:<peer id>`).
    pub username: String,
    /// TURN password (`base64(HMAC-SHA1(relay secret, username))`).
    pub credential: String,
    /// When the credentials stop working, Unix seconds.
    pub expires_unix: u64,
    /// The certificate the `turns:` URLs present, pinned by the client (no certificate
    /// authority is consulted; absent when there is no `turns:` URL). It arrives over the
    /// authenticated libp2p channel, so an impostor on the TLS path is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_pin: Option<CertificatePin>,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &"..")
            .field("expires_unix", &self.expires_unix)
            .field("tls_pin", &self.tls_pin)
            .finish()
    }
}

/// Why a relay refused credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TurnRefusal {
    /// The requester is not on the relay's allowlist.
    NotAllowed,
    /// The relay runs no TURN service.
    Unavailable,
}

impl std::fmt::Display for TurnRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TurnRefusal::NotAllowed => "this identity is not on the relay's allowlist",
            TurnRefusal::Unavailable => "the relay runs no TURN service",
        })
    }
}

/// The relay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TurnResponse {
    /// Credentials and where to use them (a relay that issues for its own TURN server
    /// only).
    Credentials(IceServer),
    /// No credentials, and why.
    Refused(TurnRefusal),
    /// Credentials for several servers: the relay's own, if it runs one, and the external
    /// TURN servers it issues for (at most [`MAX_SERVERS`]). Clients before this variant
    /// cannot decode it (they get no TURN from such a relay).
    Servers(Vec<IceServer>),
}

impl Message for TurnRequest {
    fn validate(&self) -> Result<(), WireError> {
        Ok(())
    }
}

impl Message for TurnResponse {
    fn validate(&self) -> Result<(), WireError> {
        match self {
            TurnResponse::Credentials(server) => server.validate(),
            TurnResponse::Refused(_) => Ok(()),
            TurnResponse::Servers(servers) => {
                if servers.len() > MAX_SERVERS {
                    return Err(WireError::TooMany {
                        what: "servers",
                        len: servers.len(),
                        max: MAX_SERVERS,
                    });
                }
                servers.iter().try_for_each(IceServer::validate)
            }
        }
    }
}

impl IceServer {
    fn validate(&self) -> Result<(), WireError> {
        if self.urls.len() > MAX_URLS {
            return Err(WireError::TooMany {
                what: "urls",
                len: self.urls.len(),
                max: MAX_URLS,
            });
        }
        let fields = self.urls.iter().chain([&self.username, &self.credential]);
        for field in fields {
            if field.len() > MAX_FIELD_LEN || field.chars().any(char::is_control) {
                return Err(WireError::InvalidField {
                    field: "ice server",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> IceServer {
        IceServer {
            urls: vec![
                "stun:198.51.100.7:3478".into(),
                "turn:198.51.100.7:3478?transport=udp".into(),
                "turn:198.51.100.7:3478?transport=tcp".into(),
            ],
            username: "1700000000:12D3KooWabc".into(),
            credential: "c2VjcmV0".into(),
            expires_unix: 1_700_000_000,
            tls_pin: None,
        }
    }

    #[test]
    fn a_pin_roundtrips_in_either_spelling_and_matches_only_its_certificate() {
        let pin = CertificatePin::of(b"certificate");
        let text = pin.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(text.parse::<CertificatePin>(), Ok(pin));
        let bare: String = text.chars().filter(|c| *c != ':').collect();
        assert_eq!(bare.to_lowercase().parse::<CertificatePin>(), Ok(pin));
        assert!("AB:CD".parse::<CertificatePin>().is_err());
        assert!(pin.matches(b"certificate"));
        assert!(!pin.matches(b"certificatf"));

        let mut pinned = server();
        pinned
            .urls
            .push("turns:198.51.100.7:443?transport=tcp".into());
        pinned.tls_pin = Some(pin);
        let response = TurnResponse::Credentials(pinned.clone());
        assert_eq!(TurnResponse::decode(&response.encode()), Ok(response));
        let several = TurnResponse::Servers(vec![server(), pinned.clone()]);
        assert_eq!(TurnResponse::decode(&several.encode()), Ok(several));
        let too_many = TurnResponse::Servers(vec![pinned; MAX_SERVERS + 1]);
        assert!(matches!(
            TurnResponse::decode(&too_many.encode()),
            Err(WireError::TooMany { .. })
        ));
    }

    #[test]
    fn messages_roundtrip() {
        let response = TurnResponse::Credentials(server());
        assert_eq!(TurnResponse::decode(&response.encode()), Ok(response));
        let refused = TurnResponse::Refused(TurnRefusal::NotAllowed);
        assert_eq!(TurnResponse::decode(&refused.encode()), Ok(refused));
        assert_eq!(
            TurnRequest::decode(&TurnRequest {}.encode()),
            Ok(TurnRequest {})
        );
    }

    #[test]
    fn oversized_or_garbage_responses_are_refused() {
        let mut many = server();
        many.urls = vec!["stun:x".into(); MAX_URLS + 1];
        assert!(matches!(
            TurnResponse::decode(&TurnResponse::Credentials(many).encode()),
            Err(WireError::TooMany { .. })
        ));
        let mut long = server();
        long.username = "u".repeat(MAX_FIELD_LEN + 1);
        assert!(TurnResponse::decode(&TurnResponse::Credentials(long).encode()).is_err());
        assert!(TurnResponse::decode(&[]).is_err());
        assert!(TurnResponse::decode(&[1, 0xff, 0x00]).is_err());
    }

    #[test]
    fn debug_hides_the_credential() {
        assert!(!format!("{:?}", server()).contains("c2VjcmV0"));
    }
}
