//! Control messages: admission, liveness, the two-phase commit, welcomes, chat carriers.
//!
//! Each message travels as the body of one frame (see [`super`] for the frame and
//! [`super::framing`] for how frames sit on a stream).
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
//! 4. committer → members: [`Request::Commit`] (why it removes and adds whom travels
//!    inside the MLS commit, as its authenticated data: [`CommitReasons`]), then
//!    [`Request::Confirm`] or [`Request::Abort`]; the joiner it added gets
//!    [`Request::Welcome`].
//! 5. member → members: [`Request::Group`] (an MLS application message: chat).
//! 6. host → committer: [`Request::Approve`] (lobby); host (or, once the host is gone, any
//!    member) → every member: [`Request::Kick`]. Both carry the signer's signed statement
//!    ([`crate::group::statements`]), which the commit carries on to every receiver.
//!
//! Decoding is strict and bounded: frame size, list lengths, name length and address counts
//! are checked, and every failure is a [`WireError`], never a panic.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::admission::{MAC_LEN, NONCE_LEN};
use crate::group::epoch_proof::{AUTHENTICATOR_HASH_LEN, SIGNATURE_LEN};
use crate::invite::MeetingId;
use crate::proto::to_cbor;

use super::{Message, WireError};

/// Most members listed in one message.
pub const MAX_MEMBERS: usize = 64;
/// Longest display name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// Most addresses per member.
pub const MAX_ADDRS: usize = 8;
/// Longest single multiaddr, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// A member as described to other members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's peer id.
    #[serde(with = "codec_peer")]
    pub peer_id: PeerId,
    /// Its display name.
    pub name: String,
    /// Addresses it can be reached at.
    #[serde(with = "codec_addrs")]
    pub addrs: Vec<Multiaddr>,
}

/// A joiner's proof that it knows the meeting secret (see [`crate::admission`]), with the
/// key package the committer adds to the MLS group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The meeting the joiner wants to enter.
    #[serde(with = "codec_meeting")]
    pub meeting_id: MeetingId,
    /// Fresh random nonce.
    #[serde(with = "codec_array")]
    pub nonce: [u8; NONCE_LEN],
    /// The joiner's clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// HMAC over meeting, both peer ids, nonce and time.
    #[serde(with = "codec_array")]
    pub mac: [u8; MAC_LEN],
    /// The joiner's display name.
    pub name: String,
    /// Where the joiner can be reached.
    #[serde(with = "codec_addrs")]
    pub addrs: Vec<Multiaddr>,
    /// The joiner's MLS key package (an `MlsMessage`), empty for a member greeting a member.
    #[serde(with = "codec_bytes")]
    pub key_package: Vec<u8>,
}

/// Why a member was removed, as the committer states it in its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalReason {
    /// It said goodbye.
    Left,
    /// The host removed it.
    Kicked,
    /// It stopped answering.
    TimedOut,
    /// It joined again with a new key package (restart); its old leaf is replaced.
    Replaced,
    /// It was the committer and left changes that were due uncommitted for too long (the
    /// takeover rule, `docs/protocol.md` §6).
    Withheld,
}

/// A signed statement ([`crate::group::statements`]): an ed25519 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementSignature(#[serde(with = "codec_array")] pub [u8; SIGNATURE_LEN]);

/// Who signed the statement that justifies a removal, and the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The signer: the member itself (a leave), or the host (a kick).
    #[serde(with = "codec_peer")]
    pub signer: PeerId,
    /// Its signature of the statement about the removed leaf.
    pub signature: StatementSignature,
}

/// A removal, as a commit states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Who.
    #[serde(with = "codec_peer")]
    pub peer_id: PeerId,
    /// Why.
    pub reason: RemovalReason,
    /// The signed statement behind a leave or a kick.
    #[serde(default)]
    pub evidence: Option<Evidence>,
}

/// The host's signed approval of a joiner of a lobby meeting, carried by the commit that
/// adds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The joiner.
    #[serde(with = "codec_peer")]
    pub joiner: PeerId,
    /// The host's signature of "let this joiner in".
    pub signature: StatementSignature,
}

/// Why a commit removes and adds whom: the commit's MLS authenticated data, so every
/// receiver reads the same reasons under the committer's signature, and checks them
/// (`docs/protocol.md` §6, "Commit rules").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReasons {
    /// One entry per removed member.
    pub removals: Vec<Removal>,
    /// The host's approvals of the joiners added (lobby meetings).
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

impl CommitReasons {
    /// The bytes a commit carries as its authenticated data.
    pub fn to_aad(&self) -> Vec<u8> {
        to_cbor(self)
    }

    /// Reads a commit's authenticated data: strict CBOR, bounded lists.
    pub fn from_aad(aad: &[u8]) -> Result<Self, WireError> {
        let reasons: Self = ciborium::from_reader(aad).map_err(|_| WireError::Malformed)?;
        check_len("removals", reasons.removals.len(), MAX_MEMBERS)?;
        check_len("approvals", reasons.approvals.len(), MAX_MEMBERS)?;
        Ok(reasons)
    }
}

/// A request on the control protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Admission: prove knowledge of the secret (and hand the committer a key package).
    Hello(Hello),
    /// Liveness and member-list gossip.
    Heartbeat {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// The sender's peer list (including itself).
        members: Vec<MemberInfo>,
        /// The sender's MLS epoch, if it is in the group. On its own only informative:
        /// what counts is `proof`.
        #[serde(default)]
        epoch: Option<u64>,
        /// The sender's signed proof of `epoch` (absent from older peers, and from a
        /// sender not in the group): a member at the same epoch compares the hash with its
        /// own (fork detection); a later epoch counts towards joining again only with a
        /// valid proof (`docs/protocol.md` §5, "Epoch proofs").
        #[serde(default)]
        proof: Option<EpochProof>,
    },
    /// The sender leaves the meeting.
    Bye {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// A member's signed "I leave" for its leaf (absent from a joiner in the lobby),
        /// which the commit that removes it carries.
        #[serde(default)]
        leave: Option<StatementSignature>,
    },
    /// Phase 1 of a commit: the committer's MLS commit leaving `epoch`; stage it and answer.
    Commit {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// The epoch the commit leaves.
        epoch: u64,
        /// The MLS commit message (its authenticated data: [`CommitReasons`]).
        #[serde(with = "codec_bytes")]
        commit: Vec<u8>,
    },
    /// Phase 2: every member acknowledged the commit leaving `epoch`; apply it.
    Confirm {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// The epoch the commit leaves.
        epoch: u64,
    },
    /// The commit leaving `epoch` lost to a competing one; drop it.
    Abort {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// The epoch the commit leaves.
        epoch: u64,
    },
    /// The MLS welcome for a joiner, from the committer that added it.
    Welcome {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// The MLS welcome message.
        #[serde(with = "codec_bytes")]
        welcome: Vec<u8>,
        /// The members kicked from the meeting so far: the joiner refuses them too.
        #[serde(default, with = "codec_peers")]
        banned: Vec<PeerId>,
    },
    /// An MLS application message (chat, ...).
    Group {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// The MLS message.
        #[serde(with = "codec_bytes")]
        message: Vec<u8>,
    },
    /// The host lets a waiting joiner in (lobby meetings).
    Approve {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// Whom.
        #[serde(with = "codec_peer")]
        peer_id: PeerId,
        /// The host's signed "let this joiner in".
        #[serde(default)]
        signature: Option<StatementSignature>,
    },
    /// A member is to be removed: the requester's signed statement, sent to every member
    /// (whoever commits next carries it).
    Kick {
        /// Which meeting.
        #[serde(with = "codec_meeting")]
        meeting_id: MeetingId,
        /// Whom.
        #[serde(with = "codec_peer")]
        peer_id: PeerId,
        /// The requester's signed "remove this member", bound to the member's leaf.
        #[serde(default)]
        signature: Option<StatementSignature>,
    },
}

/// A member's signed statement of its epoch's authenticator hash
/// ([`crate::group::epoch_proof`]). Fixed-size fields: bounded by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochProof {
    /// Hash of the sender's MLS epoch authenticator at the heartbeat's epoch.
    #[serde(with = "codec_array")]
    pub authenticator_hash: [u8; AUTHENTICATOR_HASH_LEN],
    /// The sender's leaf-key signature over meeting, epoch and hash.
    #[serde(with = "codec_array")]
    pub signature: [u8; SIGNATURE_LEN],
}

/// A response on the control protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// The hello was accepted.
    Welcome {
        /// HMAC proving the responder knows the secret.
        #[serde(with = "codec_array")]
        mac: [u8; MAC_LEN],
        /// The responder's peer list (including itself).
        members: Vec<MemberInfo>,
    },
    /// The hello (or kick) was refused. Deliberately carries no detail.
    Refused,
    /// Acknowledged.
    Ack,
    /// The responder does not count the sender as a member.
    NotMember,
    /// The responder cannot take this commit or message now; `epoch` is its epoch.
    Nack {
        /// The responder's current epoch.
        epoch: u64,
    },
}

macro_rules! bytes_codec {
    ($name:ident, $ty:ty, $to:expr, $from:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use serde::{Deserializer, Serializer};

            pub(super) fn serialize<S: Serializer>(value: &$ty, s: S) -> Result<S::Ok, S::Error> {
                let to: fn(&$ty) -> Vec<u8> = $to;
                s.serialize_bytes(&to(value))
            }

            pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let ciborium::Value::Bytes(bytes) = ciborium::Value::deserialize(d)? else {
                    return Err(serde::de::Error::custom("expected a byte string"));
                };
                let from: fn(Vec<u8>) -> Option<$ty> = $from;
                from(bytes).ok_or_else(|| serde::de::Error::custom("invalid value"))
            }
        }
    };
}

bytes_codec!(codec_bytes, Vec<u8>, |v| v.clone(), Some);
bytes_codec!(codec_peer, PeerId, |p| p.to_bytes(), |b| {
    PeerId::from_bytes(&b).ok()
});
bytes_codec!(codec_meeting, MeetingId, |m| m.0.to_vec(), |b| b
    .try_into()
    .ok()
    .map(MeetingId));

mod codec_peers {
    use libp2p::PeerId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MAX_MEMBERS;

    pub(super) fn serialize<S: Serializer>(peers: &[PeerId], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<ciborium::Value> = peers
            .iter()
            .map(|p| ciborium::Value::Bytes(p.to_bytes()))
            .collect();
        raw.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeerId>, D::Error> {
        let raw: Vec<ciborium::Value> = Vec::deserialize(d)?;
        if raw.len() > MAX_MEMBERS {
            return Err(serde::de::Error::custom("too many peers"));
        }
        raw.into_iter()
            .map(|value| match value {
                ciborium::Value::Bytes(bytes) => PeerId::from_bytes(&bytes)
                    .map_err(|_| serde::de::Error::custom("invalid peer id")),
                _ => Err(serde::de::Error::custom("invalid peer id")),
            })
            .collect()
    }
}

mod codec_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, const N: usize>(
        value: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        match ciborium::Value::deserialize(d)? {
            ciborium::Value::Bytes(bytes) => bytes
                .try_into()
                .map_err(|_| serde::de::Error::custom("wrong length")),
            _ => Err(serde::de::Error::custom("expected a byte string")),
        }
    }
}

mod codec_addrs {
    use libp2p::Multiaddr;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{MAX_ADDR_LEN, MAX_ADDRS};

    pub(super) fn serialize<S: Serializer>(addrs: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<ciborium::Value> = addrs
            .iter()
            .map(|a| ciborium::Value::Bytes(a.to_vec()))
            .collect();
        raw.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
        let raw: Vec<ciborium::Value> = Vec::deserialize(d)?;
        if raw.len() > MAX_ADDRS {
            return Err(serde::de::Error::custom("too many addresses"));
        }
        raw.into_iter()
            .map(|value| match value {
                ciborium::Value::Bytes(bytes) if bytes.len() <= MAX_ADDR_LEN => {
                    Multiaddr::try_from(bytes)
                        .map_err(|_| serde::de::Error::custom("invalid address"))
                }
                _ => Err(serde::de::Error::custom("invalid address")),
            })
            .collect()
    }
}

/// Largest MLS payload (key package, commit, welcome, application message) in a frame.
pub const MAX_MLS_PAYLOAD: usize = 60 * 1024;

impl Message for Request {
    fn validate(&self) -> Result<(), WireError> {
        match self {
            Request::Hello(hello) => {
                check_name(&hello.name)?;
                check_payload("key package", &hello.key_package)
            }
            Request::Heartbeat { members, .. } => check_members(members),
            Request::Commit { commit, .. } => check_payload("commit", commit),
            Request::Welcome { welcome, .. } => check_payload("welcome", welcome),
            Request::Group { message, .. } => check_payload("group message", message),
            Request::Bye { .. }
            | Request::Confirm { .. }
            | Request::Abort { .. }
            | Request::Kick { .. }
            | Request::Approve { .. } => Ok(()),
        }
    }
}

impl Message for Response {
    fn validate(&self) -> Result<(), WireError> {
        match self {
            Response::Welcome { members, .. } => check_members(members),
            Response::Refused | Response::Ack | Response::NotMember | Response::Nack { .. } => {
                Ok(())
            }
        }
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::TooMany { what, len, max });
    }
    Ok(())
}

fn check_payload(what: &'static str, payload: &[u8]) -> Result<(), WireError> {
    check_len(what, payload.len(), MAX_MLS_PAYLOAD)
}

fn check_name(name: &str) -> Result<(), WireError> {
    check_len("name", name.len(), MAX_NAME_LEN)?;
    if name.chars().any(char::is_control) {
        return Err(WireError::InvalidField { field: "name" });
    }
    Ok(())
}

fn check_members(members: &[MemberInfo]) -> Result<(), WireError> {
    check_len("members", members.len(), MAX_MEMBERS)?;
    members.iter().try_for_each(|m| check_name(&m.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{MAX_FRAME_LEN, WIRE_VERSION, encode_body};
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
        let map = |id: Vec<u8>| {
            ciborium::Value::Map(vec![(
                ciborium::Value::Text("Bye".into()),
                ciborium::Value::Map(vec![(
                    ciborium::Value::Text("meeting_id".into()),
                    ciborium::Value::Bytes(id),
                )]),
            )])
        };
        assert_eq!(
            Request::decode(&encode_body(&map(vec![1, 2, 3]))),
            Err(WireError::Malformed)
        );
        assert_eq!(
            Request::decode(&encode_body(&map(vec![1; 16]))),
            Ok(Request::Bye {
                meeting_id: MeetingId([1; 16]),
                leave: None,
            })
        );
    }

    /// A heartbeat from an older peer (no `proof`) still decodes; a proof of the wrong size
    /// is refused.
    #[test]
    fn heartbeat_proofs_are_optional_and_fixed_size() {
        let heartbeat = |proof: Option<(Vec<u8>, Vec<u8>)>| {
            let mut fields = vec![
                (
                    ciborium::Value::Text("meeting_id".into()),
                    ciborium::Value::Bytes(vec![1; 16]),
                ),
                (
                    ciborium::Value::Text("members".into()),
                    ciborium::Value::Array(vec![]),
                ),
                (
                    ciborium::Value::Text("epoch".into()),
                    ciborium::Value::Integer(3.into()),
                ),
            ];
            if let Some((hash, signature)) = proof {
                fields.push((
                    ciborium::Value::Text("proof".into()),
                    ciborium::Value::Map(vec![
                        (
                            ciborium::Value::Text("authenticator_hash".into()),
                            ciborium::Value::Bytes(hash),
                        ),
                        (
                            ciborium::Value::Text("signature".into()),
                            ciborium::Value::Bytes(signature),
                        ),
                    ]),
                ));
            }
            encode_body(&ciborium::Value::Map(vec![(
                ciborium::Value::Text("Heartbeat".into()),
                ciborium::Value::Map(fields),
            )]))
        };
        assert_eq!(
            Request::decode(&heartbeat(None)),
            Ok(Request::Heartbeat {
                meeting_id: MeetingId([1; 16]),
                members: vec![],
                epoch: Some(3),
                proof: None,
            })
        );
        assert!(matches!(
            Request::decode(&heartbeat(Some((vec![2; 32], vec![3; 64])))),
            Ok(Request::Heartbeat { proof: Some(_), .. })
        ));
        assert_eq!(
            Request::decode(&heartbeat(Some((vec![2; 33], vec![3; 64])))),
            Err(WireError::Malformed)
        );
        assert_eq!(
            Request::decode(&heartbeat(Some((vec![2; 32], vec![3; 65])))),
            Err(WireError::Malformed)
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
            epoch: None,
            proof: None,
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
            leave: None,
        };
        assert!(Request::decode(&long_name.encode()).is_ok());
        let hello = Request::Hello(Hello {
            meeting_id: MeetingId([1; 16]),
            nonce: [0; NONCE_LEN],
            unix_ms: 1,
            mac: [0; MAC_LEN],
            name: "x".repeat(MAX_NAME_LEN + 1),
            addrs: vec![],
            key_package: vec![],
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
                Request::Hello(Hello { meeting_id, nonce, unix_ms, mac, name, addrs: members.first().map(|m| m.addrs.clone()).unwrap_or_default(), key_package: mac.to_vec() }),
                Request::Heartbeat { meeting_id, members: members.clone(), epoch: Some(unix_ms), proof: None },
                Request::Heartbeat { meeting_id, members: members.clone(), epoch: Some(unix_ms), proof: Some(EpochProof { authenticator_hash: mac, signature: [nonce, nonce, nonce, nonce].concat().try_into().unwrap() }) },
                Request::Bye { meeting_id, leave: None },
                Request::Bye { meeting_id, leave: Some(StatementSignature([nonce, nonce, nonce, nonce].concat().try_into().unwrap())) },
                Request::Commit { meeting_id, epoch: unix_ms, commit: nonce.to_vec() },
                Request::Confirm { meeting_id, epoch: unix_ms },
                Request::Abort { meeting_id, epoch: unix_ms },
                Request::Welcome { meeting_id, welcome: mac.to_vec(), banned: members.iter().map(|m| m.peer_id).collect() },
                Request::Group { meeting_id, message: nonce.to_vec() },
                Request::Approve { meeting_id, peer_id: members.first().map_or_else(PeerId::random, |m| m.peer_id), signature: None },
                Request::Kick { meeting_id, peer_id: members.last().map_or_else(PeerId::random, |m| m.peer_id), signature: Some(StatementSignature([mac, mac].concat().try_into().unwrap())) },
            ];
            // Every variant is listed above: adding one fails to compile here until it is.
            for request in &requests {
                match request {
                    Request::Hello(_) | Request::Heartbeat { .. } | Request::Bye { .. } | Request::Commit { .. }
                    | Request::Confirm { .. } | Request::Abort { .. } | Request::Welcome { .. } | Request::Group { .. }
                    | Request::Approve { .. } | Request::Kick { .. } => {}
                }
            }
            for request in requests {
                let bytes = request.encode();
                                prop_assert!(bytes.len() <= MAX_FRAME_LEN);
                prop_assert_eq!(Request::decode(&bytes).unwrap(), request);
            }
            for response in [Response::Welcome { mac, members }, Response::Refused, Response::Ack, Response::NotMember, Response::Nack { epoch: unix_ms }] {
                prop_assert_eq!(Response::decode(&response.encode()).unwrap(), response);
            }
        }

        #[test]
        fn commit_reasons_round_trip(members in proptest::collection::vec(arb_member(), 0..8), sig in any::<[u8; 32]>()) {
            let signature = StatementSignature([sig, sig].concat().try_into().unwrap());
            let reasons = CommitReasons {
                removals: members.iter().map(|m| Removal { peer_id: m.peer_id, reason: RemovalReason::Kicked, evidence: Some(Evidence { signer: m.peer_id, signature }) }).collect(),
                approvals: members.iter().map(|m| Approval { joiner: m.peer_id, signature }).collect(),
            };
            prop_assert_eq!(CommitReasons::from_aad(&reasons.to_aad()).unwrap(), reasons);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
            let _ = CommitReasons::from_aad(&bytes);
        }
    }
}
