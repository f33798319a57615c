//! The media transport: one WebRTC peer connection per pair of members (full mesh).
//!
//! - [`peer`]: the only code that touches webrtc-rs. An [`peer::MediaPeer`] carries one
//!   Opus audio track and one VP8 video track each way, whose RTP payloads are
//!   SFrame-sealed frames, so media stays sealed end to end even across a TURN relay;
//!   DTLS-SRTP protects each hop as usual.
//! - [`estimate`]: how fast we may send to each peer (TWCC feedback into a GCC estimator).
//! - [`sdp`]: the answering side holds back the offer's reflexive candidates for half a
//!   round trip, so that both ends' first packets cross on the way to port-restricted NATs.
//! - [`turn_tcp`]: TURN over TCP and TLS (for networks that drop UDP, or pass only TLS on
//!   443) in front of webrtc-rs' UDP-only TURN client; [`turn_tls`]: the pinned TLS client.
//!
//! Signalling (SDP offer/answer) travels inside the meeting's MLS group, so DTLS
//! fingerprints are authenticated by the group; the peer with the lower peer id offers.
//!
//! ICE servers ([`IceServer`]) come from the relays: STUN for reflexive candidates, TURN
//! (with short-lived credentials) for relayed ones.

pub mod estimate;
pub mod peer;
pub mod sdp;
pub mod turn_tcp;
pub mod turn_tls;

/// A STUN or TURN server for ICE, as in WebRTC's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp`, `turn:HOST:PORT?transport=tcp` or
    /// `turns:HOST:PORT?transport=tcp`.
    pub urls: Vec<String>,
    /// TURN user name (empty for STUN).
    pub username: String,
    /// TURN password (empty for STUN).
    pub credential: String,
    /// The certificate the `turns:` URLs must present.
    pub tls_pin: Option<crate::proto::turn::CertificatePin>,
}
