//! The video loop: once per frame interval, source → VP8 → SFrame → every connected peer;
//! and for every sender, packets → frame → open → decode → measure (and `--video-out`).
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

use std::collections::{BTreeMap, HashMap};
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
use super::video::monitor::{ReceiveStages, SendMonitor};
use super::video::rate::RateControl;
use super::video::receiver::{Received, VideoReceiver};
use super::video::rtp::FrameInfo;
use super::video::sender::VideoSender;
use super::video::sink::VideoFileSink;
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
/// Frame interval when we send no video.
const IDLE_INTERVAL: Duration = Duration::from_millis(33);

/// What the connections hand the video loop.
#[derive(Debug)]
pub(crate) enum VideoInbound {
    /// A video packet from `peer`'s connection, stamped with its arrival.
    Packet {
        peer: PeerId,
        at: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
    },
    /// `peer` asked for a keyframe of our video.
    KeyframeRequested(PeerId),
    /// A command is waiting (sent by the actor after each command, so the loop does not
    /// sleep on it).
    Wake,
}

/// A sealed video frame to send on one connection.
#[derive(Debug)]
pub(crate) struct OutboundVideo {
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
    /// The latest round-trip time to this member (how long its video may wait for a
    /// retransmission) and how fast we may send to it (what our encoder aims at), where
    /// known.
    Path {
        peer: PeerId,
        rtt: Option<Duration>,
        send_bps: Option<f64>,
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

/// One sender's video as we receive it, and where it goes.
#[derive(Debug)]
struct Incoming {
    peer: PeerId,
    receiver: VideoReceiver,
    sink: Option<VideoFileSink>,
    started: bool,
}

/// Our video and everyone else's.
pub(crate) struct VideoLoop {
    sender: Option<VideoSender>,
    opener: Opener,
    leaves: BTreeMap<u32, PeerId>,
    receivers: HashMap<u32, Incoming>,
    routes: HashMap<PeerId, mpsc::Sender<OutboundVideo>>,
    /// `--video-out`: where received video is written.
    out_dir: Option<PathBuf>,
    heard: HashMap<PeerId, Instant>,
    /// The latest round-trip time to each member.
    rtts: HashMap<PeerId, Duration>,
    /// What our video sends.
    sent: SendMonitor,
    /// What our encoder aims at.
    rate: RateControl,
    reports_dropped: u64,
}

impl std::fmt::Debug for VideoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoLoop")
            .field("sender", &self.sender)
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl VideoLoop {
    /// A loop that sends `sender`'s video (if any) and writes what it receives to
    /// `out_dir` (if any).
    pub(crate) fn new(sender: Option<VideoSender>, out_dir: Option<PathBuf>) -> Self {
        let rate = RateControl::new(sender.as_ref().map_or(0, VideoSender::full_rate_kbps));
        Self {
            sender,
            opener: Opener::default(),
            leaves: BTreeMap::new(),
            receivers: HashMap::new(),
            routes: HashMap::new(),
            out_dir,
            heard: HashMap::new(),
            rtts: HashMap::new(),
            sent: SendMonitor::new(Instant::now()),
            rate,
            reports_dropped: 0,
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
        let mut next_capture = start;
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
            if now >= next_capture {
                let interval = self.capture(now);
                next_capture += interval;
                if next_capture + interval < now {
                    // Behind by more than a whole frame (a slow encoder): start again from
                    // now rather than burst. Less than that (a snapshot written, several
                    // frames decoded at once) is caught up with the next capture.
                    next_capture = now;
                }
            }
            if now >= next_report {
                self.report_stats(now, &queues.reports);
                next_report = now + STATS_INTERVAL;
            }
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
                if let Some(sender) = self.sender.as_mut()
                    && let Err(err) =
                        sender.install(epoch, own_leaf, &sender_base_key(&secret.0, own_leaf))
                {
                    warn!(error = %err, "cannot install the video sending key");
                }
                self.opener.install(now, epoch, secret.0);
                self.leaves = members.into_iter().collect();
                let leaves = &self.leaves;
                self.receivers.retain(|leaf, _| leaves.contains_key(leaf));
            }
            VideoCommand::Forget(peer) => {
                self.rate.forget(&peer);
                self.receivers.retain(|_, incoming| incoming.peer != peer);
                self.heard.remove(&peer);
            }
            VideoCommand::Reset => {
                self.receivers.clear();
                self.leaves.clear();
                self.heard.clear();
                if let Some(sender) = self.sender.as_mut() {
                    sender.reset();
                }
                self.opener.reset();
            }
            VideoCommand::Route { peer, frames } => match frames {
                Some(frames) => {
                    self.routes.insert(peer, frames);
                    // A new connection has no earlier picture.
                    if let Some(sender) = self.sender.as_mut() {
                        sender.request_keyframe(now);
                    }
                }
                None => {
                    self.routes.remove(&peer);
                    self.rate.forget(&peer);
                }
            },
            VideoCommand::Path {
                peer,
                rtt,
                send_bps,
            } => {
                if let Some(rtt) = rtt {
                    self.rtts.insert(peer, rtt);
                    for incoming in self.receivers.values_mut().filter(|i| i.peer == peer) {
                        incoming.receiver.set_repair_wait(repair_wait(rtt));
                    }
                }
                if let Some(bps) = send_bps
                    && self.routes.contains_key(&peer)
                {
                    self.rate.estimate(peer, bps);
                }
            }
            VideoCommand::Camera(on) => {
                if let Some(sender) = self.sender.as_mut() {
                    info!(on, "camera");
                    sender.set_on(on);
                }
            }
        }
    }

    fn leaf_of(&self, peer: &PeerId) -> Option<u32> {
        self.leaves
            .iter()
            .find(|(_, p)| *p == peer)
            .map(|(leaf, _)| *leaf)
    }

    /// Captures, encodes and seals one frame and queues it for every routed connection;
    /// returns the time until the next one.
    fn capture(&mut self, now: Instant) -> Duration {
        let Some(sender) = self.sender.as_mut() else {
            return IDLE_INTERVAL;
        };
        let interval = sender.frame_interval();
        if let Some(kbps) = self.rate.update(now)
            && let Err(err) = sender.set_bitrate_kbps(kbps)
        {
            warn!(error = %err, kbps, "video bitrate not changed");
        }
        let frame = match sender.capture(now, unix_ms()) {
            Ok(Some(frame)) => frame,
            Ok(None) => return interval,
            Err(err) => {
                warn!(error = %err, "video frame not sent");
                return interval;
            }
        };
        self.sent.sent(
            sender.size(),
            frame.sealed.len(),
            frame.keyframe,
            now.elapsed(),
        );
        let mut closed = Vec::new();
        for (peer, frames) in &self.routes {
            let outbound = OutboundVideo {
                at: now,
                sealed: frame.sealed.clone(),
                duration: interval,
                info: frame.info,
            };
            match frames.try_send(outbound) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.sent.not_sent();
                    debug!(peer = %peer, "video send queue full; frame dropped");
                }
                Err(TrySendError::Closed(_)) => closed.push(*peer),
            }
        }
        for peer in closed {
            self.routes.remove(&peer);
            self.rate.forget(&peer);
        }
        interval
    }

    fn on_inbound(&mut self, inbound: VideoInbound, reports: &mpsc::Sender<ClockReport>) {
        match inbound {
            VideoInbound::Packet {
                peer,
                at,
                seq,
                timestamp,
                marker,
                payload,
            } => self.on_packet(peer, at, (seq, timestamp, marker, &payload), reports),
            VideoInbound::KeyframeRequested(peer) => {
                if let Some(sender) = self.sender.as_mut() {
                    debug!(peer = %peer, "keyframe requested");
                    sender.request_keyframe(Instant::now());
                }
            }
            VideoInbound::Wake => {}
        }
    }

    /// A connection carries only its own member's video: the KID must name the leaf of the
    /// peer the connection belongs to (the opener checks it).
    fn on_packet(
        &mut self,
        peer: PeerId,
        at: Instant,
        packet: (u16, u32, bool, &[u8]),
        reports: &mpsc::Sender<ClockReport>,
    ) {
        let Some(leaf) = self.leaf_of(&peer) else {
            return;
        };
        let incoming = match self.receivers.entry(leaf) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => match VideoReceiver::new(at) {
                Ok(mut receiver) => {
                    if let Some(rtt) = self.rtts.get(&peer) {
                        receiver.set_repair_wait(repair_wait(*rtt));
                    }
                    entry.insert(Incoming {
                        peer,
                        receiver,
                        sink: None,
                        started: false,
                    })
                }
                Err(err) => {
                    warn!(error = %err, "no video decoder");
                    return;
                }
            },
        };
        let shown_ms = unix_ms();
        let decoding = Instant::now();
        let received = incoming
            .receiver
            .push(at, shown_ms, &mut self.opener, leaf, packet);
        self.take(leaf, at, shown_ms, (decoding, received), reports);
    }

    /// Lets out the frames whose wait for a repair ran out.
    fn poll_receivers(&mut self, reports: &mpsc::Sender<ClockReport>) {
        let now = Instant::now();
        let shown_ms = unix_ms();
        let leaves: Vec<u32> = self.receivers.keys().copied().collect();
        for leaf in leaves {
            let Some(incoming) = self.receivers.get_mut(&leaf) else {
                continue;
            };
            let decoding = Instant::now();
            let received = incoming
                .receiver
                .poll(now, shown_ms, &mut self.opener, leaf);
            if received.pictures.is_empty() && !received.want_keyframe && !received.opened {
                continue;
            }
            self.take(leaf, now, shown_ms, (decoding, received), reports);
        }
    }

    /// Shows (and writes) what the receiver of `leaf` decoded since `decoding` (when the
    /// packet or poll that let it out was handed over), and reports what it needs.
    fn take(
        &mut self,
        leaf: u32,
        at: Instant,
        shown_ms: u64,
        (decoding, received): (Instant, Received),
        reports: &mpsc::Sender<ClockReport>,
    ) {
        let Some(incoming) = self.receivers.get_mut(&leaf) else {
            return;
        };
        let peer = incoming.peer;
        let mut out = Vec::new();
        if received.want_keyframe {
            out.push(ClockReport::KeyframeWanted { peer });
        }
        // Opening and decoding took from `decoding` to now, shared by the pictures out.
        let decode = decoding.elapsed() / received.pictures.len().max(1) as u32;
        for picture in received.pictures {
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
                    width: picture.width(),
                    height: picture.height(),
                }));
                if let Some(dir) = &self.out_dir {
                    match VideoFileSink::create(dir, &peer.to_string()) {
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
        for incoming in self.receivers.values_mut() {
            let period = incoming.receiver.report(now);
            let counts = incoming.receiver.counts();
            incoming.sink.as_mut().map(VideoFileSink::flush);
            events.push(MediaEvent::Video(VideoStats {
                peer_id: incoming.peer,
                report: period,
                counts,
            }));
        }
        if let Some(sender) = &self.sender {
            let period = self.sent.report(now, sender.bitrate_kbps());
            debug!(sent = ?sender.stats(), "video sent");
            if sender.is_on() {
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
            sent = ?self.sender.as_ref().map(VideoSender::stats),
            period = ?self.sent,
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
        let members: Vec<(u32, PeerId)> = (1..=5).map(|leaf| (leaf, PeerId::random())).collect();
        video.on_command(
            t0(),
            VideoCommand::Keys {
                epoch: 1,
                secret: EpochSecret([8; 32]),
                own_leaf: 0,
                members: members.clone(),
            },
        );
        let mut queues = Vec::new();
        for (_, peer) in &members {
            let (tx, rx) = mpsc::channel(VIDEO_OUTBOUND_CAPACITY);
            video.on_command(
                t0(),
                VideoCommand::Route {
                    peer: *peer,
                    frames: Some(tx),
                },
            );
            queues.push(rx);
        }
        for n in 0..3u64 {
            video.capture(t0() + Duration::from_millis(33 * n));
        }
        let sent = video.sender.as_ref().unwrap().stats();
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
}
