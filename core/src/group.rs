//! Group keys: one MLS group (RFC 9420, openmls) per meeting.
//!
//! - [`provider`]: the openmls provider (RustCrypto + an in-memory map) whose writes are
//!   taken as one [`StorageDelta`] per MLS operation and applied to sled atomically by the
//!   store, so a crash never leaves half an operation on disk.
//! - [`mls`]: [`MeetingGroup`], the meeting's MLS group: create, key packages, commits
//!   (adds and removals in one commit), welcomes, application messages, exporter.
//!   Every member's credential is its ed25519 public key and must match the peer id of
//!   the connection its messages arrive on.
//! - [`security_code`]: the meeting security code shown to humans, from the epoch
//!   authenticator.
//! - [`media_keys`]: per-epoch, per-sender media base keys (RFC 9605 §5.2) with a grace
//!   window for the previous epoch.
//! - [`committer`]: who commits (lowest online leaf) — the ordering rules, sans-IO.
//! - [`epoch_proof`]: the signed "epoch E, authenticator hash H" statement heartbeats
//!   carry (fork detection, evidence for joining again), signed with the leaf key.
//! - [`statements`]: signed "I leave", "remove this member" and "let this joiner in"
//!   statements, bound to one leaf, that justify a commit to every receiver.
//!
//! Ciphersuite: `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`; ratchet tree in the
//! welcome; handshake and application messages as ciphertext.

pub mod committer;
pub mod epoch_proof;
pub mod media_keys;
pub mod mls;
pub mod provider;
pub mod security_code;
pub mod statements;

pub use media_keys::MediaKeys;
pub use mls::{
    CommitContents, CommitOut, GroupChanges, MeetingGroup, MlsIdentity, Received, RemovedLeaf,
};
pub use provider::{Provider, StorageDelta};
pub use security_code::SecurityCode;

/// Errors of the group layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Bytes that are not a well-formed MLS message of the expected kind.
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    /// A leaf whose credential is not the peer id it claims or arrives from.
    #[error("credential does not match peer {peer}")]
    Impostor {
        /// The peer the message came from.
        peer: libp2p::PeerId,
    },
    /// A message for another epoch than ours.
    #[error("message for epoch {got}, the group is at epoch {current}")]
    WrongEpoch {
        /// Epoch of the message.
        got: u64,
        /// Our epoch.
        current: u64,
    },
    /// openmls refused the operation or message (bad signature, cannot decrypt, ...).
    #[error("MLS: {0}")]
    Mls(String),
    /// We are not (or no longer) a member of the group.
    #[error("not a member of the group")]
    NotMember,
    /// An application message outside the sender ratchet's window (it came too late or
    /// too early): the sender must encrypt it again.
    #[error("message outside the sender's ratchet window")]
    OutOfOrder,
    /// A chat line longer than the protocol carries.
    #[error("the line is {len} bytes long; a chat line holds at most {max} bytes (split it)")]
    ChatTooLong {
        /// Its length in bytes (UTF-8).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many chat lines wait for acknowledgements.
    #[error("{0} chat lines are still on their way; wait until they are delivered")]
    ChatBacklog(usize),
}

impl GroupError {
    pub(crate) fn mls(err: impl std::fmt::Display) -> Self {
        GroupError::Mls(err.to_string())
    }
}
