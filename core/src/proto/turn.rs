//! TURN credentials over libp2p: the `/conclave/turn/1.0.0` request-response protocol.
//!
//! Protocol flow (one request, one response, per stream; the stream is Noise-encrypted and
//! authenticated, so the relay knows which identity asks):
//! 1. client → relay: [`TurnRequest`] (empty: the identity is the connection's peer id);
//! 2. relay → client: [`TurnResponse::Credentials`] with an [`IceServer`] (STUN and TURN
//!    URLs, short-lived "TURN REST API" username and password, expiry), or
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
/// Longest URL, username or credential, in bytes.
pub const MAX_FIELD_LEN: usize = 256;

/// A request for TURN credentials. The requester's identity is the connection's peer id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRequest {}

/// One ICE server entry, in the shape of WebRTC's `RTCIceServer`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`, `turn:HOST:PORT?transport=tcp`.
    pub urls: Vec<String>,
    /// TURN username (`<expiry unix seconds>:<peer id>`).
    pub username: String,
    /// TURN password (`base64(HMAC-SHA1(relay secret, username))`).
    pub credential: String,
    /// When the credentials stop working, Unix seconds.
    pub expires_unix: u64,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &"..")
            .field("expires_unix", &self.expires_unix)
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
    /// Credentials and where to use them.
    Credentials(IceServer),
    /// No credentials, and why.
    Refused(TurnRefusal),
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
        }
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
