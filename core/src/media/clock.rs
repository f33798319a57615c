//! The audio clock: every 20 ms, source → noise suppression → Opus → SFrame → every
//! connected peer, and for every sender jitter buffer → Opus (FEC/PLC) → mixer → sink.
//!
//! It runs on its own task and never awaits anything but its next tick: it reads and
//! writes bounded queues with `try_recv`/`try_send` only (synchronous calls that cannot
//! wait), so negotiation, slow peers and a slow control plane never delay the audio. It
//! owns the media keys ([`Sealer`], [`Opener`]); they reach it through the command queue,
//! like everything the actor tells it.
//!
//! ```text
//!  actor ──ClockCommand (lossless)──▶ clock ──OutboundFrame (lossy, per connection)──▶ sender task ─▶ MediaPeer
//!  peer forwarders ──InboundFrame (lossy)──▶ clock ──ClockReport (lossy)──▶ actor
//! ```
// The real-time edge: each tick reads the time it runs at.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::audio::codec::{Decoder, Encoder};
use super::audio::denoise::NoiseSuppressor;
use super::audio::jitter::{JitterBuffer, JitterConfig};
use super::audio::mixer::{Mixer, level_dbfs};
use super::audio::sink::AudioSink;
use super::audio::source::AudioSource;
use super::audio::{AudioError, FRAME_MS, FRAME_SAMPLES, Frame};
use super::crypto::keyring::Opener;
use super::crypto::sframe::{Sealer, Stream};
use super::{EpochSecret, MediaEvent, ReceiveStats, STATS_INTERVAL};
use crate::group::media_keys::sender_base_key;

/// Capacity of the command queue (actor → clock). Lossless: the actor waits for room
/// (at most one tick: the clock drains the whole queue on every tick).
pub(crate) const COMMAND_CAPACITY: usize = 64;
/// Capacity of the received-frame queue (peer forwarders → clock), about a second of
/// audio from ten members. Lossy: a frame that finds it full is dropped (newest dropped,
/// counted by its forwarder) and the jitter buffer treats it as lost.
pub(crate) const INBOUND_CAPACITY: usize = 512;
/// Capacity of a connection's send queue (clock → its sender task), 160 ms of audio. Lossy:
/// a frame that finds it full (the connection cannot keep up) is dropped (newest dropped,
/// counted in [`Clock::frames_not_sent`]).
pub(crate) const OUTBOUND_CAPACITY: usize = 8;
/// Capacity of the report queue (clock → actor). Lossy: reports are telemetry; one that
/// finds it full is dropped and counted.
pub(crate) const REPORT_CAPACITY: usize = 256;
/// How often at most the clock tells the actor that a member's frames arrive.
const HEARD_EVERY: Duration = Duration::from_millis(100);
/// Ticks between two statistics reports.
const STATS_TICKS: u64 = STATS_INTERVAL.as_millis() as u64 / FRAME_MS as u64;

/// A frame received from a member, stamped with its arrival time.
#[derive(Debug)]
pub(crate) struct InboundFrame {
    pub(crate) peer: PeerId,
    pub(crate) at: Instant,
    /// The SFrame-sealed Opus packet.
    pub(crate) payload: Vec<u8>,
}

/// A sealed frame to send on one connection, stamped with its capture time.
#[derive(Debug)]
pub(crate) struct OutboundFrame {
    pub(crate) at: Instant,
    pub(crate) sealed: Vec<u8>,
}

/// What the actor tells the clock.
#[derive(Debug)]
pub(crate) enum ClockCommand {
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
    /// Send our frames to this member through each of `frames` (two connections while a
    /// direct one takes over from a relayed one), or (none) stop.
    Route {
        peer: PeerId,
        frames: Vec<mpsc::Sender<OutboundFrame>>,
    },
    /// Stop or resume sending.
    Mute(bool),
    /// Noise suppression of the outgoing audio on or off.
    NoiseSuppression(bool),
}

/// What the clock (and the video loop) tell the actor.
#[derive(Debug)]
pub(crate) enum ClockReport {
    /// Frames from `peer` arrive (the latest at `at`).
    Heard { peer: PeerId, at: Instant },
    /// `peer`'s `kind` of video needs a keyframe (a frame was lost): ask it.
    KeyframeWanted {
        peer: PeerId,
        kind: crate::media::video::VideoKind,
    },
    /// An event for the application (statistics carry no round-trip time yet).
    Event(MediaEvent),
}

/// The queues the clock reads and writes.
#[derive(Debug)]
pub(crate) struct ClockQueues {
    pub(crate) commands: mpsc::Receiver<ClockCommand>,
    pub(crate) inbound: mpsc::Receiver<InboundFrame>,
    pub(crate) reports: mpsc::Sender<ClockReport>,
}

struct Receiver {
    jitter: JitterBuffer,
    decoder: Decoder,
    level: f32,
}

/// The audio pipeline and the media keys.
pub(crate) struct Clock {
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    encoder: Encoder,
    /// Present while noise suppression is on.
    suppressor: Option<Box<NoiseSuppressor>>,
    sealer: Sealer,
    opener: Opener,
    keyed: bool,
    muted: bool,
    leaves: BTreeMap<u32, PeerId>,
    receivers: HashMap<u32, Receiver>,
    routes: HashMap<PeerId, Vec<mpsc::Sender<OutboundFrame>>>,
    /// When each member was last reported heard.
    heard: HashMap<PeerId, Instant>,
    ticks: u64,
    /// Frames dropped because a connection's send queue was full.
    frames_not_sent: u64,
    /// Reports dropped because the actor did not take them.
    reports_dropped: u64,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("keyed", &self.keyed)
            .field("muted", &self.muted)
            .field("receivers", &self.receivers.len())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Clock {
    /// A clock that plays `source` out and the mix into `sink`.
    pub(crate) fn new(
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        noise_suppression: bool,
    ) -> Result<Self, AudioError> {
        Ok(Self {
            source,
            sink,
            encoder: Encoder::new()?,
            suppressor: noise_suppression.then(|| Box::new(NoiseSuppressor::new())),
            sealer: Sealer::new(0),
            opener: Opener::default(),
            keyed: false,
            muted: false,
            leaves: BTreeMap::new(),
            receivers: HashMap::new(),
            routes: HashMap::new(),
            heard: HashMap::new(),
            ticks: 0,
            frames_not_sent: 0,
            reports_dropped: 0,
        })
    }

    /// Runs the clock on its own task until `cancel` fires or the actor drops the command
    /// queue; the sink is finished (a WAV file completed) before the task ends.
    pub(crate) fn spawn(
        mut self,
        mut queues: ClockQueues,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(u64::from(FRAME_MS)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                if !self.tick(tokio::time::Instant::now().into_std(), &mut queues) {
                    break;
                }
            }
            self.finish();
        })
    }

    /// One 20 ms tick at `now`. Returns false once the actor is gone.
    fn tick(&mut self, now: Instant, queues: &mut ClockQueues) -> bool {
        loop {
            match queues.commands.try_recv() {
                Ok(command) => self.on_command(now, command),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        while let Ok(frame) = queues.inbound.try_recv() {
            self.on_frame(frame, &queues.reports);
        }
        self.send(now);
        self.play(now);
        self.ticks += 1;
        if self.ticks.is_multiple_of(STATS_TICKS) {
            self.report_stats(&queues.reports);
        }
        true
    }

    fn on_command(&mut self, now: Instant, command: ClockCommand) {
        match command {
            ClockCommand::Keys {
                epoch,
                secret,
                own_leaf,
                members,
            } => {
                if let Err(err) =
                    self.sealer
                        .install(epoch, own_leaf, &sender_base_key(&secret.0, own_leaf))
                {
                    warn!(error = %err, "cannot install the sending key");
                }
                self.opener.install(now, epoch, secret.0);
                self.keyed = true;
                self.leaves = members.into_iter().collect();
                let leaves = &self.leaves;
                self.receivers.retain(|leaf, _| leaves.contains_key(leaf));
            }
            ClockCommand::Forget(peer) => {
                if let Some(leaf) = self.leaf_of(&peer) {
                    self.receivers.remove(&leaf);
                }
                self.heard.remove(&peer);
            }
            ClockCommand::Reset => {
                self.receivers.clear();
                self.leaves.clear();
                self.heard.clear();
                self.keyed = false;
                // No key of the old group outlives it: not for sealing, not for opening.
                self.sealer.reset();
                self.opener.reset();
            }
            ClockCommand::Route { peer, frames } => {
                if frames.is_empty() {
                    self.routes.remove(&peer);
                } else {
                    self.routes.insert(peer, frames);
                }
            }
            ClockCommand::Mute(muted) => self.muted = muted,
            ClockCommand::NoiseSuppression(on) => {
                if on != self.suppressor.is_some() {
                    info!(on, "noise suppression");
                    self.suppressor = on.then(|| Box::new(NoiseSuppressor::new()));
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

    /// A connection carries only its own member's frames: the KID must name the leaf of the
    /// peer the connection belongs to (checked before the replay window moves). Failures
    /// are counted by the opener and the frame dropped.
    fn on_frame(&mut self, frame: InboundFrame, reports: &mpsc::Sender<ClockReport>) {
        let Some(expected) = self.leaf_of(&frame.peer) else {
            return;
        };
        let Ok(opened) = self.opener.open_from(frame.at, &frame.payload, expected) else {
            return;
        };
        // Only audio is played here; a frame of another stream on the audio path is dropped.
        if opened.stream != Stream::Audio || !self.leaves.contains_key(&opened.sender) {
            return;
        }
        let due = self
            .heard
            .get(&frame.peer)
            .is_none_or(|last| frame.at.saturating_duration_since(*last) >= HEARD_EVERY);
        if due {
            self.heard.insert(frame.peer, frame.at);
            self.report(
                reports,
                ClockReport::Heard {
                    peer: frame.peer,
                    at: frame.at,
                },
            );
        }
        let receiver = self
            .receivers
            .entry(opened.sender)
            .or_insert_with(|| Receiver {
                jitter: JitterBuffer::new(JitterConfig::default()),
                decoder: Decoder::new().expect("a 48 kHz mono Opus decoder can always be created"),
                level: -120.0,
            });
        receiver
            .jitter
            .push(frame.at, opened.counter, opened.payload);
        if receiver.jitter.stats().received == 1
            && let Some(peer_id) = self.leaves.get(&opened.sender).copied()
        {
            self.report(
                reports,
                ClockReport::Event(MediaEvent::AudioStarted { peer_id }),
            );
        }
    }

    /// Captures, encodes, seals and queues one frame for every routed connection.
    fn send(&mut self, now: Instant) {
        let mut frame: Frame = [0; FRAME_SAMPLES];
        self.source.next_frame(&mut frame);
        if let Some(suppressor) = self.suppressor.as_mut() {
            suppressor.process(&mut frame);
        }
        if !self.keyed {
            return;
        }
        if self.muted {
            // Digital silence goes out instead of the microphone: Opus's DTX makes those
            // packets a byte or two, and they keep telling the others that we are there
            // (liveness counts a member's frames: docs/protocol.md §5 rule 8), so a muted
            // member is not removed because a blackout held its heartbeats back.
            frame = [0; FRAME_SAMPLES];
        }
        let sealed = match self
            .encoder
            .encode(&frame)
            .map_err(|e| e.to_string())
            .and_then(|packet| self.sealer.seal(&packet).map_err(|e| e.to_string()))
        {
            Ok(sealed) => sealed,
            Err(err) => {
                debug!(error = %err, "frame not sealed");
                return;
            }
        };
        for (peer, routes) in &mut self.routes {
            routes.retain(|frames| {
                let outbound = OutboundFrame {
                    at: now,
                    sealed: sealed.clone(),
                };
                match frames.try_send(outbound) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        self.frames_not_sent += 1;
                        debug!(peer = %peer, dropped = self.frames_not_sent, "send queue full; frame dropped");
                        true
                    }
                    Err(TrySendError::Closed(_)) => false,
                }
            });
        }
        self.routes.retain(|_, routes| !routes.is_empty());
    }

    /// Plays every sender's next frame out, mixed, into the sink.
    fn play(&mut self, now: Instant) {
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

    fn report_stats(&mut self, reports: &mpsc::Sender<ClockReport>) {
        let decrypt = self.opener.stats();
        // Copies of frames already opened (`replayed`) are not failures: while a direct
        // connection takes over from a relayed one, every frame comes both ways.
        let failures = decrypt.forged + decrypt.unknown_key + decrypt.malformed;
        let mut events = Vec::new();
        for (leaf, receiver) in &self.receivers {
            let Some(peer_id) = self.leaves.get(leaf) else {
                continue;
            };
            let stats = receiver.jitter.stats();
            events.push(MediaEvent::Stats(ReceiveStats {
                peer_id: *peer_id,
                rx_frames: stats.played.saturating_sub(stats.lost + stats.underruns),
                lost_frames: stats.lost,
                recovered_frames: stats.recovered,
                decrypt_failures: failures,
                jitter_ms: receiver.jitter.jitter().as_secs_f64() * 1000.0,
                level_dbfs: receiver.level,
                rtt_ms: None,
                send_estimate_kbps: None,
                send_loss: None,
            }));
        }
        for event in events {
            self.report(reports, ClockReport::Event(event));
        }
    }

    /// Reports without ever waiting: a full queue means the actor is behind; the report is
    /// dropped and counted.
    fn report(&mut self, reports: &mpsc::Sender<ClockReport>, report: ClockReport) {
        if let Err(err) = reports.try_send(report) {
            self.reports_dropped += 1;
            debug!(dropped = self.reports_dropped, error = %err, "clock report dropped");
        }
    }

    fn finish(&mut self) {
        if let Err(err) = self.sink.finish() {
            warn!(error = %err, "could not finish the audio output");
        }
        debug!(
            frames_not_sent = self.frames_not_sent,
            reports_dropped = self.reports_dropped,
            "audio clock stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::sink::NullSink;
    use crate::media::audio::source::Tone;

    use crate::test_clock::t0;

    struct Harness {
        clock: Clock,
        queues: ClockQueues,
        commands: mpsc::Sender<ClockCommand>,
        inbound: mpsc::Sender<InboundFrame>,
        reports: mpsc::Receiver<ClockReport>,
    }

    impl Harness {
        fn new() -> Self {
            let clock = Clock::new(Box::new(Tone::new(440.0, 0.3)), Box::new(NullSink), false)
                .expect("an Opus encoder");
            let (commands, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
            let (inbound, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
            let (reports_tx, reports) = mpsc::channel(REPORT_CAPACITY);
            let queues = ClockQueues {
                commands: commands_rx,
                inbound: inbound_rx,
                reports: reports_tx,
            };
            Self {
                clock,
                queues,
                commands,
                inbound,
                reports,
            }
        }

        fn command(&self, command: ClockCommand) {
            self.commands.try_send(command).expect("room");
        }

        /// Routes our frames for `peer` into a new send queue, returned.
        fn route(&self, peer: PeerId) -> mpsc::Receiver<OutboundFrame> {
            let (frames_tx, frames_rx) = mpsc::channel(OUTBOUND_CAPACITY);
            self.command(ClockCommand::Route {
                peer,
                frames: vec![frames_tx],
            });
            frames_rx
        }

        fn tick(&mut self, now: Instant) {
            assert!(self.clock.tick(now, &mut self.queues));
        }

        fn reports(&mut self) -> Vec<ClockReport> {
            std::iter::from_fn(|| self.reports.try_recv().ok()).collect()
        }
    }

    fn keys(own_leaf: u32, members: Vec<(u32, PeerId)>) -> ClockCommand {
        ClockCommand::Keys {
            epoch: 1,
            secret: EpochSecret([9; 32]),
            own_leaf,
            members,
        }
    }

    const TICK: Duration = Duration::from_millis(FRAME_MS as u64);

    #[test]
    fn frames_sealed_by_one_clock_play_in_another_and_a_full_send_queue_never_waits() {
        let (a_id, b_id) = (PeerId::random(), PeerId::random());
        let (mut a, mut b) = (Harness::new(), Harness::new());
        a.command(keys(0, vec![(1, b_id)]));
        let mut frames_rx = a.route(b_id);
        b.command(keys(1, vec![(0, a_id)]));
        let now = t0();
        // Nobody drains the send queue: the clock drops and counts, and goes on.
        for i in 0..OUTBOUND_CAPACITY as u32 + 2 {
            a.tick(now + TICK * i);
        }
        assert_eq!(a.clock.frames_not_sent, 2);
        let mut seq = 0u16;
        while let Ok(frame) = frames_rx.try_recv() {
            let inbound = InboundFrame {
                peer: a_id,
                at: frame.at,
                payload: frame.sealed,
            };
            b.inbound.try_send(inbound).expect("room");
            seq += 1;
        }
        assert_eq!(usize::from(seq), OUTBOUND_CAPACITY);
        // Frames from a peer that is not a member are not even opened.
        let stranger = InboundFrame {
            peer: PeerId::random(),
            at: now,
            payload: vec![0; 40],
        };
        b.inbound.try_send(stranger).expect("room");
        for i in 0..STATS_TICKS as u32 {
            b.tick(now + TICK * (i + 1));
        }
        let reports = b.reports();
        assert!(
            reports
                .iter()
                .any(|r| matches!(r, ClockReport::Heard { peer, .. } if *peer == a_id))
        );
        assert!(reports.iter().any(|r| matches!(
            r,
            ClockReport::Event(MediaEvent::AudioStarted { peer_id }) if *peer_id == a_id
        )));
        assert!(reports.iter().any(|r| matches!(
            r,
            ClockReport::Event(MediaEvent::Stats(stats))
                if stats.peer_id == a_id && stats.decrypt_failures == 0 && stats.rx_frames > 0
        )));
    }

    /// Muted, the clock keeps sending, but silence: after Opus's first frames of silence its
    /// DTX packets are a byte or two, far smaller than the tone's.
    #[test]
    fn muted_the_clock_sends_tiny_frames_of_silence() {
        let b_id = PeerId::random();
        let mut a = Harness::new();
        let mut frames_rx = a.route(b_id);
        a.command(keys(0, vec![(1, b_id)]));
        let now = t0();
        a.tick(now);
        let speaking = frames_rx.try_recv().expect("a frame").sealed.len();
        a.command(ClockCommand::Mute(true));
        let mut muted = Vec::new();
        for i in 1..=20 {
            a.tick(now + TICK * i);
            muted.push(
                frames_rx
                    .try_recv()
                    .expect("a frame while muted")
                    .sealed
                    .len(),
            );
        }
        let last = *muted.last().expect("frames");
        assert!(
            last * 2 < speaking && last <= 40,
            "muted frames of {muted:?} bytes against {speaking} speaking"
        );
    }

    #[test]
    fn nothing_is_sent_unkeyed_or_unrouted_and_reset_forgets_the_keys() {
        let b_id = PeerId::random();
        let mut a = Harness::new();
        let mut frames_rx = a.route(b_id);
        let now = t0();
        a.tick(now);
        assert!(frames_rx.try_recv().is_err(), "no keys yet");
        a.command(keys(0, vec![(1, b_id)]));
        a.tick(now + TICK);
        assert!(frames_rx.try_recv().is_ok());
        a.command(ClockCommand::Reset);
        a.tick(now + TICK * 3);
        assert!(frames_rx.try_recv().is_err(), "keys forgotten");
        a.command(keys(0, vec![(1, b_id)]));
        a.command(ClockCommand::Route {
            peer: b_id,
            frames: Vec::new(),
        });
        a.tick(now + TICK * 4);
        assert!(frames_rx.try_recv().is_err(), "route dropped");
        // The actor is gone: the clock stops.
        drop(a.commands);
        assert!(!a.clock.tick(now + TICK * 5, &mut a.queues));
    }
}
