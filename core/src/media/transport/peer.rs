//! One WebRTC peer connection carrying SFrame-sealed Opus audio and SFrame-sealed VP8 video
//! in both directions.
//!
//! The webrtc-rs callbacks only `try_send` a [`PeerEvent`] into a bounded channel; nothing
//! else sees the `PeerConnection`. Offer/answer are complete (non-trickle) SDP blobs,
//! produced once ICE gathering finished.
//!
//! Video: each sealed frame is handed whole to webrtc-rs' VP8 payloader, which splits it
//! into RTP packets behind a VP8 payload descriptor (outside the seal) and marks the last.
//! The interceptor chain answers NACKs from its send history (retransmitting sealed
//! packets, RTX where negotiated), asks for lost packets, and sends RTCP reports. Keyframe
//! requests go out as RTCP PLI ([`MediaPeer::request_keyframe`]); an incoming PLI or FIR
//! is let through to us by `KeyframeRequestTap` and reported as
//! [`PeerEvent::KeyframeRequested`]. webrtc-rs hands a compound RTCP packet to whichever
//! track its first packet is about, so a request is looked for on every track.
//!
//! A path that stops carrying traffic is noticed by ICE consent checks within
//! [`ICE_DISCONNECTED_TIMEOUT`] and declared failed [`ICE_FAILED_TIMEOUT`] later; the
//! media engine (`media::engine`) then restarts ICE on the same connection
//! ([`MediaPeer::create_restart_offer`]): new ICE credentials, new sockets and candidates
//! (a fresh TURN allocation among them), same DTLS session, same RTP streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder, Packet, Registry, Slot,
    StreamInfo, TaggedPacket,
};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp_transceiver::PayloadType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_NACK,
};
use rtc::shared::marshal::{Marshal, MarshalSize};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfiguration, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceCandidateType,
    RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use super::IceServer;
use super::estimate::{EstimateCell, SendEstimate, congestion_control};
use super::sdp::{HeldCandidate, hold_back_reflexive};
use crate::media::audio::FRAME_MS;
use crate::media::video::rtp::{FRAME_INFO_URI, FrameInfo};
use crate::media::video::{VIDEO_CLOCK_RATE, VideoKind};
use crate::media::{ConnectionState, MediaPath};

/// Capacity of a peer's event channel; events beyond it are dropped (and the frame counted
/// lost by the jitter buffer).
pub const EVENT_CAPACITY: usize = 512;
/// How long ICE gathering may take.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer gathering may go on once a relayed candidate is in. A relayed candidate
/// reaches the other side whatever its NAT, and the STUN answer for a reflexive one comes
/// before the TURN allocation (one round trip against two) wherever UDP works; where it
/// does not (a network that drops UDP, using TURN over TCP), waiting the whole
/// [`GATHER_TIMEOUT`] for a STUN answer that never comes would delay the answer so long that
/// the other side's ICE gives up before the relayed pair may be nominated.
pub const GATHER_AFTER_RELAY: Duration = Duration::from_millis(500);
/// Silence on the selected path after which ICE reports `disconnected` (webrtc-rs: 5 s).
pub const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(3);
/// Time in `disconnected` after which ICE reports `failed` (webrtc-rs: 25 s). A meeting
/// wants a broken path replaced quickly, not a long wait for it to come back.
pub const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(4);
/// How long connectivity checks run before a relayed pair may be chosen (webrtc-rs: 2 s).
/// Relay first: media flows over the first pair that works, and a relayed connection gets
/// a second, direct-only one beside it that takes over once it finds a direct path
/// (`engine::upgrade`; webrtc-rs 0.21 never renominates). The wait is that of the
/// reflexive pairs, so a direct pair that works as early as a relayed one still wins.
pub const RELAY_ACCEPTANCE_MIN_WAIT: Duration = REFLEXIVE_ACCEPTANCE_MIN_WAIT;
/// How long connectivity checks run before a pair through a NAT (server- or peer-reflexive)
/// may be chosen (webrtc-rs: 0.5 s and 1 s): long enough for a host pair on the same LAN,
/// which succeeds within milliseconds, to win; every further wait delays the first audio.
pub const REFLEXIVE_ACCEPTANCE_MIN_WAIT: Duration = Duration::from_millis(200);
/// The answerer is the DTLS server, so the offerer starts the handshake. The offerer's
/// ICE agent nominates the pair and learns it works last (the answerer's takes it as the
/// nomination arrives): started by the answerer (webrtc-rs' default), the first DTLS
/// flight could reach the offerer before its ICE was connected and be dropped there, and
/// the handshake waited out the one-second retransmission. Over a relay that was ~1.2 s of
/// every relayed call's start.
pub const ANSWERER_DTLS_ROLE: RTCDtlsRole = RTCDtlsRole::Server;
/// Longest time the offer's reflexive candidates wait for the offerer's word to check them
/// (its `Punch`, half a signalling round trip after our answer arrives): an offerer that
/// never sends it still gets its direct paths checked.
pub const HOLD_BACK_LIMIT: Duration = Duration::from_secs(3);
/// How many times a missing video packet is asked for (100 ms apart): three times covers
/// two lost retransmissions (a frame is then given up one time in 8,000 lost packets at 5 %
/// loss, against one in 400 when asked for twice) without flooding a congested path with
/// copies (see `nack`).
pub const MAX_NACKS_PER_PACKET: u16 = 3;
/// How often the connection's driver is woken while ICE checks and the DTLS handshake run
/// ([`wake_while_connecting`]).
pub const CONNECTING_WAKE_INTERVAL: Duration = Duration::from_millis(5);
/// Longest time the driver is woken that way: past it a connection that has not come up
/// is failing anyway.
pub const CONNECTING_WAKE_LIMIT: Duration = Duration::from_secs(6);
/// Interval of ICE keepalives (consent checks) on an idle path.
pub const ICE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Transport errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// webrtc-rs refused an operation.
    #[error("webrtc: {0}")]
    Webrtc(String),
}

fn webrtc_err(err: impl std::fmt::Display) -> TransportError {
    TransportError::Webrtc(err.to_string())
}

/// What a peer connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The connection state changed.
    State(ConnectionState),
    /// ICE found a working path (again): the DTLS handshake runs on it, if it has not yet.
    IceConnected,
    /// An audio frame arrived: the RTP sequence number and timestamp, and the payload (an
    /// SFrame-sealed Opus frame).
    Frame {
        /// RTP sequence number.
        seq: u16,
        /// RTP timestamp (48 kHz).
        timestamp: u32,
        /// The RTP payload.
        payload: Vec<u8>,
    },
    /// A video packet arrived: a piece of an SFrame-sealed VP8 frame behind its VP8 payload
    /// descriptor (`media::video::rtp` puts the frame back together).
    VideoPacket {
        /// RTP sequence number.
        seq: u16,
        /// RTP timestamp (90 kHz): the same for every packet of a frame.
        timestamp: u32,
        /// The RTP marker bit: the frame's last packet.
        marker: bool,
        /// The RTP payload.
        payload: Vec<u8>,
        /// The frame information outside the seal, if the packet carries it.
        info: Option<FrameInfo>,
        /// Which of the other side's videos it belongs to (by its track).
        kind: VideoKind,
    },
    /// The other side asked for a keyframe of this video of ours (RTCP PLI or FIR).
    KeyframeRequested(VideoKind),
}

/// Where to bind and how to reach the other side.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// UDP addresses to bind ICE host candidates on (`127.0.0.1:0` in tests).
    pub udp_addrs: Vec<String>,
    /// STUN and TURN servers (TURN over UDP only; see [`super::turn_tcp`] for TCP).
    pub ice_servers: Vec<IceServer>,
    /// Offer only relayed candidates: the other side never learns our addresses.
    pub relay_only: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            udp_addrs: vec!["0.0.0.0:0".to_owned()],
            ice_servers: Vec::new(),
            relay_only: false,
        }
    }
}

impl PeerConfig {
    fn rtc_configuration(&self) -> RTCConfiguration {
        let servers = self
            .ice_servers
            .iter()
            .map(|server| RTCIceServer {
                urls: server.urls.clone(),
                username: server.username.clone(),
                credential: server.credential.clone(),
            })
            .collect();
        let policy = if self.relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        };
        RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(policy)
            .build()
    }
}

/// Progress of an ICE gathering, as far as [`MediaPeer::wait_gathered`] cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gathering {
    /// A relayed (TURN) candidate was gathered.
    Relayed,
    /// Every candidate was gathered.
    Complete,
}

/// Gathering notes queued between two waits (a handful per gathering).
const GATHERING_CAPACITY: usize = 16;

struct Handler {
    events: mpsc::Sender<PeerEvent>,
    gathering: mpsc::Sender<Gathering>,
    /// How far the connection has come, for [`wake_while_connecting`].
    connecting: tokio::sync::watch::Sender<Connecting>,
    /// The other side's video tracks, once they arrived: keyframe requests are sent on them.
    remote_videos: RemoteVideos,
    /// The negotiated id of the frame-information header extension (0: not yet known).
    frame_info_id: Arc<AtomicU8>,
    /// The SSRC of our screen track: a keyframe request naming it is for our screen.
    screen_ssrc: u32,
}

/// The other side's camera and screen tracks, by [`VideoKind`], once they arrived.
type RemoteVideos = Arc<std::sync::Mutex<HashMap<VideoKind, Arc<dyn TrackRemote>>>>;

/// The label of our track carrying `kind` (its MSID track id, which the other side reads).
fn video_label(kind: VideoKind) -> &'static str {
    match kind {
        VideoKind::Camera => "video",
        VideoKind::Screen => "screen",
    }
}

/// Three different random SSRCs: audio, camera, screen.
fn distinct_ssrcs() -> [u32; 3] {
    let audio: u32 = rand::random();
    let video = audio.wrapping_add(1 + rand::random::<u32>() % 0x4000_0000);
    let screen = video.wrapping_add(1 + rand::random::<u32>() % 0x4000_0000);
    [audio, video, screen]
}

/// Which of our videos a keyframe request names: the screen if its media SSRC is our
/// screen track's, otherwise the camera.
fn requested_kind(media_ssrc: u32, screen_ssrc: u32) -> VideoKind {
    if media_ssrc == screen_ssrc {
        VideoKind::Screen
    } else {
        VideoKind::Camera
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if event.candidate.typ == RTCIceCandidateType::Relay {
            let _ = self.gathering.try_send(Gathering::Relayed);
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathering.try_send(Gathering::Complete);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if state == RTCIceConnectionState::Checking {
            self.connecting.send_if_modified(|phase| {
                let starts = *phase == Connecting::NotYet;
                if starts {
                    *phase = Connecting::Running;
                }
                starts
            });
        }
        if state == RTCIceConnectionState::Connected {
            let _ = self.events.try_send(PeerEvent::IceConnected);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Connected
                | RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Closed
        ) {
            self.connecting.send_replace(Connecting::Over);
        }
        let _ = self
            .events
            .try_send(PeerEvent::State(connection_state(state)));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let events = self.events.clone();
        let video = track.kind().await == RtpCodecKind::Video;
        let kind = if track.track_id().await == video_label(VideoKind::Screen) {
            VideoKind::Screen
        } else {
            VideoKind::Camera
        };
        let frame_info_id = Arc::clone(&self.frame_info_id);
        let screen_ssrc = self.screen_ssrc;
        if video && let Ok(mut remote_videos) = self.remote_videos.lock() {
            remote_videos.insert(kind, Arc::clone(&track));
        }
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtcpPacket(packets) = &event
                    && !forward_keyframe_request(packets, &events, screen_ssrc)
                {
                    break;
                }
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let event = if video {
                        let id = frame_info_id.load(Ordering::Relaxed);
                        let info = (id != 0)
                            .then(|| packet.header.get_extension(id))
                            .flatten()
                            .and_then(|bytes| FrameInfo::decode(&bytes));
                        PeerEvent::VideoPacket {
                            seq: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            marker: packet.header.marker,
                            payload: packet.payload.to_vec(),
                            info,
                            kind,
                        }
                    } else {
                        PeerEvent::Frame {
                            seq: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            payload: packet.payload.to_vec(),
                        }
                    };
                    if events.try_send(event).is_err() && events.is_closed() {
                        break;
                    }
                }
            }
        });
    }
}

/// Lets the keyframe requests (RTCP PLI and FIR) the other side sends through the
/// interceptor chain to the application; the chain keeps every other RTCP packet to itself.
#[derive(Default)]
struct KeyframeRequestTap {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

/// Where [`KeyframeRequestTap`] sits: after the built-in interceptors, before the end of
/// the chain.
const KEYFRAME_REQUEST_TAP_SLOT: usize = 14_000;

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    keyframe_request(packet).is_some()
}

/// The media SSRC a keyframe request (RTCP PLI or FIR) names, if `packet` is one.
fn keyframe_request(packet: &dyn rtc::rtcp::Packet) -> Option<u32> {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        return Some(pli.media_ssrc);
    }
    let fir = any.downcast_ref::<FullIntraRequest>()?;
    Some(fir.fir.first().map_or(fir.media_ssrc, |entry| entry.ssrc))
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets
                .iter()
                .any(|packet| is_keyframe_request(packet.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Reports a keyframe request among `packets`, for the video its SSRC names; false once
/// nobody listens to `events` any more.
fn forward_keyframe_request(
    packets: &[Box<dyn rtc::rtcp::Packet>],
    events: &mpsc::Sender<PeerEvent>,
    screen_ssrc: u32,
) -> bool {
    let Some(ssrc) = packets
        .iter()
        .find_map(|packet| keyframe_request(packet.as_ref()))
    else {
        return true;
    };
    let request = PeerEvent::KeyframeRequested(requested_kind(ssrc, screen_ssrc));
    events.try_send(request).is_ok() || !events.is_closed()
}

/// Reports the keyframe requests that reach one of our tracks until it is unbound.
async fn watch_keyframe_requests(
    track: Arc<TrackLocalStaticSample>,
    events: mpsc::Sender<PeerEvent>,
    screen_ssrc: u32,
) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        debug!(?packets, "RTCP for our video");
        if !forward_keyframe_request(&packets, &events, screen_ssrc) {
            break;
        }
    }
}

/// [`FrameInfo`] as webrtc-rs writes header extensions.
struct FrameInfoExtension(FrameInfo);

impl MarshalSize for FrameInfoExtension {
    fn marshal_size(&self) -> usize {
        FrameInfo::LEN
    }
}

impl Marshal for FrameInfoExtension {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        let bytes = self.0.encode();
        let out = buf
            .get_mut(..bytes.len())
            .ok_or(rtc::shared::error::Error::ErrBufferShort)?;
        out.copy_from_slice(&bytes);
        Ok(bytes.len())
    }
}

/// How far a connection has come, as [`wake_while_connecting`] cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connecting {
    /// ICE has not started checking.
    NotYet,
    /// ICE checks, then the DTLS handshake, run.
    Running,
    /// Connected, or failed, or closed.
    Over,
}

/// Wakes `connection`'s driver every [`CONNECTING_WAKE_INTERVAL`] while its ICE checks and
/// DTLS handshake run (at most [`CONNECTING_WAKE_LIMIT`]).
///
/// webrtc-rs 0.21's driver sends what goes through a TURN relay one loop turn late: each
/// turn it first sends what its TURN relayer holds, then hands it the packets the
/// connection produced in that turn, which then wait for the next turn — the next packet
/// in or out, or a timer, up to 200 ms away while nothing else happens. Media keeps the
/// turns coming every 20 ms, but the DTLS handshake is a few packets with silence between:
/// over a relay every flight waited 200–400 ms, and a relayed call came up ~1.5 s after a
/// direct one. A configuration applied again, unchanged, wakes the driver for a turn
/// (it only stages the configuration for the next gathering, which would use the same).
async fn wake_while_connecting(
    connection: std::sync::Weak<dyn PeerConnection>,
    mut phase: tokio::sync::watch::Receiver<Connecting>,
) {
    if phase
        .wait_for(|phase| *phase != Connecting::NotYet)
        .await
        .is_err()
    {
        return;
    }
    let most = CONNECTING_WAKE_LIMIT.as_millis() / CONNECTING_WAKE_INTERVAL.as_millis();
    let mut ticks = tokio::time::interval(CONNECTING_WAKE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..most {
        if *phase.borrow() != Connecting::Running {
            return;
        }
        ticks.tick().await;
        let Some(connection) = connection.upgrade() else {
            return;
        };
        let configuration = connection.get_configuration().await;
        if connection.set_configuration(configuration).await.is_err() {
            return;
        }
    }
}

/// Adds remote candidates (held back from a description) to `connection`.
async fn add_candidates(connection: &dyn PeerConnection, candidates: Vec<HeldCandidate>) {
    for candidate in candidates {
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.mid,
            sdp_mline_index: Some(candidate.mline_index),
            ..Default::default()
        };
        if let Err(err) = connection.add_ice_candidate(init).await {
            debug!(error = %err, "held-back candidate refused");
        }
    }
    // webrtc-rs 0.21 does not wake its driver for a remote candidate (only for a TCP one),
    // so the new pairs' first checks would wait for the next check tick, up to 200 ms:
    // longer than the one-way delay the crossing must fit in. Applying the configuration
    // again, unchanged, wakes the driver (it only stages the configuration for the next
    // gathering, which would use the same one) and the agent checks the new pairs at once.
    let configuration = connection.get_configuration().await;
    if let Err(err) = connection.set_configuration(configuration).await {
        debug!(error = %err, "ICE driver not woken for the held-back candidates");
    }
}

fn connection_state(state: RTCPeerConnectionState) -> ConnectionState {
    match state {
        RTCPeerConnectionState::New => ConnectionState::New,
        RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
        RTCPeerConnectionState::Connected => ConnectionState::Connected,
        RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
        RTCPeerConnectionState::Failed => ConnectionState::Failed,
        RTCPeerConnectionState::Closed => ConnectionState::Closed,
        _ => ConnectionState::Unspecified,
    }
}

/// The other side's candidates held back from its latest description.
#[derive(Debug, Default)]
struct Held {
    /// Counts the descriptions whose candidates were held: a timer set for one adds only
    /// that one's.
    generation: u64,
    candidates: Vec<HeldCandidate>,
    /// The timer that adds them when the hold runs out: replaced by a newer hold, stopped
    /// when the connection closes.
    timer: Option<tokio::task::JoinHandle<()>>,
}

/// One of our outgoing tracks and the sender that carries it.
struct Outgoing {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    payload_type: tokio::sync::OnceCell<PayloadType>,
}

impl Outgoing {
    /// Adds a track of `kind` in `codec`, labelled `label`, to `connection` under `ssrc`.
    async fn add(
        connection: &dyn PeerConnection,
        now: Instant,
        (kind, label): (RtpCodecKind, &str),
        codec: RTCRtpCodec,
        ssrc: u32,
    ) -> Result<Self, TransportError> {
        let track = Arc::new(
            TrackLocalStaticSample::new(
                now,
                MediaStreamTrack::new(
                    "conclave".to_owned(),
                    label.to_owned(),
                    label.to_owned(),
                    kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec,
                        ..Default::default()
                    }],
                ),
            )
            .map_err(webrtc_err)?,
        );
        let sender = connection
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .map_err(webrtc_err)?;
        Ok(Self {
            track,
            sender,
            payload_type: tokio::sync::OnceCell::new(),
        })
    }

    /// Sends one sample (a sealed frame) lasting `duration`, captured at `at`, with
    /// `extension` in every packet (if the other side negotiated it).
    async fn send(
        &self,
        at: Instant,
        sealed: Vec<u8>,
        duration: Duration,
        extension: Option<HeaderExtension>,
    ) -> Result<(), TransportError> {
        let payload_type = *self
            .payload_type
            .get_or_try_init(|| async {
                let parameters = self.sender.get_parameters().await.map_err(webrtc_err)?;
                parameters
                    .rtp_parameters
                    .codecs
                    .first()
                    .map(|c| c.payload_type)
                    .ok_or_else(|| TransportError::Webrtc("no negotiated codec".into()))
            })
            .await?;
        let ssrc = *self
            .track
            .ssrcs()
            .await
            .first()
            .ok_or_else(|| TransportError::Webrtc("no SSRC".into()))?;
        let mut writer = self.track.sample_writer(ssrc, payload_type);
        if let Some(extension) = extension {
            writer = writer.with_extension(extension);
        }
        writer
            .write_sample(&Sample {
                data: bytes::Bytes::from(sealed),
                duration,
                ..Sample::new(at)
            })
            .await
            .map_err(webrtc_err)
    }
}

/// One peer connection with an outgoing and an incoming audio track, and two outgoing and
/// two incoming video tracks (camera and screen; a track with nothing to send sends no
/// packets).
pub struct MediaPeer {
    connection: Arc<dyn PeerConnection>,
    audio: Outgoing,
    video: Outgoing,
    screen: Outgoing,
    /// The other side's video tracks, once they arrived.
    remote_videos: RemoteVideos,
    /// The negotiated id of the frame-information header extension (0: not yet known).
    frame_info_id: Arc<AtomicU8>,
    /// Report keyframe requests for our video (one per outgoing track); stopped when the
    /// connection closes.
    keyframe_watch: [tokio::task::JoinHandle<()>; 3],
    /// Wakes the driver while the connection comes up ([`wake_while_connecting`]).
    waker: tokio::task::JoinHandle<()>,
    gathering: tokio::sync::Mutex<mpsc::Receiver<Gathering>>,
    /// Reflexive candidates of the other side held back from its latest description (see
    /// [`super::sdp`]); emptied when they are added, or when a new offer comes.
    held: Arc<tokio::sync::Mutex<Held>>,
    /// How fast we may send to the other side (see [`super::estimate`]).
    estimate: Arc<EstimateCell>,
}

impl std::fmt::Debug for MediaPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPeer").finish_non_exhaustive()
    }
}

/// NACK for video (`nack` and `nack pli` feedback): the responder answers from its send
/// history, and the generator asks for each missing packet at most [`MAX_NACKS_PER_PACKET`]
/// times. webrtc-rs' own setup asks every 100 ms until the packet comes, and on a path whose
/// queue holds half a second that is five retransmissions of every lost packet, each making
/// the queue, and the loss, worse.
fn nack(registry: Registry, media: &mut MediaEngine) -> Registry {
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    registry
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        )
}

/// The interceptor chain of every connection: NACK (asking for lost video packets and
/// answering the other side's asks from the send history), RTCP sender and receiver
/// reports, send-side congestion control ([`super::estimate`]) and [`KeyframeRequestTap`].
/// NACK is negotiated for video only. Returns where the connection's estimate appears.
fn interceptors(media: &mut MediaEngine) -> Result<(Registry, Arc<EstimateCell>), TransportError> {
    let registry = configure_rtcp_reports(nack(Registry::new(), media));
    let (registry, estimate) = congestion_control(registry, media).map_err(webrtc_err)?;
    let registry = registry.with(
        Slot::Custom(KEYFRAME_REQUEST_TAP_SLOT),
        KeyframeRequestTap::default(),
    );
    Ok((registry, estimate))
}

impl MediaPeer {
    /// Creates the peer connection and its outgoing tracks. `now` stamps the tracks' clocks.
    pub async fn new(
        now: Instant,
        config: &PeerConfig,
    ) -> Result<(Self, mpsc::Receiver<PeerEvent>), TransportError> {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let (gathering_tx, gathering_rx) = mpsc::channel(GATHERING_CAPACITY);
        let mut media = MediaEngine::default();
        media.register_default_codecs().map_err(webrtc_err)?;
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: FRAME_INFO_URI.to_owned(),
                },
                RtpCodecKind::Video,
                None,
            )
            .map_err(webrtc_err)?;
        let (registry, estimate) = interceptors(&mut media)?;
        let settings = SettingEngineBuilder::new()
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED_TIMEOUT),
                Some(ICE_FAILED_TIMEOUT),
                Some(ICE_KEEPALIVE_INTERVAL),
            )
            .with_srflx_acceptance_min_wait(Some(REFLEXIVE_ACCEPTANCE_MIN_WAIT))
            .with_prflx_acceptance_min_wait(Some(REFLEXIVE_ACCEPTANCE_MIN_WAIT))
            .with_relay_acceptance_min_wait(Some(RELAY_ACCEPTANCE_MIN_WAIT))
            // The offerer starts the DTLS handshake ([`ANSWERER_DTLS_ROLE`]).
            .with_answering_dtls_role(ANSWERER_DTLS_ROLE)
            // An ICE restart starts from new sockets, so it gathers anew: a fresh TURN
            // allocation instead of re-announcing the old one (gone if the relay restarted,
            // and re-allocating on the old 5-tuple would be refused as a mismatch), and new
            // NAT mappings instead of ones that may have died with the path.
            .with_discard_local_candidates_during_ice_restart(true)
            .build();
        let remote_videos: RemoteVideos = Arc::default();
        let [audio_ssrc, video_ssrc, screen_ssrc] = distinct_ssrcs();
        let frame_info_id = Arc::new(AtomicU8::new(0));
        let (connecting_tx, connecting_rx) = tokio::sync::watch::channel(Connecting::NotYet);
        let connection = PeerConnectionBuilder::new()
            .with_configuration(config.rtc_configuration())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                events: events_tx.clone(),
                gathering: gathering_tx,
                connecting: connecting_tx,
                remote_videos: Arc::clone(&remote_videos),
                frame_info_id: Arc::clone(&frame_info_id),
                screen_ssrc,
            }))
            .with_udp_addrs(config.udp_addrs.clone())
            .build()
            .await
            .map_err(webrtc_err)?;
        let connection: Arc<dyn PeerConnection> = Arc::new(connection);
        let waker = tokio::spawn(wake_while_connecting(
            Arc::downgrade(&connection),
            connecting_rx,
        ));
        let audio = Outgoing::add(
            connection.as_ref(),
            now,
            (RtpCodecKind::Audio, "audio"),
            RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            audio_ssrc,
        )
        .await?;
        let vp8 = RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: VIDEO_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        };
        let video = Outgoing::add(
            connection.as_ref(),
            now,
            (RtpCodecKind::Video, video_label(VideoKind::Camera)),
            vp8.clone(),
            video_ssrc,
        )
        .await?;
        let screen = Outgoing::add(
            connection.as_ref(),
            now,
            (RtpCodecKind::Video, video_label(VideoKind::Screen)),
            vp8,
            screen_ssrc,
        )
        .await?;
        // webrtc-rs hands a compound RTCP packet to the track its first packet names: a
        // keyframe request behind a report about our audio reaches the audio track, one
        // behind the other side's sender report reaches its track (see `on_track`).
        let keyframe_watch = [
            tokio::spawn(watch_keyframe_requests(
                Arc::clone(&video.track),
                events_tx.clone(),
                screen_ssrc,
            )),
            tokio::spawn(watch_keyframe_requests(
                Arc::clone(&screen.track),
                events_tx.clone(),
                screen_ssrc,
            )),
            tokio::spawn(watch_keyframe_requests(
                Arc::clone(&audio.track),
                events_tx,
                screen_ssrc,
            )),
        ];
        Ok((
            Self {
                connection,
                audio,
                video,
                screen,
                remote_videos,
                frame_info_id,
                keyframe_watch,
                waker,
                gathering: tokio::sync::Mutex::new(gathering_rx),
                held: Arc::new(tokio::sync::Mutex::new(Held::default())),
                estimate,
            },
            events_rx,
        ))
    }

    /// How fast we may send to the other side, once its feedback has said.
    pub fn send_estimate(&self) -> Option<SendEstimate> {
        self.estimate.get()
    }

    /// Takes the ICE servers of `config` (fresh TURN credentials) for the next gathering.
    pub async fn update_ice_servers(&self, config: &PeerConfig) -> Result<(), TransportError> {
        let fresh = config.rtc_configuration();
        if self.connection.get_configuration().await.ice_servers() == fresh.ice_servers() {
            return Ok(());
        }
        self.connection
            .set_configuration(fresh)
            .await
            .map_err(webrtc_err)
    }

    /// Forgets the progress of a gathering nobody waited for, so the next wait is for the
    /// next one.
    async fn forget_gathered(&self) {
        let mut gathering = self.gathering.lock().await;
        while gathering.try_recv().is_ok() {}
    }

    /// Waits for ICE gathering to finish: at most [`GATHER_TIMEOUT`] for it or a first
    /// relayed candidate, and then at most [`GATHER_AFTER_RELAY`] more; after that the
    /// candidates gathered so far are used (a STUN or TURN server that does not answer,
    /// e.g. on a network that drops UDP, must not stop the others from being used).
    async fn wait_gathered(&self) -> Result<RTCSessionDescription, TransportError> {
        let mut gathering = self.gathering.lock().await;
        // The end of the channel (the connection is gone) counts as complete.
        let first = async { gathering.recv().await.unwrap_or(Gathering::Complete) };
        match tokio::time::timeout(GATHER_TIMEOUT, first).await {
            Ok(Gathering::Complete) => {}
            Ok(Gathering::Relayed) => {
                let complete = async {
                    while let Some(note) = gathering.recv().await {
                        if note == Gathering::Complete {
                            break;
                        }
                    }
                };
                if tokio::time::timeout(GATHER_AFTER_RELAY, complete)
                    .await
                    .is_err()
                {
                    debug!(
                        after_relay = ?GATHER_AFTER_RELAY,
                        "ICE gathering goes on; using the candidates so far (one is relayed)"
                    );
                }
            }
            Err(_) => {
                warn!(timeout = ?GATHER_TIMEOUT, "ICE gathering incomplete; using the candidates so far");
            }
        }
        self.connection
            .local_description()
            .await
            .ok_or_else(|| TransportError::Webrtc("no local description".into()))
    }

    /// Creates the offer (complete, with candidates).
    pub async fn create_offer(&self) -> Result<String, TransportError> {
        self.offer(None).await
    }

    async fn offer(&self, options: Option<RTCOfferOptions>) -> Result<String, TransportError> {
        let offer = self
            .connection
            .create_offer(options)
            .await
            .map_err(webrtc_err)?;
        self.connection
            .set_local_description(offer)
            .await
            .map_err(webrtc_err)?;
        Ok(self.wait_gathered().await?.sdp)
    }

    /// Restarts ICE on this connection and returns the offer that carries the new ICE
    /// credentials and candidates (complete). The DTLS session and RTP streams stay.
    /// `config` brings the current ICE servers (TURN credentials expire).
    pub async fn create_restart_offer(
        &self,
        config: &PeerConfig,
    ) -> Result<String, TransportError> {
        self.forget_gathered().await;
        self.update_ice_servers(config).await?;
        // Restarted through the offer options rather than `restart_ice()`: that one starts
        // gathering on the new sockets at once, and applying the restart offer afterwards
        // discards the candidates gathered so far (the host candidate among them). This way
        // the restart is applied first and everything gathered after it is kept.
        self.offer(Some(RTCOfferOptions { ice_restart: true }))
            .await
    }

    /// Takes the other side's offer (a first offer, or an ICE restart) and returns our
    /// answer. The offer's reflexive candidates are held back until
    /// [`MediaPeer::release_held`] (the offerer's word that it starts checking ours), or
    /// [`HOLD_BACK_LIMIT`] after the answer if that word never comes: see [`super::sdp`].
    pub async fn accept_offer(&self, offer: String) -> Result<String, TransportError> {
        let (offer, held) = hold_back_reflexive(&offer);
        let offer = RTCSessionDescription::offer(offer).map_err(webrtc_err)?;
        self.forget_gathered().await;
        self.held.lock().await.candidates.clear();
        self.connection
            .set_remote_description(offer)
            .await
            .map_err(webrtc_err)?;
        let answer = self
            .connection
            .create_answer(None)
            .await
            .map_err(webrtc_err)?;
        self.connection
            .set_local_description(answer)
            .await
            .map_err(webrtc_err)?;
        let answer = self.wait_gathered().await?.sdp;
        self.learn_frame_info_id().await;
        self.hold(held, HOLD_BACK_LIMIT).await;
        Ok(answer)
    }

    /// Takes the other side's answer to our offer; its reflexive candidates are held back
    /// for `hold_back` (see [`super::sdp`]).
    pub async fn accept_answer(
        &self,
        answer: String,
        hold_back: Duration,
    ) -> Result<(), TransportError> {
        let (answer, held) = if hold_back.is_zero() {
            (answer, Vec::new())
        } else {
            hold_back_reflexive(&answer)
        };
        let answer = RTCSessionDescription::answer(answer).map_err(webrtc_err)?;
        self.connection
            .set_remote_description(answer)
            .await
            .map_err(webrtc_err)?;
        self.learn_frame_info_id().await;
        self.hold(held, hold_back).await;
        Ok(())
    }

    /// Keeps `held` until [`MediaPeer::release_held`], or until `limit` has passed.
    async fn hold(&self, held: Vec<HeldCandidate>, limit: Duration) {
        if held.is_empty() {
            return;
        }
        let mut current = self.held.lock().await;
        current.generation += 1;
        current.candidates = held;
        let generation = current.generation;
        let connection = Arc::clone(&self.connection);
        let held = Arc::clone(&self.held);
        // Ends after `limit` (at most `HOLD_BACK_LIMIT`), unless a newer hold or the
        // connection's close stops it first.
        let timer = tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            let candidates = {
                let mut current = held.lock().await;
                if current.generation != generation {
                    return;
                }
                std::mem::take(&mut current.candidates)
            };
            if !candidates.is_empty() {
                debug!(after = ?limit, "held-back reflexive candidates added");
                add_candidates(connection.as_ref(), candidates).await;
            }
        });
        if let Some(previous) = current.timer.replace(timer) {
            previous.abort();
        }
    }

    /// Adds the reflexive candidates held back from the latest offer, if they are still
    /// held: their checks start now.
    pub async fn release_held(&self) {
        let candidates = std::mem::take(&mut self.held.lock().await.candidates);
        if !candidates.is_empty() {
            debug!("held-back reflexive candidates released");
            add_candidates(self.connection.as_ref(), candidates).await;
        }
    }

    /// Sends one sealed 20 ms audio frame, stamped `now`.
    pub async fn send(&self, now: Instant, sealed: Vec<u8>) -> Result<(), TransportError> {
        self.audio
            .send(
                now,
                sealed,
                Duration::from_millis(u64::from(FRAME_MS)),
                None,
            )
            .await
    }

    /// Sends one sealed frame of our `kind` of video, captured at `at`, lasting `duration`
    /// (until the next one): the payloader splits it into RTP packets, each carrying `info`
    /// in the frame-information header extension.
    pub async fn send_video(
        &self,
        kind: VideoKind,
        at: Instant,
        sealed: Vec<u8>,
        duration: Duration,
        info: FrameInfo,
    ) -> Result<(), TransportError> {
        self.learn_frame_info_id().await;
        let extension = HeaderExtension::Custom {
            uri: FRAME_INFO_URI.into(),
            extension: Box::new(FrameInfoExtension(info)),
        };
        let track = match kind {
            VideoKind::Camera => &self.video,
            VideoKind::Screen => &self.screen,
        };
        track.send(at, sealed, duration, Some(extension)).await
    }

    /// Learns the negotiated id of the frame-information extension (the same both ways on
    /// this media section), once negotiation has given one.
    async fn learn_frame_info_id(&self) {
        if self.frame_info_id.load(Ordering::Relaxed) != 0 {
            return;
        }
        let Ok(parameters) = self.video.sender.get_parameters().await else {
            return;
        };
        if let Some(id) = parameters
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|extension| extension.uri == FRAME_INFO_URI)
            .and_then(|extension| u8::try_from(extension.id).ok())
        {
            self.frame_info_id.store(id, Ordering::Relaxed);
        }
    }

    /// Asks the other side for a keyframe of its `kind` of video (RTCP PLI), once that
    /// video arrived.
    pub async fn request_keyframe(&self, kind: VideoKind) -> Result<(), TransportError> {
        let track = self
            .remote_videos
            .lock()
            .map_err(|_| TransportError::Webrtc("video track lock poisoned".into()))?
            .get(&kind)
            .cloned();
        let Some(track) = track else {
            debug!("no video from the other side yet: no keyframe to ask for");
            return Ok(());
        };
        let ssrcs = track.ssrcs().await;
        debug!(?ssrcs, "asking for a keyframe");
        let Some(media_ssrc) = ssrcs.first().copied() else {
            return Ok(());
        };
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await
            .map_err(webrtc_err)
    }

    /// The path of the selected ICE candidate pair (direct, or relayed through TURN at
    /// either end) and its latest STUN round-trip time, once a pair is nominated.
    pub async fn path(&self, now: Instant) -> Option<(MediaPath, f64)> {
        use rtc::statistics::report::RTCStatsReportEntry;
        let transport = self.audio.sender.transport().await.ok().flatten()?;
        let pair = transport
            .ice_transport()
            .get_selected_candidate_pair()
            .await
            .ok()
            .flatten()?;
        // Relayed if either end of the pair is a TURN relay candidate (ours, or theirs).
        let relay = webrtc::peer_connection::RTCIceCandidateType::Relay;
        let relayed = pair.local().typ == relay || pair.remote().typ == relay;
        debug!(
            local = ?(pair.local().typ, &pair.local().address, pair.local().port),
            remote = ?(pair.remote().typ, &pair.remote().address, pair.remote().port),
            "selected ICE pair"
        );
        let report = self
            .connection
            .get_stats(now, webrtc::peer_connection::StatsSelector::None)
            .await;
        let rtt_ms = report
            .iter()
            .find_map(|entry| match entry {
                RTCStatsReportEntry::IceCandidatePair(stats) if stats.nominated => {
                    Some(stats.current_round_trip_time * 1000.0)
                }
                _ => None,
            })
            .unwrap_or(0.0);
        let path = if relayed {
            MediaPath::Relayed
        } else {
            MediaPath::Direct
        };
        Some((path, rtt_ms))
    }

    /// Closes the connection (and stops a hold-back timer still running).
    pub async fn close(&self) -> Result<(), TransportError> {
        for watch in &self.keyframe_watch {
            watch.abort();
        }
        self.waker.abort();
        if let Some(timer) = self.held.lock().await.timer.take() {
            timer.abort();
        }
        self.connection.close().await.map_err(webrtc_err)
    }
}
