//! End-to-end media encryption: SFrame with MLS-derived keys.
//!
//! Flow per frame: encoded media (an Opus frame) → [`sframe::Sealer::seal`] (header with
//! KID and counter, AES-128-GCM) → transport (RTP over DTLS-SRTP) → [`keyring::Opener::open`]
//! (KID → sender and epoch → key; replay window; authentication) → decoder.
//!
//! Keys: `sframe_epoch_secret` per epoch from the MLS exporter, `sender_base_key` per leaf
//! ([`crate::group::media_keys`]); the SFrame key and salt are derived from the sender base
//! key and KID as RFC 9605 §4.4.2 specifies. KID layout (RFC 9605 §5.2, context 0):
//! `leaf index << EPOCH_BITS | epoch mod 2^EPOCH_BITS`.

pub mod keyring;
pub mod sframe;

/// Why a media frame was not sealed or opened. Every variant is counted by the opener and
/// the frame is dropped; none is fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Not an SFrame frame (bad header or too short).
    #[error("malformed SFrame frame")]
    Malformed,
    /// A KID whose epoch or sender we have no key for (unknown, or outside the grace window).
    #[error("no key for KID {kid}")]
    UnknownKey {
        /// The frame's key id.
        kid: u64,
    },
    /// A frame seen before (or too old for the replay window).
    #[error("replayed frame (KID {kid}, counter {counter})")]
    Replayed {
        /// The frame's key id.
        kid: u64,
        /// The frame's counter.
        counter: u64,
    },
    /// The frame does not authenticate under the key its KID names: forged or corrupted.
    #[error("frame does not authenticate")]
    Forged,
    /// No key installed for sealing yet.
    #[error("no media key installed yet")]
    NoKey,
    /// The SFrame library refused an operation.
    #[error("SFrame: {0}")]
    Sframe(String),
}
