//! The media plane: what turns meeting keys into sealed media frames.
//!
//! - [`crypto`]: SFrame (RFC 9605) sealing and opening with per-sender, per-epoch keys
//!   exported from the meeting's MLS group (RFC 9605 §5.2), replay protection, and a grace
//!   window for the previous epoch.
//!
//! The audio pipeline (Opus, jitter buffer, devices) and the WebRTC transport build on
//! this module in the audio milestone.

pub mod audio;
pub mod crypto;
pub mod transport;
