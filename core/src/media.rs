//! The media plane: what turns meeting keys into sealed media frames, and carries them.
//!
//! ```text
//!     runtime ──MediaInput──▶ actor ◀─ handle_* / poll_action ─▶ engine (sans-IO)
//!     runtime ◀─signals, MediaReport── actor
//!                                     │ spawns the awaiting work; results come back as
//!                                     │ Internal messages (one helper, Actor::spawn_task)
//!                                     ▼
//!                        MediaPeer per member (webrtc-rs), its forwarder and sender tasks
//!                           │ InboundFrame                    ▲ OutboundFrame
//!                           ▼                                 │
//!  actor ──ClockCommand──▶ clock (20 ms; never awaits but for its tick) ──ClockReport──▶ actor
//!                          source → Opus → SFrame → peers; jitter → Opus → mixer → sink
//!  actor ──VideoCommand──▶ video loop (its own thread) ──ClockReport──▶ actor
//!                          source → VP8 → SFrame → peers; packets → frame → open → VP8 → monitor, --video-out
//! ```
//!
//! - `engine`: the sans-IO media engine: one struct per member (connection state, path,
//!   signalling, ICE-restart timers, leaf), fed events and `now`, drained of actions.
//!   Where "an ICE restart is decided" lives.
//! - `actor`: the async edge that drives the engine: owns the webrtc-rs connections,
//!   the TURN-over-TCP bridges and the channels; awaiting work runs in spawned tasks that
//!   report back.
//! - `clock`: the 20 ms audio clock on its own task; it owns the media keys and touches
//!   bounded queues only, with `try_send`/`try_recv`.
//! - `video_loop`: the video pipeline on its own OS thread (codec work must not delay the
//!   audio clock or the network tasks); it owns its own copy of the media keys.
//! - [`audio`]: sources, sinks, Opus, jitter buffer, mixer, devices (sans-IO but devices).
//! - [`crypto`]: SFrame (RFC 9605) sealing and opening with per-sender, per-epoch keys
//!   exported from the meeting's MLS group (RFC 9605 §5.2), replay protection, and a grace
//!   window for the previous epoch.
//! - [`transport`]: the WebRTC peer connections (the only webrtc-rs code) and the
//!   TURN-over-TCP bridge.
//! - [`video`]: video sources (testsrc, Y4M, V4L2 camera), the VP8 codec, the sender and
//!   the receiver (RTP reassembly that waits for repairs, keyframe after a loss), the
//!   monitor and `--video-out`.
//!
//! Channels (each one's doc comment says the same):
//!
//! | channel | from → to | kind |
//! |---|---|---|
//! | `MediaInput` ([`INBOX_CAPACITY`]) | runtime → actor | lossless (sender waits) |
//! | signals ([`INBOX_CAPACITY`]) | actor → runtime | lossless (actor waits) |
//! | [`MediaReport`] ([`INBOX_CAPACITY`]) | actor → runtime | lossy: telemetry and liveness evidence, dropped and counted when full |
//! | `Internal` | actor's tasks → actor | lossless |
//! | `ClockCommand` (keys, routes, mute) | actor → clock | lossless (actor waits ≤ one tick) |
//! | `ClockReport` | clock → actor | lossy: dropped and counted when full |
//! | `InboundFrame` | connections → clock | lossy: newest dropped when full, counted |
//! | `OutboundFrame` (per connection) | clock → connection | lossy: newest dropped when full, counted |
//! | `VideoCommand` (keys, routes, camera, RTT) | actor → video loop | lossless (actor waits) |
//! | `VideoInbound` (packets, keyframe requests) | connections → video loop | lossy: newest dropped when full, counted |
//! | `OutboundVideo` (per connection) | video loop → connection | lossy: newest dropped when full, counted |
//!
//! The meeting machine tells the media plane what it needs through [`MediaCommand`]s.

pub(crate) mod actor;
pub mod audio;
pub(crate) mod clock;
pub mod crypto;
pub(crate) mod engine;
pub mod transport;
pub mod video;
pub(crate) mod video_loop;

use std::path::PathBuf;
use std::time::Duration;

use libp2p::PeerId;

pub use actor::spawn;
pub use engine::{ConnectionState, MediaPath};
use transport::IceServer;

/// Capacity of the media plane's inbox and of its signal and report channels. The inbox
/// ([`MediaInput`]) and the signals are lossless (their senders wait for room); the reports
/// ([`MediaReport`]) are lossy: the actor `try_send`s them and counts what a full channel
/// drops (a lost [`MediaReport::Heard`] is followed by the next one within half a second).
pub const INBOX_CAPACITY: usize = 256;
/// How often per-peer statistics are reported (and paths measured and repaired).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

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

/// Media settings of a client.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// What to send: `device` (the default microphone), `device:NAME`, `silence`, `tone:HZ`
    /// or a WAV file.
    pub audio_in: String,
    /// Where the received mix goes: `device` (the default speakers), `device:NAME` (speakers
    /// by their cpal name), a WAV file, or nowhere.
    pub audio_out: Option<PathBuf>,
    /// UDP addresses for ICE host candidates.
    pub udp_addrs: Vec<String>,
    /// STUN/TURN servers known up front (more arrive as [`MediaInput::IceServers`]).
    pub ice_servers: Vec<IceServer>,
    /// Share only relayed ICE candidates: other members never learn our IP addresses.
    pub relay_only: bool,
    /// RNNoise on the outgoing audio (meant for microphones: it also removes steady
    /// synthetic signals such as test tones).
    pub noise_suppression: bool,
    /// What video to send (`--video-in`), if any.
    pub video_in: Option<video::source::VideoSpec>,
    /// Where to write the video received from each member (`--video-out`), if anywhere.
    pub video_out: Option<PathBuf>,
    /// `--share-screen[=N]`: share this screen from the start.
    pub share_screen: Option<video::screen::ScreenSpec>,
    /// A window that shows the video: our self-view (also before a meeting: the
    /// preview) and every member's pictures, as RGBA.
    pub display: Option<video::display::VideoDisplay>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            audio_in: "silence".to_owned(),
            audio_out: None,
            udp_addrs: vec!["0.0.0.0:0".to_owned()],
            noise_suppression: false,
            ice_servers: Vec::new(),
            relay_only: false,
            video_in: None,
            video_out: None,
            share_screen: None,
            display: None,
        }
    }
}

/// What the media plane reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// A peer connection changed state.
    Connection {
        /// The member.
        peer_id: PeerId,
        /// `connected`, `disconnected`, `failed`, ... ([`ConnectionState::as_str`]).
        state: String,
        /// `direct`, or `relayed` through a TURN server (from the selected ICE pair;
        /// [`MediaPath::as_str`]).
        path: &'static str,
        /// The path this connection took over from, when a direct path replaced a relayed
        /// one during the call (`engine::upgrade`).
        previous_path: Option<&'static str>,
        /// Time since the member joined (ours or its join, whichever came later), in
        /// milliseconds; 0 in events other than `connected`.
        since_join_ms: u64,
        /// Latest STUN round-trip time on that path, once measured.
        rtt_ms: Option<f64>,
        /// ICE restarts on this connection so far (a broken path repaired in place).
        ice_restarts: u32,
    },
    /// Periodic receive statistics for one member.
    Stats(ReceiveStats),
    /// The first frame from a member opened and was queued for playout.
    AudioStarted {
        /// The member.
        peer_id: PeerId,
    },
    /// The first picture from a member was decoded.
    VideoStarted {
        /// The member.
        peer_id: PeerId,
        /// Its camera or the screen it shares.
        kind: video::VideoKind,
        /// Its size.
        width: u32,
        /// Its size.
        height: u32,
    },
    /// A member's video stopped coming (for [`video::VIDEO_GONE_AFTER`]): its camera is
    /// off, or it no longer shares its screen.
    VideoStopped {
        /// The member.
        peer_id: PeerId,
        /// What stopped.
        kind: video::VideoKind,
    },
    /// We share a screen: monitor `monitor`, sent at `width × height`.
    ScreenShared {
        /// The monitor's number.
        monitor: u32,
        /// Size of the pictures sent (before any lower layer).
        width: u32,
        /// Size of the pictures sent.
        height: u32,
    },
    /// We stopped sharing our screen: asked to, or (`error`) because it failed.
    ScreenShareStopped {
        /// Why sharing failed or could not start, in one sentence.
        error: Option<String>,
    },
    /// Periodic statistics of one member's video as we receive it.
    Video(VideoStats),
    /// Periodic statistics of our own video as we send it (while the camera is on).
    VideoSent(video::monitor::VideoSendReport),
    /// Something went wrong that does not end the meeting.
    Warning(String),
}

/// One member's video as we received it ([`MediaEvent::Video`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoStats {
    /// The member.
    pub peer_id: PeerId,
    /// Its camera or the screen it shares.
    pub kind: video::VideoKind,
    /// The last reporting period: frame rate, size, freezes, and against testsrc
    /// references, lost frames, latency and quality.
    pub report: video::monitor::VideoReport,
    /// Totals since the start: frames assembled, lost, concealed, undecryptable, ...
    pub counts: video::receiver::ReceiveCounts,
}

/// What the media actor reports to its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaReport {
    /// For the application (boxed: an event is far larger than the heartbeat beside it,
    /// and rare).
    Event(Box<MediaEvent>),
    /// Frames from this member arrive: opened with its key and delivered by its own
    /// connection (whose DTLS fingerprint came signed by it inside the group), so it is
    /// reachable over the media path. Sent at most every [`HEARD_REPORT_INTERVAL`] per
    /// member; liveness counts it like a heartbeat (`docs/protocol.md` §5).
    Heard(PeerId),
}

/// Least time between two [`MediaReport::Heard`] about the same member.
pub const HEARD_REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// Periodic receive statistics for one member ([`MediaEvent::Stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveStats {
    /// The member.
    pub peer_id: PeerId,
    /// Frames decoded from their own packets.
    pub rx_frames: u64,
    /// Frames missing (recovered by FEC or concealed).
    pub lost_frames: u64,
    /// Missing frames recovered by FEC.
    pub recovered_frames: u64,
    /// Frames dropped by SFrame (forged, replayed, unknown key) across all senders.
    pub decrypt_failures: u64,
    /// Inter-arrival jitter.
    pub jitter_ms: f64,
    /// Current level of this speaker (dBFS).
    pub level_dbfs: f32,
    /// Latest round-trip time to this member (ICE), once measured.
    pub rtt_ms: Option<f64>,
    /// How fast we may send to this member (kbit/s), once its feedback has said
    /// (`transport::estimate`).
    pub send_estimate_kbps: Option<u32>,
    /// The fraction of our packets this member reported lost (smoothed), with the estimate.
    pub send_loss: Option<f64>,
}

/// Inputs of the media plane.
#[derive(Debug)]
pub enum MediaInput {
    /// From the meeting machine.
    Command(MediaCommand),
    /// Stop or resume sending.
    Mute(bool),
    /// Turn noise suppression of the outgoing audio on or off.
    NoiseSuppression(bool),
    /// Turn our camera (video source) on or off.
    Camera(bool),
    /// Receive the members' video, or (`false`: the "no incoming video" mode for a weak
    /// link) ask each of them to send us none.
    IncomingVideo(bool),
    /// Share this screen, or (`None`) stop sharing.
    Share(Option<video::screen::ScreenSpec>),
    /// The current TURN servers (fresh credentials) from the relays, replacing earlier ones.
    IceServers(Vec<IceServer>),
    /// The connection to a relay was lost: its TURN server may have restarted, taking the
    /// allocations of our relayed paths with it. The next [`MediaInput::IceServers`] (sent
    /// once the relay is back) repairs relayed paths that went silent meanwhile.
    RelayLost,
}
