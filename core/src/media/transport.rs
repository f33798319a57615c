//! The media transport: one WebRTC peer connection per pair of members (full mesh).
//!
//! - [`peer`]: the only code that touches webrtc-rs. An [`peer::AudioPeer`] carries one
//!   Opus audio track whose RTP payloads are SFrame-sealed frames, so media stays sealed
//!   end to end even across a TURN relay; DTLS-SRTP protects each hop as usual.
//!
//! Signalling (SDP offer/answer) travels inside the meeting's MLS group in the audio
//! milestone, so DTLS fingerprints are authenticated by the group; the peer with the lower
//! peer id offers.

pub mod peer;
