//! The media actor: WebRTC connections to every member, the 20 ms audio clock, and the
//! glue between meeting keys and media frames.
//!
//! ```text
//! net driver ──MediaInput (bounded)──▶ media actor ──(peer, signal) (bounded)──▶ net driver
//!                                        │   ▲                                  (MLS app message)
//!                     AudioPeer per member│   │PeerEvent (bounded, forwarded per peer)
//!                                        ▼   │
//!                                     webrtc-rs (ICE, DTLS-SRTP, RTP)
//! ```
//!
//! Every 20 ms: source → Opus → SFrame → every connected peer; and for every sender:
//! jitter buffer → Opus (FEC/PLC) → mixer → sink. The peer with the lower peer id offers;
//! SDP travels inside the MLS group. Negotiation runs in spawned tasks so that it never
//! stalls the audio clock. Like every driver, this one reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::MediaCommand;
use super::audio::codec::{Decoder, Encoder};
use super::audio::denoise::NoiseSuppressor;
use super::audio::device::DeviceSink;
use super::audio::jitter::{JitterBuffer, JitterConfig};
use super::audio::mixer::{Mixer, level_dbfs};
use super::audio::sink::{AudioSink, NullSink, WavSink};
use super::audio::source::{AudioSource, Silence, from_spec};
use super::audio::{AudioError, FRAME_MS, FRAME_SAMPLES, Frame};
use super::crypto::keyring::Opener;
use super::crypto::sframe::Sealer;
use super::transport::IceServer;
use super::transport::peer::{AudioPeer, PeerConfig, PeerEvent, RELAY_ACCEPTANCE_MIN_WAIT};
use super::transport::turn_tcp::TcpTurnBridge;
use crate::group::media_keys::sender_base_key;

/// Capacity of the actor's inboxes.
pub const INBOX_CAPACITY: usize = 256;
/// How often per-peer statistics are reported.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

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
        }
    }
}

/// For an output spec `device` → `Some(None)`, `device:NAME` → `Some(Some(NAME))`, a file
/// path → `None`.
fn device_name(path: &std::path::Path) -> Option<Option<String>> {
    let text = path.to_str()?;
    if text == "device" {
        return Some(None);
    }
    text.strip_prefix("device:")
        .map(|name| Some(name.to_owned()))
}

/// What the media plane reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// A peer connection changed state.
    Connection {
        /// The member.
        peer_id: PeerId,
        /// `connected`, `disconnected`, `failed`, ...
        state: String,
        /// `direct`, or `relayed` through a TURN server (from the selected ICE pair).
        path: &'static str,
        /// Latest STUN round-trip time on that path, once measured.
        rtt_ms: Option<f64>,
        /// ICE restarts on this connection so far (a broken path repaired in place).
        ice_restarts: u32,
    },
    /// Periodic receive statistics for one member.
    Stats {
        /// The member.
        peer_id: PeerId,
        /// Frames decoded from their own packets.
        rx_frames: u64,
        /// Frames missing (recovered by FEC or concealed).
        lost_frames: u64,
        /// Missing frames recovered by FEC.
        recovered_frames: u64,
        /// Frames dropped by SFrame (forged, replayed, unknown key) across all senders.
        decrypt_failures: u64,
        /// Inter-arrival jitter.
        jitter_ms: f64,
        /// Current level of this speaker (dBFS).
        level_dbfs: f32,
        /// Latest round-trip time to this member (ICE), once measured.
        rtt_ms: Option<f64>,
    },
    /// The first frame from a member opened and was queued for playout.
    AudioStarted {
        /// The member.
        peer_id: PeerId,
    },
    /// Something went wrong that does not end the meeting.
    Warning(String),
}

/// Inputs of the media actor.
#[derive(Debug)]
pub enum MediaInput {
    /// From the meeting machine.
    Command(MediaCommand),
    /// Stop or resume sending.
    Mute(bool),
    /// Turn noise suppression of the outgoing audio on or off.
    NoiseSuppression(bool),
    /// The current TURN servers (fresh credentials) from the relays, replacing earlier ones.
    IceServers(Vec<IceServer>),
    /// The connection to a relay was lost: its TURN server may have restarted, taking the
    /// allocations of our relayed paths with it. The next [`MediaInput::IceServers`] (sent
    /// once the relay is back) repairs relayed paths that went silent meanwhile.
    RelayLost,
}

#[derive(Debug, Serialize, Deserialize)]
enum Signal {
    /// A new connection.
    Offer(String),
    /// The answer to the offer (or restart offer) whose [`offer_digest`] is `offer`: an
    /// answer to an offer since replaced must not be applied to the new one.
    Answer { sdp: String, offer: u64 },
    /// An ICE restart of the existing connection (new ICE credentials and candidates).
    Restart(String),
}

/// Names an offer in its answer: the first 8 bytes of the SHA-256 of its SDP.
fn offer_digest(sdp: &str) -> u64 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(sdp.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// A connection whose path stopped working, and what we did about it.
#[derive(Debug, Clone, Copy)]
struct BrokenPath {
    since: Instant,
    /// Whether the path was relayed (TURN) when it broke.
    relayed: bool,
    /// ICE restarts offered so far.
    attempts: u32,
    /// How many of them the other side answered.
    answered: u32,
    /// The latest restart offer, and whether its answer came.
    last_attempt: Option<(Instant, bool)>,
}

impl BrokenPath {
    fn new(since: Instant, relayed: bool) -> Self {
        Self {
            since,
            relayed,
            attempts: 0,
            answered: 0,
            last_attempt: None,
        }
    }

    /// Whether the offering side should restart ICE (again) at `now`: once the path has been
    /// down for [`RESTART_AFTER`]; again [`RESTART_UNANSWERED_RETRY`] after an offer that was
    /// not answered (lost on the way), or [`RESTART_RETRY`] after one that was, so that its
    /// connectivity checks get the time a relayed pair needs. A path that was direct may well
    /// come back the same way soon: its first answered restart gets only
    /// [`RESTART_RETRY_DIRECT`] (the checks of a generation give up after a few seconds),
    /// every later one the full wait, so that a relayed fallback can still win.
    fn restart_due(&self, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) < RESTART_AFTER {
            return false;
        }
        match self.last_attempt {
            None => true,
            Some((at, false)) => now.saturating_duration_since(at) >= RESTART_UNANSWERED_RETRY,
            Some((at, true)) => {
                let wait = if !self.relayed && self.answered <= 1 {
                    RESTART_RETRY_DIRECT
                } else {
                    RESTART_RETRY
                };
                now.saturating_duration_since(at) >= wait
            }
        }
    }

    /// The answer to the latest restart offer arrived.
    fn answered(&mut self) {
        if let Some((_, answered @ false)) = self.last_attempt.as_mut() {
            *answered = true;
            self.answered += 1;
        }
    }
}

/// How long a path may stay `disconnected` before the offering side restarts ICE (it may
/// come back by itself first).
pub const RESTART_AFTER: Duration = Duration::from_secs(2);
/// Time an answered ICE restart gets before the next one: a relayed pair may only be chosen
/// [`RELAY_ACCEPTANCE_MIN_WAIT`] after the checks start, and a restart before that would
/// start the wait over (so a path that must be relayed would never come back).
pub const RESTART_RETRY: Duration = Duration::from_secs(RELAY_ACCEPTANCE_MIN_WAIT.as_secs() + 2);
/// Time the first answered ICE restart of a path that was direct gets before the next one.
pub const RESTART_RETRY_DIRECT: Duration = Duration::from_secs(4);
/// Time after which a restart offer that got no answer is sent again (the signalling path
/// may have been down too, e.g. through a relay that restarted). The answerer may gather
/// for up to [`GATHER_TIMEOUT`](super::transport::peer::GATHER_TIMEOUT) (+ 0.5 s) before
/// it answers; a new offer sent before that would make the answer on its way stale.
pub const RESTART_UNANSWERED_RETRY: Duration = Duration::from_secs(6);
/// Answered ICE restarts tried before the connection is replaced by a new one.
pub const MAX_ICE_RESTARTS: u32 = 3;
/// How long an offer may go unanswered before the offering side offers again with a new
/// connection (each side gathers for at most ~5.5 s). A signal can be lost: one that
/// reaches a joiner still entering the group is in an epoch it cannot read yet.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(15);

enum Internal {
    Peer(PeerId, PeerEvent),
    /// A signal produced by `connection` for the member (dropped if that connection has been
    /// replaced meanwhile).
    SignalOut(PeerId, Arc<AudioPeer>, Signal),
    Failed(PeerId, String),
}

struct Receiver {
    jitter: JitterBuffer,
    decoder: Decoder,
    level: f32,
}

struct Media {
    local: PeerId,
    config: MediaConfig,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    encoder: Encoder,
    sealer: Sealer,
    opener: Opener,
    keyed: bool,
    muted: bool,
    /// Present while noise suppression is on.
    suppressor: Option<Box<NoiseSuppressor>>,
    peers: HashMap<PeerId, Arc<AudioPeer>>,
    connected: HashMap<PeerId, bool>,
    /// ICE servers from the relays, TCP TURN already rewritten to go through a bridge.
    relay_ice_servers: Vec<IceServer>,
    /// TURN-over-TCP bridges by server address.
    tcp_bridges: HashMap<std::net::SocketAddr, TcpTurnBridge>,
    /// Connections whose path broke, until they are connected again.
    broken: HashMap<PeerId, BrokenPath>,
    /// ICE restarts per connection, reported in connection events.
    restarts: HashMap<PeerId, u32>,
    /// When a relay connection was lost, until the relay's servers come back.
    relay_lost: Option<Instant>,
    /// When the latest frame arrived from each member.
    last_frame: HashMap<PeerId, Instant>,
    /// Members whose connected path is relayed (TURN).
    relayed: std::collections::HashSet<PeerId>,
    /// Connections we offered whose answer has not arrived yet, since when.
    unanswered: HashMap<PeerId, Instant>,
    /// Offers from peers not (yet) members, kept until an epoch says whether they are.
    early_offers: HashMap<PeerId, (Instant, String)>,
    /// The latest signalling payload from each member (a repeat of it is a retry).
    last_signal: HashMap<PeerId, Vec<u8>>,
    /// The digest of the latest offer we sent each member (only its answer is taken).
    offers: HashMap<PeerId, u64>,
    leaves: BTreeMap<u32, PeerId>,
    receivers: HashMap<u32, Receiver>,
    internal_tx: mpsc::Sender<Internal>,
    signals: mpsc::Sender<(PeerId, Vec<u8>)>,
    events: mpsc::Sender<MediaEvent>,
    /// Reports dropped because the control plane did not take them (telemetry only).
    reports_dropped: u64,
}

/// Starts the media actor. Signalling payloads to send come out of `signals`; reports out
/// of `events`.
pub fn spawn(
    local: PeerId,
    config: MediaConfig,
    signals: mpsc::Sender<(PeerId, Vec<u8>)>,
    events: mpsc::Sender<MediaEvent>,
    cancel: CancellationToken,
) -> Result<mpsc::Sender<MediaInput>, AudioError> {
    // A missing or failing sound device is not fatal: listen-only, or no playback.
    let mut warnings = Vec::new();
    let source: Box<dyn AudioSource> = match from_spec(&config.audio_in) {
        Ok(source) => source,
        Err(AudioError::Device(message)) => {
            warnings.push(format!("{message}; you are listen-only"));
            Box::new(Silence)
        }
        Err(other) => return Err(other),
    };
    let sink: Box<dyn AudioSink> = match &config.audio_out {
        Some(path) if device_name(path).is_some() => {
            match DeviceSink::open_named(device_name(path).flatten()) {
                Ok(sink) => Box::new(sink),
                Err(err) => {
                    warnings.push(format!("{err}; incoming audio is not played"));
                    Box::new(NullSink)
                }
            }
        }
        Some(path) => Box::new(WavSink::create(path)?),
        None => Box::new(NullSink),
    };
    for warning in warnings {
        warn!(%warning, "audio device");
        let _ = events.try_send(MediaEvent::Warning(warning));
    }
    let (input_tx, input_rx) = mpsc::channel(INBOX_CAPACITY);
    let (internal_tx, internal_rx) = mpsc::channel(INBOX_CAPACITY * 4);
    let noise_suppression = config.noise_suppression;
    let media = Media {
        local,
        config,
        source,
        sink,
        encoder: Encoder::new()?,
        sealer: Sealer::new(0),
        opener: Opener::default(),
        keyed: false,
        muted: false,
        suppressor: noise_suppression.then(|| Box::new(NoiseSuppressor::new())),
        peers: HashMap::new(),
        connected: HashMap::new(),
        relay_ice_servers: Vec::new(),
        tcp_bridges: HashMap::new(),
        broken: HashMap::new(),
        restarts: HashMap::new(),
        relay_lost: None,
        last_frame: HashMap::new(),
        relayed: std::collections::HashSet::new(),
        unanswered: HashMap::new(),
        early_offers: HashMap::new(),
        last_signal: HashMap::new(),
        offers: HashMap::new(),
        leaves: BTreeMap::new(),
        receivers: HashMap::new(),
        internal_tx,
        signals,
        events,
        reports_dropped: 0,
    };
    tokio::spawn(media.run(input_rx, internal_rx, cancel));
    Ok(input_tx)
}

impl Media {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<MediaInput>,
        mut internal: mpsc::Receiver<Internal>,
        cancel: CancellationToken,
    ) {
        let mut audio_clock = tokio::time::interval(Duration::from_millis(u64::from(FRAME_MS)));
        audio_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut stats_clock = tokio::time::interval(STATS_INTERVAL);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                input = inputs.recv() => match input {
                    Some(MediaInput::Command(MediaCommand::Stop)) | None => break,
                    Some(MediaInput::Command(command)) => self.on_command(command).await,
                    Some(MediaInput::Mute(muted)) => self.muted = muted,
                    Some(MediaInput::IceServers(servers)) => {
                        self.set_ice_servers(servers).await;
                        self.repair_after_relay_loss(Instant::now()).await;
                    }
                    Some(MediaInput::RelayLost) => {
                        self.relay_lost.get_or_insert_with(Instant::now);
                    }
                    Some(MediaInput::NoiseSuppression(on)) => {
                        if on != self.suppressor.is_some() {
                            info!(on, "noise suppression");
                            self.suppressor = on.then(|| Box::new(NoiseSuppressor::new()));
                        }
                    }
                },
                _ = audio_clock.tick() => self.on_tick().await,
                message = internal.recv() => if let Some(message) = message { self.on_internal(message).await },
                _ = stats_clock.tick() => {
                    self.repair_paths(Instant::now()).await;
                    self.report_stats().await;
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Err(err) = self.sink.finish() {
            warn!(error = %err, "could not finish the audio output");
        }
        for (_, peer) in self.peers.drain() {
            let _ = peer.close().await;
        }
        info!("media stopped");
    }

    async fn on_command(&mut self, command: MediaCommand) {
        let now = Instant::now();
        match command {
            MediaCommand::Epoch {
                epoch,
                secret,
                own_leaf,
                members,
                replaced,
            } => {
                // A member that rejoined (new leaf, same identity) needs a fresh connection.
                for peer in &replaced {
                    self.drop_peer(*peer);
                    if let Some(leaf) = self
                        .leaves
                        .iter()
                        .find(|(_, p)| *p == peer)
                        .map(|(l, _)| *l)
                    {
                        self.receivers.remove(&leaf);
                    }
                }
                if let Err(err) =
                    self.sealer
                        .install(epoch, own_leaf, &sender_base_key(&secret.0, own_leaf))
                {
                    warn!(error = %err, "cannot install the sending key");
                }
                self.opener.install(now, epoch, secret.0);
                self.keyed = true;
                self.leaves = members
                    .iter()
                    .copied()
                    .filter(|(_, p)| *p != self.local)
                    .collect();
                self.receivers
                    .retain(|leaf, _| members.iter().any(|(l, p)| l == leaf && *p != self.local));
                let wanted: Vec<PeerId> = self.leaves.values().copied().collect();
                self.last_signal.retain(|peer, _| wanted.contains(peer));
                let gone: Vec<PeerId> = self
                    .peers
                    .keys()
                    .copied()
                    .filter(|p| !wanted.contains(p))
                    .collect();
                for peer in gone {
                    self.drop_peer(peer);
                }
                for peer in wanted {
                    if !self.peers.contains_key(&peer) && self.local.to_bytes() < peer.to_bytes() {
                        self.offer(peer).await;
                    }
                }
                // Offers that arrived before this epoch made their senders members.
                self.early_offers
                    .retain(|_, (at, _)| now.duration_since(*at) < NEGOTIATION_TIMEOUT);
                let members: Vec<PeerId> = self
                    .early_offers
                    .keys()
                    .copied()
                    .filter(|peer| self.leaves.values().any(|p| p == peer))
                    .collect();
                for peer in members {
                    if let Some((_, offer)) = self.early_offers.remove(&peer) {
                        debug!(peer = %peer, "answering an offer that came before its epoch");
                        self.answer(peer, offer).await;
                    }
                }
            }
            MediaCommand::Signal { from, payload } => {
                // Signals are delivered with retries, so one whose acknowledgement was lost
                // comes twice: taking an offer again would replace the connection it made.
                if self.last_signal.get(&from) == Some(&payload) {
                    debug!(peer = %from, "duplicate signal ignored");
                    return;
                }
                self.last_signal.insert(from, payload.clone());
                match ciborium::from_reader::<Signal, _>(payload.as_slice()) {
                    Ok(Signal::Offer(sdp)) if !self.leaves.values().any(|p| *p == from) => {
                        debug!(peer = %from, "offer from a non-member kept until the next epoch");
                        self.early_offers.insert(from, (now, sdp));
                    }
                    Ok(Signal::Offer(sdp)) => self.answer(from, sdp).await,
                    Ok(Signal::Restart(sdp)) => self.answer_restart(from, sdp).await,
                    Ok(Signal::Answer { offer, .. }) if self.offers.get(&from) != Some(&offer) => {
                        debug!(peer = %from, "answer to an offer since replaced ignored");
                    }
                    Ok(Signal::Answer { sdp, .. }) => {
                        if let Some(broken) = self.broken.get_mut(&from) {
                            broken.answered();
                        }
                        if let Some(peer) = self.peers.get(&from).cloned() {
                            let internal = self.internal_tx.clone();
                            tokio::spawn(async move {
                                if let Err(err) = peer.accept_answer(sdp).await {
                                    let _ = internal
                                        .send(Internal::Failed(from, err.to_string()))
                                        .await;
                                }
                            });
                        }
                    }
                    Err(_) => warn!(peer = %from, "malformed signalling message dropped"),
                }
            }
            MediaCommand::Reset => {
                for peer in self.peers.keys().copied().collect::<Vec<_>>() {
                    self.drop_peer(peer);
                }
                self.receivers.clear();
                self.leaves.clear();
                self.keyed = false;
                // No key of the old group outlives it: not for sealing, not for opening.
                self.sealer.reset();
                self.opener.reset();
            }
            MediaCommand::Stop => {}
        }
    }

    /// How new connections and ICE restarts are configured now.
    fn peer_config(&self) -> PeerConfig {
        let mut ice_servers = self.config.ice_servers.clone();
        ice_servers.extend(self.relay_ice_servers.iter().cloned());
        PeerConfig {
            udp_addrs: self.config.udp_addrs.clone(),
            ice_servers,
            relay_only: self.config.relay_only,
        }
    }

    /// Takes fresh ICE servers from the relays. TURN over TCP goes through a local bridge
    /// (webrtc-rs allocates over UDP only); see [`TcpTurnBridge`].
    async fn set_ice_servers(&mut self, servers: Vec<IceServer>) {
        let mut usable = Vec::new();
        for server in servers {
            let mut urls = Vec::new();
            for url in &server.urls {
                let Some(address) = url
                    .strip_prefix("turn:")
                    .and_then(|rest| rest.strip_suffix("?transport=tcp"))
                else {
                    urls.push(url.clone());
                    continue;
                };
                let Ok(address) = address.parse::<std::net::SocketAddr>() else {
                    warn!(%url, "TURN over TCP needs an IP address; skipped");
                    continue;
                };
                let bridge = match self.tcp_bridges.entry(address) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        match TcpTurnBridge::start(address).await {
                            Ok(bridge) => entry.insert(bridge),
                            Err(err) => {
                                warn!(%url, error = %err, "cannot start the TURN-over-TCP bridge");
                                continue;
                            }
                        }
                    }
                };
                urls.push(format!("turn:{}?transport=udp", bridge.local_addr()));
            }
            if !urls.is_empty() {
                usable.push(IceServer { urls, ..server });
            }
        }
        debug!(servers = usable.len(), "ICE servers updated");
        self.relay_ice_servers = usable;
    }

    async fn create_peer(&mut self, peer_id: PeerId) -> Option<Arc<AudioPeer>> {
        let config = self.peer_config();
        match AudioPeer::new(Instant::now(), &config).await {
            Ok((peer, mut events)) => {
                let peer = Arc::new(peer);
                self.peers.insert(peer_id, Arc::clone(&peer));
                let internal = self.internal_tx.clone();
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        if internal.send(Internal::Peer(peer_id, event)).await.is_err() {
                            break;
                        }
                    }
                });
                Some(peer)
            }
            Err(err) => {
                self.warn(format!(
                    "cannot create a media connection to {peer_id}: {err}"
                ))
                .await;
                None
            }
        }
    }

    async fn offer(&mut self, peer_id: PeerId) {
        let Some(peer) = self.create_peer(peer_id).await else {
            return;
        };
        self.unanswered.insert(peer_id, Instant::now());
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let message = match peer.create_offer().await {
                Ok(sdp) => Internal::SignalOut(peer_id, peer, Signal::Offer(sdp)),
                Err(err) => Internal::Failed(peer_id, err.to_string()),
            };
            let _ = internal.send(message).await;
        });
    }

    async fn answer(&mut self, peer_id: PeerId, offer: String) {
        if !self.leaves.values().any(|p| *p == peer_id) {
            warn!(peer = %peer_id, "offer from a non-member ignored");
            return;
        }
        // A new offer replaces whatever connection we had with this member.
        self.drop_peer(peer_id);
        let Some(peer) = self.create_peer(peer_id).await else {
            return;
        };
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let digest = offer_digest(&offer);
            let message = match peer.accept_offer(offer).await {
                Ok(sdp) => {
                    Internal::SignalOut(peer_id, peer, Signal::Answer { sdp, offer: digest })
                }
                Err(err) => Internal::Failed(peer_id, err.to_string()),
            };
            let _ = internal.send(message).await;
        });
    }

    /// The other side restarted ICE: answer on the existing connection (or, if we have
    /// none any more, as a new one).
    async fn answer_restart(&mut self, peer_id: PeerId, offer: String) {
        let Some(peer) = self.peers.get(&peer_id).cloned() else {
            self.answer(peer_id, offer).await;
            return;
        };
        *self.restarts.entry(peer_id).or_default() += 1;
        info!(peer = %peer_id, "answering an ICE restart");
        let internal = self.internal_tx.clone();
        let config = self.peer_config();
        tokio::spawn(async move {
            if let Err(err) = peer.update_ice_servers(&config).await {
                debug!(peer = %peer_id, error = %err, "ICE servers not updated");
            }
            let digest = offer_digest(&offer);
            let message = match peer.accept_offer(offer).await {
                Ok(sdp) => {
                    Internal::SignalOut(peer_id, peer, Signal::Answer { sdp, offer: digest })
                }
                Err(err) => Internal::Failed(peer_id, err.to_string()),
            };
            let _ = internal.send(message).await;
        });
    }

    /// Repairs broken paths we are responsible for (the offering side): ICE restarts as
    /// [`BrokenPath::restart_due`] says; after [`MAX_ICE_RESTARTS`] answered ones the
    /// connection is replaced.
    async fn repair_paths(&mut self, now: Instant) {
        let unanswered: Vec<PeerId> = self
            .unanswered
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= NEGOTIATION_TIMEOUT)
            .map(|(peer, _)| *peer)
            .collect();
        for peer_id in unanswered {
            info!(peer = %peer_id, timeout = ?NEGOTIATION_TIMEOUT, "our offer was not answered; offering again");
            self.reconnect(peer_id).await;
        }
        let due: Vec<(PeerId, BrokenPath)> = self
            .broken
            .iter()
            .filter(|(peer, broken)| {
                self.local.to_bytes() < peer.to_bytes() && broken.restart_due(now)
            })
            .map(|(peer, broken)| (*peer, *broken))
            .collect();
        for (peer_id, broken) in due {
            if broken.answered >= MAX_ICE_RESTARTS {
                info!(peer = %peer_id, "ICE restarts did not help; new connection");
                self.reconnect(peer_id).await;
                continue;
            }
            let Some(peer) = self.peers.get(&peer_id).cloned() else {
                self.broken.remove(&peer_id);
                continue;
            };
            self.broken.insert(
                peer_id,
                BrokenPath {
                    attempts: broken.attempts + 1,
                    last_attempt: Some((now, false)),
                    ..broken
                },
            );
            *self.restarts.entry(peer_id).or_default() += 1;
            info!(peer = %peer_id, attempt = broken.attempts + 1, "restarting ICE");
            let internal = self.internal_tx.clone();
            let config = self.peer_config();
            tokio::spawn(async move {
                let message = match peer.create_restart_offer(&config).await {
                    Ok(sdp) => Internal::SignalOut(peer_id, peer, Signal::Restart(sdp)),
                    Err(err) => Internal::Failed(peer_id, err.to_string()),
                };
                let _ = internal.send(message).await;
            });
        }
    }

    /// The relay is back after we lost it: every relayed path of ours that has carried no
    /// frame since then is broken (its TURN allocations went with a restarted relay), so it
    /// is repaired at once instead of after ICE notices (consent checks) and waits
    /// [`RESTART_AFTER`]. A path whose frames kept coming (only the control connection
    /// dropped) is left alone.
    async fn repair_after_relay_loss(&mut self, now: Instant) {
        let Some(lost) = self.relay_lost.take() else {
            return;
        };
        // Frames already on their way when the relay went are not a sign of life.
        let alive_after = lost + Duration::from_millis(100);
        let candidates: Vec<(PeerId, Arc<AudioPeer>)> = self
            .peers
            .iter()
            .filter(|(peer, _)| {
                self.local.to_bytes() < peer.to_bytes()
                    && self.connected.get(*peer).copied().unwrap_or(false)
                    && !self.broken.contains_key(*peer)
                    && self
                        .last_frame
                        .get(*peer)
                        .is_none_or(|at| *at <= alive_after)
            })
            .map(|(peer, connection)| (*peer, Arc::clone(connection)))
            .collect();
        let mut any = false;
        for (peer, connection) in candidates {
            if matches!(connection.path(now).await, Some(("relayed", _))) {
                info!(peer = %peer, "relayed path silent since the relay was lost; restarting ICE");
                let since = now.checked_sub(RESTART_AFTER).unwrap_or(now);
                self.broken.insert(peer, BrokenPath::new(since, true));
                any = true;
            }
        }
        if any {
            self.repair_paths(now).await;
        }
    }

    /// Replaces the connection with `peer_id` by a new one (new RTP streams, so its jitter
    /// buffer goes too); the offering side offers.
    async fn reconnect(&mut self, peer_id: PeerId) {
        self.drop_peer(peer_id);
        if let Some(leaf) = self
            .leaves
            .iter()
            .find(|(_, p)| **p == peer_id)
            .map(|(l, _)| *l)
        {
            self.receivers.remove(&leaf);
        }
        if self.local.to_bytes() < peer_id.to_bytes() {
            self.offer(peer_id).await;
        }
    }

    fn drop_peer(&mut self, peer_id: PeerId) {
        self.connected.remove(&peer_id);
        self.offers.remove(&peer_id);
        self.unanswered.remove(&peer_id);
        self.last_frame.remove(&peer_id);
        self.relayed.remove(&peer_id);
        self.broken.remove(&peer_id);
        self.restarts.remove(&peer_id);
        if let Some(peer) = self.peers.remove(&peer_id) {
            tokio::spawn(async move {
                let _ = peer.close().await;
            });
        }
    }

    async fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::SignalOut(to, connection, signal) => {
                if !self
                    .peers
                    .get(&to)
                    .is_some_and(|current| Arc::ptr_eq(current, &connection))
                {
                    debug!(peer = %to, "signal of a replaced connection dropped");
                    return;
                }
                if let Signal::Offer(sdp) | Signal::Restart(sdp) = &signal {
                    self.offers.insert(to, offer_digest(sdp));
                }
                let payload = crate::proto::to_cbor(&signal);
                let signals = self.signals.clone();
                if signals.send((to, payload)).await.is_err() {
                    debug!("signalling channel closed");
                }
            }
            Internal::Failed(peer, error) => {
                self.warn(format!("media negotiation with {peer} failed: {error}"))
                    .await
            }
            Internal::Peer(peer, PeerEvent::State(state)) => {
                debug!(peer = %peer, %state, "media connection state");
                let now = Instant::now();
                // Any state change means the answer was taken (ICE runs).
                self.unanswered.remove(&peer);
                self.connected.insert(peer, state == "connected");
                let member = self.leaves.values().any(|p| *p == peer);
                match state.as_str() {
                    "connected" if self.broken.remove(&peer).is_some() => {
                        info!(peer = %peer, "media path repaired");
                    }
                    // The path broke: repaired in place by an ICE restart (repair_paths).
                    "disconnected" | "failed" if member => {
                        let relayed = self.relayed.contains(&peer);
                        let broken = self
                            .broken
                            .entry(peer)
                            .or_insert(BrokenPath::new(now, relayed));
                        // Failed: no point waiting for it to come back by itself.
                        if state == "failed"
                            && let Some(due) = now.checked_sub(RESTART_AFTER)
                        {
                            broken.since = broken.since.min(due);
                        }
                    }
                    // The connection itself is gone: start over with a new one.
                    "closed" if member => self.reconnect(peer).await,
                    _ => {}
                }
                let measured = match self.peers.get(&peer) {
                    Some(connection) if state == "connected" => {
                        connection.path(Instant::now()).await
                    }
                    _ => None,
                };
                let (path, rtt_ms) =
                    measured.map_or(("direct", None), |(path, rtt)| (path, Some(rtt)));
                if state == "connected" {
                    if path == "relayed" {
                        self.relayed.insert(peer);
                    } else {
                        self.relayed.remove(&peer);
                    }
                }
                let ice_restarts = self.restarts.get(&peer).copied().unwrap_or(0);
                self.report(MediaEvent::Connection {
                    peer_id: peer,
                    state,
                    path,
                    rtt_ms,
                    ice_restarts,
                });
            }
            Internal::Peer(
                from,
                PeerEvent::Frame {
                    seq,
                    timestamp,
                    payload,
                },
            ) => {
                let now = Instant::now();
                // A connection carries only its own member's frames: the KID must name the
                // leaf of the peer the connection belongs to (checked before the replay
                // window moves). Failures are counted by the opener and the frame dropped.
                let Some(expected) = self
                    .leaves
                    .iter()
                    .find(|(_, p)| **p == from)
                    .map(|(leaf, _)| *leaf)
                else {
                    return;
                };
                if let Ok(opened) = self.opener.open_from(now, &payload, expected) {
                    if !self.leaves.contains_key(&opened.sender) {
                        return;
                    }
                    self.last_frame.insert(from, now);
                    let receiver =
                        self.receivers
                            .entry(opened.sender)
                            .or_insert_with(|| Receiver {
                                jitter: JitterBuffer::new(JitterConfig::default()),
                                decoder: Decoder::new()
                                    .expect("a 48 kHz mono Opus decoder can always be created"),
                                level: -120.0,
                            });
                    receiver.jitter.push(now, seq, timestamp, opened.payload);
                    if receiver.jitter.stats().received == 1
                        && let Some(peer_id) = self.leaves.get(&opened.sender).copied()
                    {
                        self.report(MediaEvent::AudioStarted { peer_id });
                    }
                }
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let mut frame: Frame = [0; FRAME_SAMPLES];
        self.source.next_frame(&mut frame);
        if let Some(suppressor) = self.suppressor.as_mut() {
            suppressor.process(&mut frame);
        }
        if self.keyed && !self.muted {
            match self
                .encoder
                .encode(&frame)
                .map_err(|e| e.to_string())
                .and_then(|packet| self.sealer.seal(&packet).map_err(|e| e.to_string()))
            {
                Ok(sealed) => {
                    let targets: Vec<(PeerId, Arc<AudioPeer>)> = self
                        .peers
                        .iter()
                        .filter(|(peer_id, _)| {
                            self.connected.get(peer_id).copied().unwrap_or(false)
                        })
                        .map(|(peer_id, peer)| (*peer_id, Arc::clone(peer)))
                        .collect();
                    for (peer_id, peer) in targets {
                        if let Err(err) = peer.send(now, sealed.clone()).await {
                            debug!(peer = %peer_id, error = %err, "frame not sent");
                        }
                    }
                }
                Err(err) => debug!(error = %err, "frame not sealed"),
            }
        }
        let mut mixer = Mixer::default();
        for receiver in self.receivers.values_mut() {
            let mut pcm: Frame = [0; FRAME_SAMPLES];
            if let Ok(Some(_)) = receiver.decoder.play(receiver.jitter.pop(now), &mut pcm) {
                receiver.level = level_dbfs(&pcm);
                mixer.add(&pcm);
            }
        }
        let mixed = mixer.take();
        if let Err(err) = self.sink.write(&mixed) {
            warn!(error = %err, "audio output failed");
        }
    }

    async fn report_stats(&mut self) {
        let decrypt = self.opener.stats();
        let failures = decrypt.forged + decrypt.replayed + decrypt.unknown_key + decrypt.malformed;
        let mut reports = Vec::new();
        for (leaf, receiver) in &self.receivers {
            let Some(peer_id) = self.leaves.get(leaf) else {
                continue;
            };
            let stats = receiver.jitter.stats();
            reports.push(MediaEvent::Stats {
                peer_id: *peer_id,
                rx_frames: stats.played.saturating_sub(stats.lost + stats.underruns),
                lost_frames: stats.lost,
                recovered_frames: stats.recovered,
                decrypt_failures: failures,
                jitter_ms: receiver.jitter.jitter().as_secs_f64() * 1000.0,
                level_dbfs: receiver.level,
                rtt_ms: None,
            });
        }
        let now = Instant::now();
        for mut report in reports {
            if let MediaEvent::Stats {
                peer_id, rtt_ms, ..
            } = &mut report
                && let Some(connection) = self.peers.get(peer_id).cloned()
            {
                *rtt_ms = connection.path(now).await.map(|(_, rtt)| rtt);
            }
            self.report(report);
        }
    }

    /// Reports to the control plane without ever waiting (the audio path runs on this
    /// task): the driver drains these at once into its own outbox, so a full channel means
    /// it is stuck; the report is then dropped and counted.
    fn report(&mut self, event: MediaEvent) {
        if let Err(err) = self.events.try_send(event) {
            self.reports_dropped += 1;
            debug!(dropped = self.reports_dropped, error = %err, "media report dropped");
        }
    }

    async fn warn(&mut self, message: String) {
        warn!(%message, "media");
        self.report(MediaEvent::Warning(message));
    }
}

#[cfg(test)]
mod device_spec_tests {
    use super::device_name;
    use std::path::Path;

    #[test]
    fn output_specs_name_devices_or_files() {
        assert_eq!(device_name(Path::new("device")), Some(None));
        assert_eq!(
            device_name(Path::new("device:USB headset")),
            Some(Some("USB headset".to_owned()))
        );
        assert_eq!(device_name(Path::new("heard.wav")), None);
    }
}

#[cfg(test)]
mod repair_tests {
    use super::*;

    #[test]
    fn restarts_wait_for_the_path_then_retry_lost_offers_soon_and_answered_ones_late() {
        let t0 = Instant::now();
        let mut broken = BrokenPath::new(t0, true);
        assert!(
            !broken.restart_due(t0 + RESTART_AFTER / 2),
            "may come back by itself"
        );
        assert!(broken.restart_due(t0 + RESTART_AFTER));

        // An offer nobody answered (the signalling path was down too) goes again soon.
        let first = t0 + RESTART_AFTER;
        broken.last_attempt = Some((first, false));
        broken.attempts = 1;
        assert!(!broken.restart_due(first + RESTART_UNANSWERED_RETRY / 2));
        assert!(broken.restart_due(first + RESTART_UNANSWERED_RETRY));

        // An answered one gets longer than a relayed pair needs before it may be chosen.
        let second = first + RESTART_UNANSWERED_RETRY;
        broken.last_attempt = Some((second, false));
        broken.attempts = 2;
        broken.answered();
        broken.answered(); // counted once per offer
        assert_eq!(broken.answered, 1);
        assert!(RESTART_RETRY >= RELAY_ACCEPTANCE_MIN_WAIT + Duration::from_secs(2));
        assert!(!broken.restart_due(second + RELAY_ACCEPTANCE_MIN_WAIT + Duration::from_secs(1)));
        assert!(broken.restart_due(second + RESTART_RETRY));
    }

    #[test]
    fn a_direct_path_is_retried_sooner_once_then_with_the_relay_wait() {
        let t0 = Instant::now();
        let mut broken = BrokenPath::new(t0, false);
        let first = t0 + RESTART_AFTER;
        broken.last_attempt = Some((first, false));
        broken.answered();
        assert!(!broken.restart_due(first + RESTART_RETRY_DIRECT / 2));
        assert!(broken.restart_due(first + RESTART_RETRY_DIRECT));
        let second = first + RESTART_RETRY_DIRECT;
        broken.last_attempt = Some((second, false));
        broken.answered();
        assert!(!broken.restart_due(second + RESTART_RETRY_DIRECT));
        assert!(broken.restart_due(second + RESTART_RETRY));
    }
}
