//! What the engine knows about one member: its leaf, its connection (state, path,
//! signalling, repair), and its signalling history. Dropping a member drops this struct.

use std::time::Instant;

use super::repair::BrokenPath;

/// State of a peer connection (WebRTC's `RTCPeerConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Created, nothing negotiated yet.
    New,
    /// ICE and DTLS are under way.
    Connecting,
    /// Media can flow.
    Connected,
    /// The path stopped carrying traffic (it may come back).
    Disconnected,
    /// The path is gone for good (an ICE restart may bring a new one).
    Failed,
    /// The connection itself is closed.
    Closed,
    /// webrtc-rs reported no state.
    Unspecified,
}

impl ConnectionState {
    /// The name used in events and logs (`connected`, `failed`, ...), as WebRTC spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Failed => "failed",
            Self::Closed => "closed",
            Self::Unspecified => "Unspecified",
        }
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The path a connection's media takes (from its selected ICE candidate pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaPath {
    /// Host or server-reflexive candidates at both ends (through NATs, not through a
    /// relay).
    Direct,
    /// Through a TURN server at either end (over UDP, or over TCP through the local
    /// TURN-over-TCP bridge: ICE cannot tell these apart).
    Relayed,
}

impl MediaPath {
    /// The name used in events (`direct`, `relayed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relayed => "relayed",
        }
    }
}

/// Names one connection to a member, so that results about a connection since replaced
/// are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a connection does once its driver has created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Nothing (it has been created).
    Nothing,
    /// We offer.
    Offer,
    /// We answer this offer (whose digest is `digest`).
    Answer { sdp: String, digest: u64 },
}

/// One connection to a member.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) id: ConnId,
    /// Created without relayed candidates: a second connection that looks for a direct
    /// path beside a relayed one ([`super::upgrade`]).
    pub(crate) direct_only: bool,
    /// Whether the driver has created it (it exists in webrtc-rs).
    pub(crate) created: bool,
    pub(crate) pending: Pending,
    pub(crate) state: ConnectionState,
    /// The path measured while connected, and its latest round-trip time.
    pub(crate) path: Option<MediaPath>,
    pub(crate) rtt_ms: Option<f64>,
    /// A `connected` event waits for the path measurement.
    pub(crate) report_connected: bool,
    /// The digest of the latest offer (or restart offer) we sent on it: only its answer is
    /// taken.
    pub(crate) offered: Option<u64>,
    /// Since when our offer has gone unanswered (cleared by any state change: ICE runs).
    pub(crate) unanswered_since: Option<Instant>,
    /// When we sent our latest offer (or restart offer): its answer tells the signalling
    /// round trip.
    pub(crate) offer_sent: Option<Instant>,
    /// The offer (its digest) we answer or answered on it, and since when (its arrival): the
    /// offerer's `Punch` names it, and the answer tells how long we took.
    pub(crate) answering: Option<(u64, Instant)>,
    /// The path broke, until it is connected again.
    pub(crate) broken: Option<BrokenPath>,
    /// ICE restarts so far (ours and theirs).
    pub(crate) ice_restarts: u32,
    /// When the latest frame from the member arrived on it.
    pub(crate) last_heard: Option<Instant>,
    /// Since when ICE has had a working path while the connection was never `connected`:
    /// the DTLS handshake runs (see [`HANDSHAKE_TIMEOUT`](super::HANDSHAKE_TIMEOUT)).
    pub(crate) handshake_since: Option<Instant>,
    /// Whether it has ever been `connected` (its DTLS handshake completed).
    pub(crate) secured: bool,
}

impl Connection {
    pub(crate) fn new(id: ConnId, pending: Pending) -> Self {
        Self {
            id,
            direct_only: false,
            created: false,
            pending,
            state: ConnectionState::New,
            path: None,
            rtt_ms: None,
            report_connected: false,
            offered: None,
            unanswered_since: None,
            offer_sent: None,
            answering: None,
            broken: None,
            ice_restarts: 0,
            last_heard: None,
            handshake_since: None,
            secured: false,
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.state == ConnectionState::Connected
    }

    /// Whether its DTLS handshake has run over a working ICE path for `timeout` at `now`
    /// without completing.
    pub(crate) fn handshake_stalled(&self, now: Instant, timeout: std::time::Duration) -> bool {
        !self.secured
            && self
                .handshake_since
                .is_some_and(|since| now.saturating_duration_since(since) >= timeout)
    }
}

/// One member of the meeting, as the media engine sees it.
#[derive(Debug)]
pub(crate) struct Member {
    /// Its leaf in the current epoch.
    pub(crate) leaf: u32,
    /// When it became a member to us (our join, or its): `connection` events say how long
    /// after that they happen.
    pub(crate) since: Instant,
    /// Its connection, once there is one: the one our media goes out on.
    pub(crate) conn: Option<Connection>,
    /// A second connection looking for a direct path while `conn` is relayed
    /// ([`super::upgrade`]): it takes over once connected.
    pub(crate) upgrade: Option<Connection>,
    /// The direct path attempts made beside the current connection, and when the next may
    /// start.
    pub(crate) upgrades: super::upgrade::Attempts,
    /// The latest signalling payload from it (a repeat of it is a retry).
    pub(crate) last_signal: Option<Vec<u8>>,
}

/// An offer from a peer that is not (yet) a member, kept until an epoch says whether it is.
#[derive(Debug)]
pub(crate) struct EarlyOffer {
    pub(crate) at: Instant,
    pub(crate) sdp: String,
    /// The whole payload, to recognise a retry of it.
    pub(crate) payload: Vec<u8>,
}
