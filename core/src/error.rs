//! The crate's top-level error, wrapping each module's own.

use crate::admission::AdmissionError;
use crate::identity::IdentityError;
use crate::invite::InviteError;
use crate::proto::WireError;
use crate::store::StoreError;

/// Any error of `conclave-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad invite text.
    #[error(transparent)]
    Invite(#[from] InviteError),
    /// Local storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad identity bytes.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Bad control message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// MLS group failure.
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// Refused admission proof.
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// The media plane could not start (bad audio source or output).
    #[error("audio: {0}")]
    Media(String),
    /// The network layer could not start.
    #[error("network: {0}")]
    Network(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A relay refused TURN credentials (not on its allowlist, or no TURN service).
    #[error("relay {relay} refused TURN credentials: {reason}")]
    TurnRefused {
        /// The relay's peer id.
        relay: String,
        /// Why.
        reason: String,
    },
    /// The client was asked to do something its state does not allow.
    #[error("{0}")]
    Usage(&'static str),
    /// An identity backup could not be written or read.
    #[error(transparent)]
    Backup(#[from] crate::identity::backup::BackupError),
    /// The client's background task has stopped.
    #[error("the client has shut down")]
    Shutdown,
}
