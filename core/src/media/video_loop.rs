//! The video loop: once per frame interval, source → VP8 → SFrame → every connected peer,
//! for our camera and, while we share it, our screen (each at its own frame rate, sharing
//! the weakest path's rate: [`rate::split`]); and for every member's camera and screen,
//! packets → frame → open → decode → measure (and `--video-out`).
//!
//! It runs on its own OS thread, not on the async runtime: encoding and decoding take
//! milliseconds of CPU per frame (more at higher resolutions), which must delay neither the
//! audio clock nor the network tasks. It waits only on its own inbox (packets from the
//! connections' forwarders, with a time-out at the next capture), and otherwise touches
//! bounded queues with `try_send`/`try_recv`. Like the audio clock, it owns its media keys
//! (a video [`Sealer`](super::crypto::sframe::Sealer) inside [`VideoSender`], and its own
//! [`Opener`]); they reach it through its command queue.
//!
//! ```text
//!  actor ──VideoCommand (lossless)──▶ video loop ──OutboundVideo (lossy, per connection)──▶ video sender task ─▶ MediaPeer
//!  peer forwarders ──VideoInbound (lossy)──▶ video loop ──ClockReport (lossy)──▶ actor
//! ```
// The real-time edge: the loop reads the time it runs at.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::clock::ClockReport;
use super::crypto::keyring::Opener;
use super::transport::estimate::SendEstimate;
use super::video::cpu::CpuGuard;
use super::video::display::{Owner, VideoDisplay};
use super::video::monitor::{ReceiveStages, SendMonitor};
use super::video::rate::{self, RateControl};
use super::video::receiver::{Received, VideoReceiver};
use super::video::rtp::FrameInfo;
use super::video::screen::{self, ScreenSpec};
use super::video::sender::VideoSender;
use super::video::sink::VideoFileSink;
use super::video::{VIDEO_GONE_AFTER, VideoKind};
use super::{EpochSecret, MediaEvent, STATS_INTERVAL, VideoStats};
use crate::group::media_keys::sender_base_key;

/// Capacity of the video loop's inbox (packets from every connection): about a second of
/// 360p video from ten members. Lossy: a packet that finds it full is dropped (counted by
/// its forwarder); the frame it belonged to is lost and a keyframe asked for.
pub(crate) const VIDEO_INBOUND_CAPACITY: usize = 4096;
/// Capacity of a connection's video send queue, in frames (about a quarter second). Lossy:
/// a frame that finds it full is dropped and counted; that receiver asks for a keyframe.
pub(crate) const VIDEO_OUTBOUND_CAPACITY: usize = 8;
/// Capacity of the video command queue (actor → video loop). Lossless: the actor waits.
pub(crate) const VIDEO_COMMAND_CAPACITY: usize = 64;
/// Longest the loop sleeps without looking at its commands and the cancellation.
const LONGEST_WAIT: Duration = Duration::from_millis(50);
/// How often at most the loop tells the actor that a member's video arrives.
const HEARD_EVERY: Duration = Duration::from_millis(100);

/// What the connections hand the video loop.
#[derive(Debug)]
pub(crate) enum VideoInbound {
    /// A video packet from `peer`'s connection, stamped with its arrival.
    Packet {
        peer: PeerId,
        /// The connection it came on (numbered in order of creation): a member's video
        /// moves to its newest connection, starting there with a keyframe.
        conn: u64,
        kind: VideoKind,
        at: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
    },
    /// `peer` asked for a keyframe of this video of ours.
    KeyframeRequested(PeerId, VideoKind),
    /// A command is waiting (sent by the actor after each command, so the loop does not
    /// sleep on it).
    Wake,
}

/// A sealed video frame to send on one connection.
#[derive(Debug)]
pub(crate) struct OutboundVideo {
    /// Which of our videos it belongs to (the track it goes on).
    pub(crate) kind: VideoKind,
    /// When it was captured.
    pub(crate) at: Instant,
    pub(crate) sealed: Vec<u8>,
    /// Until the next frame (the RTP timestamp advances by it).
    pub(crate) duration: Duration,
    /// Sent outside the seal, in every packet of the frame.
    pub(crate) info: FrameInfo,
}

/// What the actor tells the video loop.
#[derive(Debug)]
pub(crate) enum VideoCommand {
    /// An epoch's keys and its members (leaf, peer), us excluded.
    Keys {
        epoch: u64,
        secret: EpochSecret,
        own_leaf: u32,
        members: Vec<(u32, PeerId)>,
    },
    /// Forget what was received from this member.
    Forget(PeerId),
    /// Forget every key and receiver.
    Reset,
    /// Send our video to this member through `frames`, or (`None`) stop.
    Route {
        peer: PeerId,
        frames: Option<mpsc::Sender<OutboundVideo>>,
    },
    /// Turn our camera on or off.
    Camera(bool),
    /// Share this screen (replacing one shared before), or (`None`) stop sharing.
    Share(Option<ScreenSpec>),
    /// This member wants our video, or (its "no incoming video" mode) does not.
    Wanted { peer: PeerId, wanted: bool },
    /// This member sends its camera, its screen, or not: a video it stopped ends now.
    PeerSending {
        peer: PeerId,
        camera: bool,
        screen: bool,
    },
    /// The latest round-trip time to this member (how long its video may wait for a
    /// retransmission) and how fast we may send to it (what our encoder aims at), where
    /// known.
    Path {
        peer: PeerId,
        rtt: Option<Duration>,
        send: Option<SendEstimate>,
    },
}

/// The NACK interval of the transport's interceptor (webrtc-rs: 100 ms).
const NACK_INTERVAL: Duration = Duration::from_millis(100);
/// Least and most time a received frame waits for a retransmission before it: the upper
/// bound keeps a repaired loss under the 500 ms that counts as a freeze.
const REPAIR_WAIT_RANGE: (Duration, Duration) =
    (Duration::from_millis(150), Duration::from_millis(450));

/// How long a frame from a member `rtt` away waits for a missing packet: a round trip after
/// the last NACK (a packet is asked for three times, 100 ms apart:
/// `transport::peer::MAX_NACKS_PER_PACKET`, so lost retransmissions are still repaired),
/// and a little for jitter; at most 450 ms.
fn repair_wait(rtt: Duration) -> Duration {
    (rtt + 3 * NACK_INTERVAL + Duration::from_millis(50))
        .clamp(REPAIR_WAIT_RANGE.0, REPAIR_WAIT_RANGE.1)
}

/// One member's video (camera or screen) as we receive it, and where it goes.
#[derive(Debug)]
struct Incoming {
    peer: PeerId,
    receiver: VideoReceiver,
    sink: Option<VideoFileSink>,
    started: bool,
    /// When the last frame of it opened.
    last_opened: Instant,
}

/// One of our videos: its sender, what it sent, and when its next picture is due.
#[derive(Debug)]
struct Own {
    sender: VideoSender,
    sent: SendMonitor,
    /// Whether this machine keeps up with the size sent.
    cpu: CpuGuard,
    next_capture: Instant,
}

impl Own {
    fn new(sender: VideoSender, now: Instant) -> Self {
        Self {
            sender,
            sent: SendMonitor::new(now),
            cpu: CpuGuard::new(now),
            next_capture: now,
        }
    }
}

/// Which of our camera's layers a receiver gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PeerLayer {
    /// On the low layer (else the main one).
    low: bool,
    /// Moving to the low layer (`Some(true)`) or to the main one, at its next keyframe.
    moving: Option<bool>,
}

/// The sending key of the current epoch, kept to key a screen share started mid-epoch.
struct SendingKey {
    epoch: u64,
    own_leaf: u32,
    base: zeroize::Zeroizing<[u8; 32]>,
}

/// Our video and everyone else's.
pub(crate) struct VideoLoop {
    camera: Option<Own>,
    screen: Option<Own>,
    key: Option<SendingKey>,
    opener: Opener,
    leaves: BTreeMap<u32, PeerId>,
    receivers: HashMap<(u32, VideoKind), Incoming>,
    routes: HashMap<PeerId, mpsc::Sender<OutboundVideo>>,
    /// Members that asked for none of our video (their "no incoming video" mode): they
    /// get none, and their paths do not limit our rate.
    unwanted: HashSet<PeerId>,
    /// `--video-out`: where received video is written.
    out_dir: Option<PathBuf>,
    /// A window's pictures of every video, if a window shows them.
    display: Option<VideoDisplay>,
    heard: HashMap<PeerId, Instant>,
    /// The latest round-trip time to each member.
    rtts: HashMap<PeerId, Duration>,
    /// What our encoders aim at, together (the weakest path decides).
    rate: RateControl,
    /// What each path allows, for giving each receiver of our camera the layer its path
    /// carries (simulcast).
    peer_rates: HashMap<PeerId, RateControl>,
    /// The receivers of our camera's low layer, and where each is moving (switched at the
    /// next keyframe of the layer it moves to).
    camera_layers: HashMap<PeerId, PeerLayer>,
    /// The camera's layer rates last set (main, low).
    camera_rates: Option<(u32, Option<u32>)>,
    /// The rate is to be shared out again (a video started or stopped).
    resplit: bool,
    /// Events for the actor that came up where no report queue was at hand.
    pending: Vec<MediaEvent>,
    reports_dropped: u64,
}

impl std::fmt::Debug for VideoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoLoop")
            .field("camera", &self.camera)
            .field("screen", &self.screen)
            .field("receivers", &self.receivers.len())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// The queues the video loop reads and writes.
#[derive(Debug)]
pub(crate) struct VideoQueues {
    pub(crate) commands: mpsc::Receiver<VideoCommand>,
    pub(crate) inbound: std_mpsc::Receiver<VideoInbound>,
    pub(crate) reports: mpsc::Sender<ClockReport>,
}

/// The routes that carry our video: all but those of members that want none. (A free
/// function, so that a loop over them can change the loop's other fields.)
fn video_routes<'a>(
    routes: &'a HashMap<PeerId, mpsc::Sender<OutboundVideo>>,
    unwanted: &'a HashSet<PeerId>,
) -> impl Iterator<Item = (&'a PeerId, &'a mpsc::Sender<OutboundVideo>)> {
    routes.iter().filter(|(peer, _)| !unwanted.contains(*peer))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl VideoLoop {
    /// A loop that sends `sender`'s video (if any) as our camera and writes what it
    /// receives to `out_dir` (if any).
    pub(crate) fn new(sender: Option<VideoSender>, out_dir: Option<PathBuf>) -> Self {
        let rate = RateControl::new(sender.as_ref().map_or(0, VideoSender::full_rate_kbps));
        let now = Instant::now();
        Self {
            camera: sender.map(|sender| Own::new(sender, now)),
            screen: None,
            key: None,
            opener: Opener::default(),
            leaves: BTreeMap::new(),
            receivers: HashMap::new(),
            routes: HashMap::new(),
            unwanted: HashSet::new(),
            out_dir,
            display: None,
            heard: HashMap::new(),
            rtts: HashMap::new(),
            rate,
            peer_rates: HashMap::new(),
            camera_layers: HashMap::new(),
            camera_rates: None,
            resplit: false,
            pending: Vec::new(),
            reports_dropped: 0,
        }
    }

    /// Puts the pictures of every video (our self-view included) on `display`.
    pub(crate) fn with_display(mut self, display: Option<VideoDisplay>) -> Self {
        self.display = display;
        self
    }

    /// Drops the receivers `keep` refuses; the window hears that their videos ended.
    fn drop_receivers(&mut self, mut keep: impl FnMut(&(u32, VideoKind), &Incoming) -> bool) {
        let display = self.display.as_ref();
        self.receivers.retain(|key, incoming| {
            let kept = keep(key, incoming);
            if !kept && let Some(display) = display {
                display.end((Owner::Member(incoming.peer), key.1));
            }
            kept
        });
    }

    fn own(&self, kind: VideoKind) -> Option<&Own> {
        match kind {
            VideoKind::Camera => self.camera.as_ref(),
            VideoKind::Screen => self.screen.as_ref(),
        }
    }

    fn own_mut(&mut self, kind: VideoKind) -> Option<&mut Own> {
        match kind {
            VideoKind::Camera => self.camera.as_mut(),
            VideoKind::Screen => self.screen.as_mut(),
        }
    }

    /// Runs the loop on its own thread until `cancel` fires or the actor drops the command
    /// queue; `--video-out` files are complete when the thread ends.
    pub(crate) fn spawn(
        self,
        queues: VideoQueues,
        cancel: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("conclave-video".into())
            .spawn(move || self.run(queues, cancel))
    }

    fn run(mut self, mut queues: VideoQueues, cancel: CancellationToken) {
        let start = Instant::now();
        let mut next_report = start + STATS_INTERVAL;
        while !cancel.is_cancelled() {
            loop {
                match queues.commands.try_recv() {
                    Ok(command) => self.on_command(Instant::now(), command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.finish(),
                }
            }
            let now = Instant::now();
            for kind in VideoKind::ALL {
                let Some(due) = self.own(kind).map(|own| own.next_capture) else {
                    continue;
                };
                if now < due {
                    continue;
                }
                let interval = self.capture(kind, now);
                if let Some(own) = self.own_mut(kind) {
                    own.next_capture = due + interval;
                    if own.next_capture + interval < now {
                        // Behind by more than a whole frame (a slow encoder): start again
                        // from now rather than burst. Less than that (a snapshot written,
                        // several frames decoded at once) is caught up with the next one.
                        own.next_capture = now;
                    }
                }
            }
            if now >= next_report {
                self.report_stats(now, &queues.reports);
                next_report = now + STATS_INTERVAL;
            }
            for event in std::mem::take(&mut self.pending) {
                self.report(&queues.reports, ClockReport::Event(event));
            }
            let next_capture = VideoKind::ALL
                .iter()
                .filter_map(|kind| self.own(*kind).map(|own| own.next_capture))
                .min()
                .unwrap_or(next_report);
            let wait = next_capture
                .min(next_report)
                .saturating_duration_since(Instant::now())
                .min(LONGEST_WAIT);
            match queues.inbound.recv_timeout(wait) {
                Ok(first) => {
                    self.on_inbound(first, &queues.reports);
                    while let Ok(more) = queues.inbound.try_recv() {
                        self.on_inbound(more, &queues.reports);
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.poll_receivers(&queues.reports);
        }
        self.finish();
    }

    fn on_command(&mut self, now: Instant, command: VideoCommand) {
        match command {
            VideoCommand::Keys {
                epoch,
                secret,
                own_leaf,
                members,
            } => {
                let key = SendingKey {
                    epoch,
                    own_leaf,
                    base: sender_base_key(&secret.0, own_leaf),
                };
                for own in [self.camera.as_mut(), self.screen.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    if let Err(err) = own.sender.install(epoch, own_leaf, &key.base) {
                        warn!(error = %err, "cannot install the video sending key");
                    }
                }
                self.key = Some(key);
                self.opener.install(now, epoch, secret.0);
                self.leaves = members.into_iter().collect();
                let leaves = std::mem::take(&mut self.leaves);
                self.drop_receivers(|(leaf, _), _| leaves.contains_key(leaf));
                self.unwanted
                    .retain(|peer| leaves.values().any(|member| member == peer));
                self.leaves = leaves;
            }
            VideoCommand::Forget(peer) => {
                self.forget_path(&peer);
                self.drop_receivers(|_, incoming| incoming.peer != peer);
                self.heard.remove(&peer);
            }
            VideoCommand::Reset => {
                self.drop_receivers(|_, _| false);
                self.leaves.clear();
                self.heard.clear();
                self.key = None;
                for own in [self.camera.as_mut(), self.screen.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    own.sender.reset();
                }
                self.opener.reset();
            }
            VideoCommand::Route { peer, frames } => match frames {
                Some(frames) => {
                    self.routes.insert(peer, frames);
                    // A new connection has no earlier picture.
                    self.start_receiver(now, peer);
                }
                None => {
                    self.routes.remove(&peer);
                    self.forget_path(&peer);
                }
            },
            VideoCommand::Path { peer, rtt, send } => {
                if let Some(rtt) = rtt {
                    self.rtts.insert(peer, rtt);
                    for incoming in self.receivers.values_mut().filter(|i| i.peer == peer) {
                        incoming.receiver.set_repair_wait(repair_wait(rtt));
                    }
                }
                if let Some(send) = send
                    && self.routes.contains_key(&peer)
                    && !self.unwanted.contains(&peer)
                {
                    self.rate.estimate(peer, send.bps, send.limited_by_use);
                    let ceiling = self
                        .camera
                        .as_ref()
                        .map_or(0, |own| own.sender.full_rate_kbps());
                    self.peer_rates
                        .entry(peer)
                        .or_insert_with(|| RateControl::new(ceiling))
                        .estimate(peer, send.bps, send.limited_by_use);
                }
            }
            VideoCommand::Camera(on) => {
                if let Some(camera) = self.camera.as_mut() {
                    info!(on, "camera");
                    camera.sender.set_on(on);
                    self.resplit = true;
                    if !on && let Some(display) = &self.display {
                        display.end((Owner::Me, VideoKind::Camera));
                    }
                }
            }
            VideoCommand::Wanted { peer, wanted } => self.set_wanted(now, peer, wanted),
            VideoCommand::PeerSending {
                peer,
                camera,
                screen,
            } => {
                for (kind, on) in [(VideoKind::Camera, camera), (VideoKind::Screen, screen)] {
                    let showing = self.receivers.iter().any(|((_, k), incoming)| {
                        *k == kind && incoming.peer == peer && incoming.started
                    });
                    if !on && showing {
                        self.drop_receivers(|(_, k), incoming| *k != kind || incoming.peer != peer);
                        self.pending.push(MediaEvent::VideoStopped {
                            peer_id: peer,
                            kind,
                        });
                    }
                }
            }
            VideoCommand::Share(Some(spec)) => self.start_sharing(now, spec),
            VideoCommand::Share(None) => self.stop_sharing(None),
        }
    }

    /// Opens monitor `spec` and sends it from the next picture on (a keyframe first);
    /// a screen that cannot be opened is reported in one sentence.
    fn start_sharing(&mut self, now: Instant, spec: ScreenSpec) {
        let sender = screen::open(spec)
            .map_err(|err| err.to_string())
            .and_then(|source| {
                VideoSender::of_kind(VideoKind::Screen, source).map_err(|err| err.to_string())
            });
        let mut sender = match sender {
            Ok(sender) => sender,
            Err(reason) => {
                warn!(%reason, "screen not shared");
                self.pending.push(MediaEvent::ScreenShareStopped {
                    error: Some(reason),
                });
                return;
            }
        };
        if let Some(key) = &self.key
            && let Err(err) = sender.install(key.epoch, key.own_leaf, &key.base)
        {
            warn!(error = %err, "cannot install the screen's sending key");
        }
        let (width, height) = sender.size();
        info!(monitor = spec.monitor, width, height, "sharing our screen");
        self.pending.push(MediaEvent::ScreenShared {
            monitor: spec.monitor,
            width,
            height,
        });
        self.screen = Some(Own::new(sender, now));
        self.rate.set_ceiling(self.full_rate_kbps());
        self.resplit = true;
    }

    /// Stops sharing our screen (`error`: because it failed).
    fn stop_sharing(&mut self, error: Option<String>) {
        if self.screen.take().is_none() {
            return;
        }
        info!(?error, "screen sharing stopped");
        self.pending.push(MediaEvent::ScreenShareStopped { error });
        self.rate.set_ceiling(self.full_rate_kbps());
        self.resplit = true;
    }

    /// The most our videos use together, at full quality.
    fn full_rate_kbps(&self) -> u32 {
        [self.camera.as_ref(), self.screen.as_ref()]
            .into_iter()
            .flatten()
            .map(|own| own.sender.full_rate_kbps())
            .sum()
    }

    /// Shares what the paths allow out between our videos, when it changed; while our
    /// camera is the only video sent to several members, gives each the layer its own path
    /// carries ([`VideoLoop::simulcast`]).
    fn apply_rate(&mut self, now: Instant) {
        let changed = self.rate.update(now).is_some();
        for rate in self.peer_rates.values_mut() {
            rate.update(now);
        }
        let simulcast = self.screen.is_none()
            && self.video_routes().count() >= 2
            && self.camera.as_ref().is_some_and(|own| own.sender.is_on());
        if simulcast {
            self.resplit = false;
            self.simulcast(now);
            return;
        }
        if self.camera_rates.take().is_some() {
            // Back to one layer for everyone.
            if let Some(own) = self.camera.as_mut()
                && let Err(err) = own.sender.set_low_layer(None)
            {
                warn!(error = %err, "low video layer not stopped");
            }
            for layer in self.camera_layers.values_mut() {
                if layer.low {
                    layer.moving = Some(false);
                }
            }
            if let Some(own) = self.camera.as_mut() {
                own.sender.request_keyframe(now);
            }
        }
        if !changed && !std::mem::take(&mut self.resplit) {
            return;
        }
        let camera_full = self
            .camera
            .as_ref()
            .filter(|own| own.sender.is_on())
            .map(|own| own.sender.full_rate_kbps());
        let screen_full = self.screen.as_ref().map(|own| own.sender.full_rate_kbps());
        let (camera_kbps, screen_kbps) =
            rate::split(self.rate.target_kbps(), camera_full, screen_full);
        for (own, kbps) in [
            (self.camera.as_mut(), camera_kbps),
            (self.screen.as_mut(), screen_kbps),
        ] {
            if let (Some(own), Some(kbps)) = (own, kbps)
                && let Err(err) = own.sender.set_bitrate_kbps(kbps)
            {
                warn!(error = %err, kbps, "video bitrate not changed");
            }
        }
    }

    /// Simulcast of our camera: each receiver's path affords a layer; the main layer goes
    /// to those whose path affords the largest, at the rate the weakest of them allows, and
    /// a low layer (encoded only while someone needs it) to the others, at the rate the
    /// weakest path allows. A receiver changes layer at the next keyframe of the one it
    /// moves to (asked for at once).
    fn simulcast(&mut self, now: Instant) {
        let Some(own) = self.camera.as_mut() else {
            return;
        };
        let main_factor = own.sender.main_factor();
        let low_factor = own.sender.low_factor();
        let ceiling = own.sender.full_rate_kbps();
        let mut affords: Vec<(PeerId, u32, u32)> = Vec::new();
        for (peer, _) in video_routes(&self.routes, &self.unwanted) {
            let kbps = self
                .peer_rates
                .get(peer)
                .map_or(ceiling, RateControl::target_kbps);
            let layer = self.camera_layers.entry(*peer).or_default();
            let current = match (layer.low, low_factor) {
                (true, Some(low)) => low,
                _ => main_factor,
            };
            affords.push((*peer, kbps, own.sender.layer_of(kbps, current)));
        }
        let Some(best) = affords.iter().map(|(_, _, factor)| *factor).min() else {
            return;
        };
        let main_kbps = affords
            .iter()
            .filter(|(_, _, factor)| *factor == best)
            .map(|(_, kbps, _)| *kbps)
            .min()
            .unwrap_or(ceiling);
        let low_kbps = affords
            .iter()
            .filter(|(_, _, factor)| *factor != best)
            .map(|(_, kbps, _)| *kbps)
            .min();
        if self.camera_rates != Some((main_kbps, low_kbps)) {
            self.camera_rates = Some((main_kbps, low_kbps));
            if let Err(err) = own.sender.set_bitrate_kbps(main_kbps) {
                warn!(error = %err, main_kbps, "video bitrate not changed");
            }
            if let Err(err) = own.sender.set_low_layer(low_kbps) {
                warn!(error = %err, ?low_kbps, "low video layer not changed");
            }
        }
        let low_on = own.sender.low_factor().is_some();
        for (peer, _, factor) in affords {
            let wants_low = low_on && factor != best;
            let Some(layer) = self.camera_layers.get_mut(&peer) else {
                continue;
            };
            let target = layer.moving.unwrap_or(layer.low);
            if wants_low != target {
                debug!(peer = %peer, low = wants_low, "receiver changes video layer");
                layer.moving = (wants_low != layer.low).then_some(wants_low);
                if wants_low {
                    own.sender.request_low_keyframe(now);
                } else {
                    own.sender.request_keyframe(now);
                }
            }
        }
    }

    /// Forgets what we knew of the path to `peer` (its estimate, its rate, its layer).
    /// `peer` wants our video again (it starts with a keyframe), or no longer (its path
    /// no longer limits our rate).
    fn set_wanted(&mut self, now: Instant, peer: PeerId, wanted: bool) {
        info!(peer = %peer, wanted, "member's wish for our video");
        if wanted {
            if self.unwanted.remove(&peer) {
                self.start_receiver(now, peer);
            }
        } else if self.unwanted.insert(peer) {
            self.forget_path(&peer);
        }
        self.resplit = true;
    }

    /// `peer` starts receiving our video afresh (a new connection, or video wanted again):
    /// on the main layer, from a keyframe of each of our videos.
    fn start_receiver(&mut self, now: Instant, peer: PeerId) {
        self.camera_layers.insert(peer, PeerLayer::default());
        for own in [self.camera.as_mut(), self.screen.as_mut()]
            .into_iter()
            .flatten()
        {
            own.sender.request_keyframe(now);
        }
    }

    /// The connections that carry our video: every route but those of members that want
    /// none.
    fn video_routes(&self) -> impl Iterator<Item = (&PeerId, &mpsc::Sender<OutboundVideo>)> {
        video_routes(&self.routes, &self.unwanted)
    }

    fn forget_path(&mut self, peer: &PeerId) {
        self.rate.forget(peer);
        self.peer_rates.remove(peer);
        self.camera_layers.remove(peer);
    }

    fn leaf_of(&self, peer: &PeerId) -> Option<u32> {
        self.leaves
            .iter()
            .find(|(_, p)| *p == peer)
            .map(|(leaf, _)| *leaf)
    }

    /// Captures, encodes and seals one frame of our `kind` of video and queues it for
    /// every routed connection; returns the time until the next one.
    fn capture(&mut self, kind: VideoKind, now: Instant) -> Duration {
        self.apply_rate(now);
        // Layers nobody receives are not encoded.
        let received = self.video_routes().next().is_some();
        let Some(own) = self.own_mut(kind) else {
            return STATS_INTERVAL;
        };
        let interval = own.sender.frame_interval();
        let captured = if received {
            own.sender.capture_layers(now, unix_ms())
        } else {
            own.sender.capture_unsent(unix_ms())
        };
        // Capturing and encoding took this, whether a frame came out or the encoder dropped
        // the picture to hold its rate.
        let busy = now.elapsed();
        if own.sender.is_on()
            && let Some(min_factor) = own.cpu.frame(now + busy, busy, interval)
            && let Err(err) = own.sender.set_min_factor(min_factor)
        {
            warn!(error = %err, min_factor, "video size not changed");
        }
        let mut layers = match captured {
            Ok(layers) => layers,
            Err(err) if kind == VideoKind::Screen => {
                self.stop_sharing(Some(err.to_string()));
                return interval;
            }
            Err(err) => {
                warn!(error = %err, "video frame not sent");
                return interval;
            }
        };
        if let Some(frame) = &layers.main {
            own.sent
                .sent(own.sender.size(), frame.sealed.len(), frame.keyframe, busy);
        }
        if let (VideoKind::Camera, Some(display), Some(picture)) =
            (kind, &self.display, layers.picture.take())
            && display.wants((Owner::Me, kind))
        {
            display.show((Owner::Me, kind), &picture);
        }
        let mut closed = Vec::new();
        let mut not_sent = 0;
        for (peer, frames) in video_routes(&self.routes, &self.unwanted) {
            let layer = match kind {
                VideoKind::Camera => self.camera_layers.get_mut(peer),
                VideoKind::Screen => None,
            };
            let frame = match layer {
                None => layers.main.as_ref(),
                Some(layer) => {
                    // A receiver moving to another layer switches at its keyframe.
                    let target = layer.moving.unwrap_or(layer.low);
                    let arrived = if target { &layers.low } else { &layers.main };
                    if layer.moving.is_some() && arrived.as_ref().is_some_and(|f| f.keyframe) {
                        layer.low = target;
                        layer.moving = None;
                    }
                    if layer.low {
                        layers.low.as_ref()
                    } else {
                        layers.main.as_ref()
                    }
                }
            };
            let Some(frame) = frame else {
                continue;
            };
            let outbound = OutboundVideo {
                kind,
                at: now,
                sealed: frame.sealed.clone(),
                duration: interval,
                info: frame.info,
            };
            match frames.try_send(outbound) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    not_sent += 1;
                    debug!(peer = %peer, ?kind, "video send queue full; frame dropped");
                }
                Err(TrySendError::Closed(_)) => closed.push(*peer),
            }
        }
        if let Some(own) = self.own_mut(kind) {
            for _ in 0..not_sent {
                own.sent.not_sent();
            }
        }
        for peer in closed {
            self.routes.remove(&peer);
            self.forget_path(&peer);
        }
        interval
    }

    fn on_inbound(&mut self, inbound: VideoInbound, reports: &mpsc::Sender<ClockReport>) {
        match inbound {
            VideoInbound::Packet {
                peer,
                conn,
                kind,
                at,
                seq,
                timestamp,
                marker,
                payload,
            } => self.on_packet(
                (peer, kind),
                conn,
                at,
                (seq, timestamp, marker, &payload),
                reports,
            ),
            VideoInbound::KeyframeRequested(peer, kind) => {
                let on_low = kind == VideoKind::Camera
                    && self.camera_layers.get(&peer).is_some_and(|layer| layer.low);
                let rtt = self.rtts.get(&peer).copied().unwrap_or_default();
                if let Some(own) = self.own_mut(kind) {
                    debug!(peer = %peer, ?kind, on_low, "keyframe requested");
                    own.sender
                        .request_keyframe_after_loss(Instant::now(), rtt, on_low);
                }
            }
            VideoInbound::Wake => {}
        }
    }

    /// A connection carries only its own member's video: the KID must name the leaf of the
    /// peer the connection belongs to (the opener checks it).
    fn on_packet(
        &mut self,
        (peer, kind): (PeerId, VideoKind),
        conn: u64,
        at: Instant,
        packet: (u16, u32, bool, &[u8]),
        reports: &mpsc::Sender<ClockReport>,
    ) {
        let Some(leaf) = self.leaf_of(&peer) else {
            return;
        };
        let incoming = match self.receivers.entry((leaf, kind)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                match VideoReceiver::for_kind(at, kind) {
                    Ok(mut receiver) => {
                        if let Some(rtt) = self.rtts.get(&peer) {
                            receiver.set_repair_wait(repair_wait(*rtt));
                        }
                        entry.insert(Incoming {
                            peer,
                            receiver,
                            sink: None,
                            started: false,
                            last_opened: at,
                        })
                    }
                    Err(err) => {
                        warn!(error = %err, "no video decoder");
                        return;
                    }
                }
            }
        };
        if !incoming.receiver.from_connection(conn) {
            return;
        }
        let shown_ms = unix_ms();
        let decoding = Instant::now();
        let received = incoming
            .receiver
            .push(at, shown_ms, &mut self.opener, leaf, packet);
        self.take((leaf, kind), at, shown_ms, (decoding, received), reports);
    }

    /// Lets out the frames whose wait for a repair ran out.
    fn poll_receivers(&mut self, reports: &mpsc::Sender<ClockReport>) {
        let now = Instant::now();
        let shown_ms = unix_ms();
        let keys: Vec<(u32, VideoKind)> = self.receivers.keys().copied().collect();
        for key in keys {
            let Some(incoming) = self.receivers.get_mut(&key) else {
                continue;
            };
            if now.saturating_duration_since(incoming.last_opened) >= VIDEO_GONE_AFTER {
                let (peer, started) = (incoming.peer, incoming.started);
                self.drop_receivers(|k, _| *k != key);
                debug!(peer = %peer, kind = key.1.as_str(), "video gone quiet: no longer sent");
                // A receiver that never showed a picture (late packets of a video that
                // had ended) ends silently.
                if started {
                    self.report(
                        reports,
                        ClockReport::Event(MediaEvent::VideoStopped {
                            peer_id: peer,
                            kind: key.1,
                        }),
                    );
                }
                continue;
            }
            let decoding = Instant::now();
            let received = incoming
                .receiver
                .poll(now, shown_ms, &mut self.opener, key.0);
            if received.pictures.is_empty() && !received.want_keyframe && !received.opened {
                continue;
            }
            self.take(key, now, shown_ms, (decoding, received), reports);
        }
    }

    /// Shows (and writes) what the receiver of `leaf` decoded since `decoding` (when the
    /// packet or poll that let it out was handed over), and reports what it needs.
    fn take(
        &mut self,
        (leaf, kind): (u32, VideoKind),
        at: Instant,
        shown_ms: u64,
        (decoding, received): (Instant, Received),
        reports: &mpsc::Sender<ClockReport>,
    ) {
        let Some(incoming) = self.receivers.get_mut(&(leaf, kind)) else {
            return;
        };
        let peer = incoming.peer;
        if received.opened {
            incoming.last_opened = at;
        }
        let mut out = Vec::new();
        if received.want_keyframe {
            out.push(ClockReport::KeyframeWanted { peer, kind });
        }
        // Opening and decoding took from `decoding` to now, shared by the pictures out.
        let decode = decoding.elapsed() / received.pictures.len().max(1) as u32;
        let last = received.pictures.len().saturating_sub(1);
        for (n, picture) in received.pictures.into_iter().enumerate() {
            incoming.receiver.staged(ReceiveStages {
                assembly: picture
                    .arrival
                    .last
                    .saturating_duration_since(picture.arrival.first),
                waiting: decoding.saturating_duration_since(picture.arrival.last),
                decode,
            });
            let (picture, shown) = (picture.image, picture.shown);
            if !incoming.started {
                incoming.started = true;
                out.push(ClockReport::Event(MediaEvent::VideoStarted {
                    peer_id: peer,
                    kind,
                    width: picture.width(),
                    height: picture.height(),
                }));
                if let Some(dir) = &self.out_dir {
                    let name = match kind {
                        VideoKind::Camera => peer.to_string(),
                        VideoKind::Screen => format!("{peer}-screen"),
                    };
                    match VideoFileSink::create(dir, &name) {
                        Ok(sink) => incoming.sink = Some(sink),
                        Err(err) => {
                            warn!(dir = %dir.display(), error = %err, "cannot write received video")
                        }
                    }
                }
            }
            if let Some(sink) = incoming.sink.as_mut() {
                sink.write(at, shown_ms, &picture, shown);
            }
            let id = (Owner::Member(peer), kind);
            if let Some(display) = self.display.as_ref().filter(|d| n == last && d.wants(id)) {
                display.show(id, &picture);
            }
        }
        if received.opened {
            let due = self
                .heard
                .get(&peer)
                .is_none_or(|last| at.saturating_duration_since(*last) >= HEARD_EVERY);
            if due {
                self.heard.insert(peer, at);
                out.push(ClockReport::Heard { peer, at });
            }
        }
        for report in out {
            self.report(reports, report);
        }
    }

    fn report_stats(&mut self, now: Instant, reports: &mpsc::Sender<ClockReport>) {
        let mut events = Vec::new();
        for ((_, kind), incoming) in &mut self.receivers {
            let period = incoming.receiver.report(now);
            let counts = incoming.receiver.counts();
            incoming.sink.as_mut().map(VideoFileSink::flush);
            events.push(MediaEvent::Video(VideoStats {
                peer_id: incoming.peer,
                kind: *kind,
                report: period,
                counts,
            }));
        }
        for (kind, own) in [
            (VideoKind::Camera, self.camera.as_mut()),
            (VideoKind::Screen, self.screen.as_mut()),
        ] {
            let Some(own) = own else { continue };
            let mut period = own.sent.report(now, own.sender.bitrate_kbps());
            period.kind = kind;
            period.cpu_limited = own.cpu.is_limiting();
            debug!(sent = ?own.sender.stats(), ?kind, "video sent");
            if own.sender.is_on() {
                events.push(MediaEvent::VideoSent(period));
            }
        }
        for event in events {
            self.report(reports, ClockReport::Event(event));
        }
    }

    fn report(&mut self, reports: &mpsc::Sender<ClockReport>, report: ClockReport) {
        if let Err(err) = reports.try_send(report) {
            self.reports_dropped += 1;
            debug!(dropped = self.reports_dropped, error = %err, "video report dropped");
        }
    }

    fn finish(&mut self) {
        for incoming in self.receivers.values_mut() {
            incoming.sink.as_mut().map(VideoFileSink::flush);
        }
        debug!(
            camera = ?self.camera.as_ref().map(|own| own.sender.stats()),
            screen = ?self.screen.as_ref().map(|own| own.sender.stats()),
            reports_dropped = self.reports_dropped,
            "video loop stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::video::source::StampedTestSource;
    use crate::test_clock::t0;

    /// Five connected members: each frame is encoded and sealed once, and the same sealed
    /// frame goes to all five.
    #[test]
    fn each_frame_is_encoded_once_whatever_the_number_of_receivers() {
        let sender = VideoSender::new(Box::new(StampedTestSource::new(320, 180).unwrap())).unwrap();
        let mut video = VideoLoop::new(Some(sender), None);
        let members: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let mut queues: Vec<mpsc::Receiver<OutboundVideo>> = keyed_and_routed(&mut video, &members)
            .into_values()
            .collect();
        for n in 0..3u64 {
            video.capture(VideoKind::Camera, t0() + Duration::from_millis(33 * n));
        }
        let sent = video.camera.as_ref().unwrap().sender.stats();
        assert_eq!(sent.frames, 3, "three pictures, three encodings");
        let mut received: Vec<Vec<Vec<u8>>> = Vec::new();
        for rx in &mut queues {
            let mut frames = Vec::new();
            while let Ok(frame) = rx.try_recv() {
                frames.push(frame.sealed);
            }
            received.push(frames);
        }
        assert!(received.iter().all(|frames| frames.len() == 3));
        assert!(
            received.windows(2).all(|w| w[0] == w[1]),
            "the same sealed frames to all"
        );
    }

    /// Two receivers, one on a path that carries 360p and one on a path that carries only
    /// a third of it: each gets the layer its path carries (simulcast), the weak one from
    /// the low layer's first keyframe on; when its path recovers, the low layer is no longer
    /// encoded and it is back on the main one.
    /// Keys `video` for an epoch of `members` (leaves 1, 2, …) and routes its frames to
    /// each of them; returns each member's queue of frames.
    fn keyed_and_routed(
        video: &mut VideoLoop,
        members: &[PeerId],
    ) -> HashMap<PeerId, mpsc::Receiver<OutboundVideo>> {
        video.on_command(
            t0(),
            VideoCommand::Keys {
                epoch: 1,
                secret: EpochSecret([8; 32]),
                own_leaf: 0,
                members: (1..).zip(members.iter().copied()).collect(),
            },
        );
        let mut queues = HashMap::new();
        for peer in members {
            let (tx, rx) = mpsc::channel(64);
            video.on_command(
                t0(),
                VideoCommand::Route {
                    peer: *peer,
                    frames: Some(tx),
                },
            );
            queues.insert(*peer, rx);
        }
        queues
    }

    #[test]
    fn each_receiver_gets_the_layer_its_path_carries() {
        let sender = VideoSender::new(Box::new(StampedTestSource::new(640, 360).unwrap())).unwrap();
        let mut video = VideoLoop::new(Some(sender), None);
        let (strong, weak) = (PeerId::random(), PeerId::random());
        let mut queues = keyed_and_routed(&mut video, &[strong, weak]);
        let path = |bps: f64| {
            Some(SendEstimate {
                bps,
                loss: 0.0,
                limited_by_use: false,
            })
        };
        video.on_command(
            t0(),
            VideoCommand::Path {
                peer: strong,
                rtt: None,
                send: path(3_000_000.0),
            },
        );
        video.on_command(
            t0(),
            VideoCommand::Path {
                peer: weak,
                rtt: None,
                send: path(300_000.0),
            },
        );
        let mut at = t0();
        for _ in 0..10 {
            video.capture(VideoKind::Camera, at);
            at += Duration::from_millis(33);
        }
        let layers_of = |rx: &mut mpsc::Receiver<OutboundVideo>| {
            let mut spatial = Vec::new();
            while let Ok(frame) = rx.try_recv() {
                spatial.push(frame.info.spatial);
            }
            spatial
        };
        let strong_got = layers_of(queues.get_mut(&strong).unwrap());
        let weak_got = layers_of(queues.get_mut(&weak).unwrap());
        assert_eq!(
            strong_got,
            vec![0; 10],
            "the strong path gets 360p throughout"
        );
        assert!(
            !weak_got.is_empty() && weak_got.iter().all(|&s| s == 1),
            "{weak_got:?}"
        );
        let camera = &video.camera.as_ref().unwrap().sender;
        assert_eq!(
            (camera.size(), camera.low_size()),
            ((640, 360), Some((320, 180)))
        );
        // The weak path recovers: one layer again, everyone on it.
        video.on_command(
            at,
            VideoCommand::Path {
                peer: weak,
                rtt: None,
                send: path(3_000_000.0),
            },
        );
        for _ in 0..40 {
            video.capture(VideoKind::Camera, at);
            at += Duration::from_millis(33);
        }
        let weak_got = layers_of(queues.get_mut(&weak).unwrap());
        assert_eq!(weak_got.last(), Some(&0), "{weak_got:?}");
        assert_eq!(
            video.camera.as_ref().unwrap().sender.low_size(),
            None,
            "not encoded"
        );
    }

    #[test]
    fn a_member_that_wants_no_video_gets_none_and_nobody_receiving_means_no_encoding() {
        let sender = VideoSender::new(Box::new(StampedTestSource::new(320, 180).unwrap())).unwrap();
        let display = VideoDisplay::new();
        let mut video = VideoLoop::new(Some(sender), None).with_display(Some(display.clone()));
        let (watching, weak_link) = (PeerId::random(), PeerId::random());
        let mut queues = keyed_and_routed(&mut video, &[watching, weak_link]);
        video.on_command(
            t0(),
            VideoCommand::Wanted {
                peer: weak_link,
                wanted: false,
            },
        );
        let frame = Duration::from_millis(33);
        for n in 0..3u32 {
            video.capture(VideoKind::Camera, t0() + frame * n);
        }
        let count = |queues: &mut HashMap<PeerId, mpsc::Receiver<OutboundVideo>>, peer| {
            let rx = queues.get_mut(&peer).unwrap();
            std::iter::from_fn(|| rx.try_recv().ok()).count()
        };
        assert_eq!(count(&mut queues, watching), 3);
        assert_eq!(count(&mut queues, weak_link), 0, "it asked for none");

        // Nobody wants it: the self-view still moves, but nothing is encoded.
        video.on_command(
            t0(),
            VideoCommand::Wanted {
                peer: watching,
                wanted: false,
            },
        );
        let encoded = video.camera.as_ref().unwrap().sender.stats().frames;
        assert!(
            display
                .take()
                .iter()
                .any(|(id, _)| *id == (Owner::Me, VideoKind::Camera))
        );
        for n in 3..6u32 {
            video.capture(VideoKind::Camera, t0() + frame * n);
        }
        assert_eq!(
            video.camera.as_ref().unwrap().sender.stats().frames,
            encoded
        );
        assert!(
            display
                .take()
                .iter()
                .any(|(id, _)| *id == (Owner::Me, VideoKind::Camera)),
            "the self-view goes on"
        );

        // Wanted again: the first frame it gets is a keyframe.
        video.on_command(
            t0() + frame * 6,
            VideoCommand::Wanted {
                peer: weak_link,
                wanted: true,
            },
        );
        video.capture(VideoKind::Camera, t0() + frame * 6);
        let rx = queues.get_mut(&weak_link).unwrap();
        let first = rx.try_recv().expect("a frame again");
        assert!(first.info.keyframe, "it starts with a keyframe");
    }
}
