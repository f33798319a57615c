//! The media plane: what turns meeting keys into sealed media frames.
//!
//! - [`crypto`]: SFrame (RFC 9605) sealing and opening with per-sender, per-epoch keys
//!   exported from the meeting's MLS group (RFC 9605 §5.2), replay protection, and a grace
//!   window for the previous epoch.
//!
//! - [`audio`]: sources, sinks, Opus, jitter buffer, mixer (sans-IO).
//! - [`transport`]: the WebRTC peer connections (the only webrtc-rs code).
//! - [`driver`]: the media actor: one peer connection per member, the 20 ms audio clock,
//!   signalling through the meeting (MLS application messages), stats.
//!
//! The meeting machine tells the media actor what it needs through [`MediaCommand`]s.

pub mod audio;
pub mod crypto;
pub mod driver;
pub mod transport;

use libp2p::PeerId;

/// One epoch's `sframe_epoch_secret`; never shown in `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct EpochSecret(pub [u8; 32]);

impl std::fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochSecret(..)")
    }
}

/// What the meeting tells the media plane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaCommand {
    /// A new epoch: its media secret, our leaf, and the members (leaf, peer) to connect to.
    Epoch {
        /// The epoch.
        epoch: u64,
        /// Its `sframe_epoch_secret`.
        secret: EpochSecret,
        /// Our leaf index.
        own_leaf: u32,
        /// Every member, us included.
        members: Vec<(u32, PeerId)>,
        /// Members that rejoined with a new leaf in this epoch (their connection is stale).
        replaced: Vec<PeerId>,
    },
    /// A signalling message (SDP) from a member, authenticated by the MLS group.
    Signal {
        /// The member.
        from: PeerId,
        /// The opaque signalling payload.
        payload: Vec<u8>,
    },
    /// We dropped our group and are joining again: close every connection, forget keys,
    /// keep running.
    Reset,
    /// We are out of the meeting: close every connection and stop.
    Stop,
}
