//! Control messages and their encoding.
//!
//! Frame on a request-response stream (see [`super::codec`]):
//!
//! ```text
//! u32 big-endian length N (N <= MAX_FRAME_LEN) | N bytes: version byte (= WIRE_VERSION) | CBOR body
//! ```
//!
//! Protocol flow (one request, one response, per stream):
//! 1. joiner → member: [`Request::Hello`]; member → joiner: [`Response::Welcome`] (with
//!    the member list and a MAC proving the member knows the secret) or [`Response::Refused`]
//!    (nothing else: a refusal must not reveal who is in the meeting).
//! 2. member → member, every heartbeat interval: [`Request::Heartbeat`] (the sender's view
//!    of the member list, so members who joined through different peers learn of each
//!    other); answer [`Response::Ack`], or [`Response::NotMember`] if the receiver does not
//!    count the sender as a member (then the sender says hello again).
//! 3. member → members on leaving: [`Request::Bye`]; answer [`Response::Ack`].
//!
//! Decoding is strict and bounded: frame size, list lengths, name length and address counts
//! are checked, and every failure is a [`WireError`], never a panic.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::admission::{MAC_LEN, NONCE_LEN};
use crate::invite::MeetingId;

/// Version byte of the current encoding.
pub const WIRE_VERSION: u8 = 1;
/// Largest frame accepted or sent, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Most members listed in one message.
pub const MAX_MEMBERS: usize = 64;
/// Longest display name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// Most addresses per member.
pub const MAX_ADDRS: usize = 8;
/// Longest single multiaddr, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// Why bytes were not a valid control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Empty frame.
    #[error("empty frame")]
    Empty,
    /// Frame larger than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Length announced or found.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// Unknown encoding version.
    #[error("unsupported wire version {found} (expected {expected})")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// Version this build speaks.
        expected: u8,
    },
    /// The CBOR body does not decode into a known message.
    #[error("malformed message body")]
    Malformed,
    /// A list or string is longer than its bound.
    #[error("{what} has {len} entries, at most {max} are allowed")]
    TooMany {
        /// What overflowed.
        what: &'static str,
        /// Found.
        len: usize,
        /// Allowed.
        max: usize,
    },
    /// A field holds an invalid value (bad peer id, bad address, bad length).
    #[error("invalid {field}")]
    InvalidField {
        /// Which field.
        field: &'static str,
    },
}

/// A member as described to other members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's peer id.
    pub peer_id: PeerId,
    /// Its display name.
    pub name: String,
    /// Addresses it can be reached at.
    pub addrs: Vec<Multiaddr>,
}

/// A joiner's proof that it knows the meeting secret (see [`crate::admission`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The meeting the joiner wants to enter.
    pub meeting_id: MeetingId,
    /// Fresh random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The joiner's clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// HMAC over meeting, both peer ids, nonce and time.
    pub mac: [u8; MAC_LEN],
    /// The joiner's display name.
    pub name: String,
    /// Where the joiner can be reached.
    pub addrs: Vec<Multiaddr>,
}

/// A request on the control protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Admission: prove knowledge of the secret, ask to be counted as a member.
    Hello(Hello),
    /// Liveness and member-list gossip.
    Heartbeat {
        /// Which meeting.
        meeting_id: MeetingId,
        /// The sender's member list (including itself).
        members: Vec<MemberInfo>,
    },
    /// The sender leaves the meeting.
    Bye {
        /// Which meeting.
        meeting_id: MeetingId,
    },
}

/// A response on the control protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// The hello was accepted.
    Welcome {
        /// HMAC proving the responder knows the secret.
        mac: [u8; MAC_LEN],
        /// The responder's member list (including itself).
        members: Vec<MemberInfo>,
    },
    /// The hello was refused. Deliberately carries no detail.
    Refused,
    /// Acknowledged.
    Ack,
    /// The responder does not count the sender as a member.
    NotMember,
}

// ---- serde representation: plain bytes and strings, validated on the way in ----

#[derive(Serialize, Deserialize)]
struct RawMember {
    #[serde(with = "serde_bytes_vec")]
    peer_id: Vec<u8>,
    name: String,
    addrs: Vec<RawAddr>,
}

#[derive(Serialize, Deserialize)]
struct RawAddr(#[serde(with = "serde_bytes_vec")] Vec<u8>);

#[derive(Serialize, Deserialize)]
enum RawRequest {
    Hello {
        #[serde(with = "serde_bytes_vec")]
        meeting_id: Vec<u8>,
        #[serde(with = "serde_bytes_vec")]
        nonce: Vec<u8>,
        unix_ms: u64,
        #[serde(with = "serde_bytes_vec")]
        mac: Vec<u8>,
        name: String,
        addrs: Vec<RawAddr>,
    },
    Heartbeat {
        #[serde(with = "serde_bytes_vec")]
        meeting_id: Vec<u8>,
        members: Vec<RawMember>,
    },
    Bye {
        #[serde(with = "serde_bytes_vec")]
        meeting_id: Vec<u8>,
    },
}

#[derive(Serialize, Deserialize)]
enum RawResponse {
    Welcome {
        #[serde(with = "serde_bytes_vec")]
        mac: Vec<u8>,
        members: Vec<RawMember>,
    },
    Refused,
    Ack,
    NotMember,
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let value = ciborium::Value::deserialize(d)?;
        match value {
            ciborium::Value::Bytes(bytes) => Ok(bytes),
            _ => Err(serde::de::Error::custom("expected a byte string")),
        }
    }
}

impl Request {
    /// Encodes into a frame body (version byte + CBOR).
    pub fn encode(&self) -> Vec<u8> {
        let raw = match self {
            Request::Hello(hello) => RawRequest::Hello {
                meeting_id: hello.meeting_id.0.to_vec(),
                nonce: hello.nonce.to_vec(),
                unix_ms: hello.unix_ms,
                mac: hello.mac.to_vec(),
                name: hello.name.clone(),
                addrs: raw_addrs(&hello.addrs),
            },
            Request::Heartbeat {
                meeting_id,
                members,
            } => RawRequest::Heartbeat {
                meeting_id: meeting_id.0.to_vec(),
                members: members.iter().map(raw_member).collect(),
            },
            Request::Bye { meeting_id } => RawRequest::Bye {
                meeting_id: meeting_id.0.to_vec(),
            },
        };
        encode_body(&raw)
    }

    /// Decodes a frame body.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match decode_body::<RawRequest>(bytes)? {
            RawRequest::Hello {
                meeting_id,
                nonce,
                unix_ms,
                mac,
                name,
                addrs,
            } => Ok(Request::Hello(Hello {
                meeting_id: meeting_id_from(&meeting_id)?,
                nonce: fixed(&nonce, "nonce")?,
                unix_ms,
                mac: fixed(&mac, "mac")?,
                name: checked_name(name)?,
                addrs: addrs_from(addrs)?,
            })),
            RawRequest::Heartbeat {
                meeting_id,
                members,
            } => Ok(Request::Heartbeat {
                meeting_id: meeting_id_from(&meeting_id)?,
                members: members_from(members)?,
            }),
            RawRequest::Bye { meeting_id } => Ok(Request::Bye {
                meeting_id: meeting_id_from(&meeting_id)?,
            }),
        }
    }

    /// Length of [`Request::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }
}

impl Response {
    /// Encodes into a frame body (version byte + CBOR).
    pub fn encode(&self) -> Vec<u8> {
        let raw = match self {
            Response::Welcome { mac, members } => RawResponse::Welcome {
                mac: mac.to_vec(),
                members: members.iter().map(raw_member).collect(),
            },
            Response::Refused => RawResponse::Refused,
            Response::Ack => RawResponse::Ack,
            Response::NotMember => RawResponse::NotMember,
        };
        encode_body(&raw)
    }

    /// Decodes a frame body.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(match decode_body::<RawResponse>(bytes)? {
            RawResponse::Welcome { mac, members } => Response::Welcome {
                mac: fixed(&mac, "mac")?,
                members: members_from(members)?,
            },
            RawResponse::Refused => Response::Refused,
            RawResponse::Ack => Response::Ack,
            RawResponse::NotMember => Response::NotMember,
        })
    }
}

fn encode_body<T: Serialize>(raw: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    ciborium::into_writer(raw, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

fn decode_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge {
            len: bytes.len(),
            max: MAX_FRAME_LEN,
        });
    }
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion {
            found: version,
            expected: WIRE_VERSION,
        });
    }
    // ciborium bounds recursion depth itself; the frame bound caps allocation.
    ciborium::from_reader(body).map_err(|_| WireError::Malformed)
}

fn raw_addrs(addrs: &[Multiaddr]) -> Vec<RawAddr> {
    addrs.iter().map(|a| RawAddr(a.to_vec())).collect()
}

fn raw_member(member: &MemberInfo) -> RawMember {
    RawMember {
        peer_id: member.peer_id.to_bytes(),
        name: member.name.clone(),
        addrs: raw_addrs(&member.addrs),
    }
}

fn fixed<const N: usize>(bytes: &[u8], field: &'static str) -> Result<[u8; N], WireError> {
    bytes
        .try_into()
        .map_err(|_| WireError::InvalidField { field })
}

fn meeting_id_from(bytes: &[u8]) -> Result<MeetingId, WireError> {
    Ok(MeetingId(fixed(bytes, "meeting id")?))
}

fn checked_name(name: String) -> Result<String, WireError> {
    if name.len() > MAX_NAME_LEN {
        return Err(WireError::TooMany {
            what: "name",
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(WireError::InvalidField { field: "name" });
    }
    Ok(name)
}

fn addrs_from(addrs: Vec<RawAddr>) -> Result<Vec<Multiaddr>, WireError> {
    if addrs.len() > MAX_ADDRS {
        return Err(WireError::TooMany {
            what: "addresses",
            len: addrs.len(),
            max: MAX_ADDRS,
        });
    }
    addrs
        .into_iter()
        .map(|RawAddr(bytes)| {
            if bytes.len() > MAX_ADDR_LEN {
                return Err(WireError::InvalidField { field: "address" });
            }
            Multiaddr::try_from(bytes).map_err(|_| WireError::InvalidField { field: "address" })
        })
        .collect()
}

fn members_from(members: Vec<RawMember>) -> Result<Vec<MemberInfo>, WireError> {
    if members.len() > MAX_MEMBERS {
        return Err(WireError::TooMany {
            what: "members",
            len: members.len(),
            max: MAX_MEMBERS,
        });
    }
    members
        .into_iter()
        .map(|m| {
            Ok(MemberInfo {
                peer_id: PeerId::from_bytes(&m.peer_id)
                    .map_err(|_| WireError::InvalidField { field: "peer id" })?,
                name: checked_name(m.name)?,
                addrs: addrs_from(m.addrs)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(port: u16, name: &str) -> MemberInfo {
        MemberInfo {
            peer_id: PeerId::random(),
            name: name.to_owned(),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        }
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert_eq!(Request::decode(&[]), Err(WireError::Empty));
        assert_eq!(
            Request::decode(&[9, 1, 2]),
            Err(WireError::UnsupportedVersion {
                found: 9,
                expected: 1
            })
        );
        assert_eq!(
            Request::decode(&[WIRE_VERSION, 0xff, 0x00]),
            Err(WireError::Malformed)
        );
        let big = vec![WIRE_VERSION; MAX_FRAME_LEN + 1];
        assert!(matches!(
            Request::decode(&big),
            Err(WireError::FrameTooLarge { .. })
        ));
        // A valid CBOR body with a wrong-length meeting id.
        let body = encode_body(&RawRequest::Bye {
            meeting_id: vec![1, 2, 3],
        });
        assert_eq!(
            Request::decode(&body),
            Err(WireError::InvalidField {
                field: "meeting id"
            })
        );
    }

    #[test]
    fn oversized_lists_are_refused() {
        let members: Vec<MemberInfo> = (0..=MAX_MEMBERS as u16)
            .map(|i| member(i + 1, "m"))
            .collect();
        let bytes = Request::Heartbeat {
            meeting_id: MeetingId([1; 16]),
            members,
        }
        .encode();
        assert!(matches!(
            Request::decode(&bytes),
            Err(WireError::TooMany {
                what: "members",
                ..
            })
        ));
        let long_name = Request::Bye {
            meeting_id: MeetingId([1; 16]),
        };
        assert!(Request::decode(&long_name.encode()).is_ok());
        let hello = Request::Hello(Hello {
            meeting_id: MeetingId([1; 16]),
            nonce: [0; NONCE_LEN],
            unix_ms: 1,
            mac: [0; MAC_LEN],
            name: "x".repeat(MAX_NAME_LEN + 1),
            addrs: vec![],
        });
        assert!(matches!(
            Request::decode(&hello.encode()),
            Err(WireError::TooMany { what: "name", .. })
        ));
    }

    prop_compose! {
        fn arb_member()(port in 1u16.., name in "[a-zA-Z ]{0,20}") -> MemberInfo {
            member(port, &name)
        }
    }

    proptest! {
        #[test]
        fn requests_round_trip(
            id in any::<[u8; 16]>(), nonce in any::<[u8; 16]>(), unix_ms in any::<u64>(),
            mac in any::<[u8; 32]>(), name in "[a-zA-Zé ]{0,20}", members in proptest::collection::vec(arb_member(), 0..8),
        ) {
            let meeting_id = MeetingId(id);
            let requests = [
                Request::Hello(Hello { meeting_id, nonce, unix_ms, mac, name, addrs: members.first().map(|m| m.addrs.clone()).unwrap_or_default() }),
                Request::Heartbeat { meeting_id, members: members.clone() },
                Request::Bye { meeting_id },
            ];
            for request in requests {
                let bytes = request.encode();
                prop_assert_eq!(bytes.len(), request.encoded_len());
                prop_assert!(bytes.len() <= MAX_FRAME_LEN);
                prop_assert_eq!(Request::decode(&bytes).unwrap(), request);
            }
            for response in [Response::Welcome { mac, members }, Response::Refused, Response::Ack, Response::NotMember] {
                prop_assert_eq!(Response::decode(&response.encode()).unwrap(), response);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }
    }
}
