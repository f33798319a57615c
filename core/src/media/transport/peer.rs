//! One WebRTC peer connection carrying SFrame-sealed Opus audio in both directions.
//!
//! The webrtc-rs callbacks only `try_send` a [`PeerEvent`] into a bounded channel; nothing
//! else sees the `PeerConnection`. Offer/answer are complete (non-trickle) SDP blobs,
//! produced once ICE gathering finished.
//!
//! A path that stops carrying traffic is noticed by ICE consent checks within
//! [`ICE_DISCONNECTED_TIMEOUT`] and declared failed [`ICE_FAILED_TIMEOUT`] later; the
//! media engine (`media::engine`) then restarts ICE on the same connection
//! ([`AudioPeer::create_restart_offer`]): new ICE credentials, new sockets and candidates
//! (a fresh TURN allocation among them), same DTLS session, same RTP streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::PayloadType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfiguration, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceCandidateType,
    RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use super::IceServer;
use super::sdp::{HeldCandidate, hold_back_reflexive};
use crate::media::audio::FRAME_MS;
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
/// How long connectivity checks run before a relayed pair may be chosen (webrtc-rs: 2 s): a
/// relayed pair that succeeds first would otherwise win for the whole call (webrtc-rs 0.21
/// never renominates). Direct pairs through restrictive NATs start their checks half a
/// signalling round trip after the offerer's (`super::sdp`) and succeed one round trip
/// later: 1.2–1.4 s at 600 ms RTT, well within this.
pub const RELAY_ACCEPTANCE_MIN_WAIT: Duration = Duration::from_millis(2500);
/// How long connectivity checks run before a pair through a NAT (server- or peer-reflexive)
/// may be chosen (webrtc-rs: 0.5 s and 1 s): long enough for a host pair on the same LAN,
/// which succeeds within milliseconds, to win; every further wait delays the first audio.
pub const REFLEXIVE_ACCEPTANCE_MIN_WAIT: Duration = Duration::from_millis(200);
/// Longest time the offer's reflexive candidates wait for the offerer's word to check them
/// (its `Punch`, half a signalling round trip after our answer arrives): an offerer that
/// never sends it still gets its direct paths checked.
pub const HOLD_BACK_LIMIT: Duration = Duration::from_secs(3);
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
    /// A media frame arrived: the RTP sequence number and timestamp, and the payload (an
    /// SFrame-sealed Opus frame).
    Frame {
        /// RTP sequence number.
        seq: u16,
        /// RTP timestamp (48 kHz).
        timestamp: u32,
        /// The RTP payload.
        payload: Vec<u8>,
    },
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

/// Progress of an ICE gathering, as far as [`AudioPeer::wait_gathered`] cares.
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
        if state == RTCIceConnectionState::Connected {
            let _ = self.events.try_send(PeerEvent::IceConnected);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self
            .events
            .try_send(PeerEvent::State(connection_state(state)));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let frame = PeerEvent::Frame {
                        seq: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        payload: packet.payload.to_vec(),
                    };
                    if events.try_send(frame).is_err() && events.is_closed() {
                        break;
                    }
                }
            }
        });
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

/// One peer connection with one outgoing and one incoming audio track.
pub struct AudioPeer {
    connection: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    gathering: tokio::sync::Mutex<mpsc::Receiver<Gathering>>,
    payload_type: tokio::sync::OnceCell<PayloadType>,
    /// Reflexive candidates of the other side held back from its latest description (see
    /// [`super::sdp`]); emptied when they are added, or when a new offer comes.
    held: Arc<tokio::sync::Mutex<Held>>,
}

impl std::fmt::Debug for AudioPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioPeer").finish_non_exhaustive()
    }
}

impl AudioPeer {
    /// Creates the peer connection and its outgoing track. `now` stamps the track's clock.
    pub async fn new(
        now: Instant,
        config: &PeerConfig,
    ) -> Result<(Self, mpsc::Receiver<PeerEvent>), TransportError> {
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let (gathering_tx, gathering_rx) = mpsc::channel(GATHERING_CAPACITY);
        let mut media = MediaEngine::default();
        media.register_default_codecs().map_err(webrtc_err)?;
        let settings = SettingEngineBuilder::new()
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED_TIMEOUT),
                Some(ICE_FAILED_TIMEOUT),
                Some(ICE_KEEPALIVE_INTERVAL),
            )
            .with_srflx_acceptance_min_wait(Some(REFLEXIVE_ACCEPTANCE_MIN_WAIT))
            .with_prflx_acceptance_min_wait(Some(REFLEXIVE_ACCEPTANCE_MIN_WAIT))
            .with_relay_acceptance_min_wait(Some(RELAY_ACCEPTANCE_MIN_WAIT))
            // An ICE restart starts from new sockets, so it gathers anew: a fresh TURN
            // allocation instead of re-announcing the old one (gone if the relay restarted,
            // and re-allocating on the old 5-tuple would be refused as a mismatch), and new
            // NAT mappings instead of ones that may have died with the path.
            .with_discard_local_candidates_during_ice_restart(true)
            .build();
        let connection = PeerConnectionBuilder::new()
            .with_configuration(config.rtc_configuration())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler {
                events: events_tx,
                gathering: gathering_tx,
            }))
            .with_udp_addrs(config.udp_addrs.clone())
            .build()
            .await
            .map_err(webrtc_err)?;
        let connection: Arc<dyn PeerConnection> = Arc::new(connection);
        let ssrc: u32 = rand::random();
        let track = Arc::new(
            TrackLocalStaticSample::new(
                now,
                MediaStreamTrack::new(
                    "conclave".to_owned(),
                    "audio".to_owned(),
                    "audio".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_OPUS.to_owned(),
                            clock_rate: 48_000,
                            channels: 2,
                            sdp_fmtp_line: String::new(),
                            rtcp_feedback: vec![],
                        },
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
        Ok((
            Self {
                connection,
                track,
                sender,
                gathering: tokio::sync::Mutex::new(gathering_rx),
                payload_type: tokio::sync::OnceCell::new(),
                held: Arc::new(tokio::sync::Mutex::new(Held::default())),
            },
            events_rx,
        ))
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
    /// [`AudioPeer::release_held`] (the offerer's word that it starts checking ours), or
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
        self.hold(held, hold_back).await;
        Ok(())
    }

    /// Keeps `held` until [`AudioPeer::release_held`], or until `limit` has passed.
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

    /// Sends one sealed 20 ms frame, stamped `now`.
    pub async fn send(&self, now: Instant, sealed: Vec<u8>) -> Result<(), TransportError> {
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
        self.track
            .sample_writer(ssrc, payload_type)
            .write_sample(&Sample {
                data: bytes::Bytes::from(sealed),
                duration: Duration::from_millis(u64::from(FRAME_MS)),
                ..Sample::new(now)
            })
            .await
            .map_err(webrtc_err)
    }

    /// The path of the selected ICE candidate pair (direct, or relayed through TURN at
    /// either end) and its latest STUN round-trip time, once a pair is nominated.
    pub async fn path(&self, now: Instant) -> Option<(MediaPath, f64)> {
        use rtc::statistics::report::RTCStatsReportEntry;
        let transport = self.sender.transport().await.ok().flatten()?;
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
        if let Some(timer) = self.held.lock().await.timer.take() {
            timer.abort();
        }
        self.connection.close().await.map_err(webrtc_err)
    }
}
