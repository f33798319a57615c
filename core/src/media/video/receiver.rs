//! One sender's video as we receive it (sans-IO but for the codec): RTP packets →
//! reassembled sealed frame ([`Assembler`]) → SFrame open (the caller's [`Opener`], which
//! checks the key, the sender and replays) → VP8 decode → measured ([`Monitor`]).
//!
//! A VP8 delta frame decoded without its reference gives a wrong picture rather than an
//! error, so after a loss (a frame given up, one that would not open or decode) nothing is
//! decoded until a keyframe comes, and one is asked for — at most once per
//! [`KEYFRAME_REQUEST_INTERVAL`] while waiting.
//!
//! At a key change the sender may seal under the new epoch before that epoch reaches us
//! (its first frame there is a keyframe). A frame under a key we do not hold yet is kept,
//! in order, for up to [`HOLD_FOR_KEY`] and opened again as soon as the key is installed,
//! instead of being lost and asked for again a round trip later.

use std::time::{Duration, Instant};

use super::monitor::{Monitor, ReceiveStages, Shown, VideoReport};
use super::rtp::{Arrival, AssembledFrame, Assembler};
use super::{Decoder, I420Frame, VideoKind, VpxError};
use crate::media::crypto::MediaError;
use crate::media::crypto::keyring::Opener;
use crate::media::crypto::sframe::Stream;

/// Least time between two keyframe requests while waiting for one.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// Longest a frame under a key we do not hold yet is kept for the key to arrive.
pub const HOLD_FOR_KEY: Duration = Duration::from_millis(500);
/// Most frames kept for a key (half a second at 30 fps).
pub const MAX_HELD_FOR_KEY: usize = 16;

/// What one packet led to.
#[derive(Debug, Default)]
pub struct Received {
    /// Pictures to show, oldest first (usually none or one; several after a repair).
    pub pictures: Vec<Picture>,
    /// Ask the sender for a keyframe now.
    pub want_keyframe: bool,
    /// The frame opened: the sender is heard.
    pub opened: bool,
}

/// A decoded picture.
#[derive(Debug)]
pub struct Picture {
    /// The picture.
    pub image: I420Frame,
    /// What the monitor read of it.
    pub shown: Shown,
    /// When its frame's packets arrived.
    pub arrival: Arrival,
}

/// Counts of what went wrong, since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveCounts {
    /// Frames put together from their packets.
    pub assembled: u64,
    /// Frames that never completed (a packet lost for good).
    pub incomplete: u64,
    /// Packets refused as malformed.
    pub malformed_packets: u64,
    /// Frames that would not open (forged, replayed, unknown key, another sender's, not video).
    pub undecryptable: u64,
    /// Frames the decoder refused.
    pub undecodable: u64,
    /// Delta frames skipped while waiting for a keyframe (the picture stays: concealed).
    pub concealed: u64,
    /// Pictures decoded.
    pub decoded: u64,
    /// Keyframes asked for.
    pub keyframe_requests: u64,
    /// Sealed bytes received in complete frames.
    pub bytes: u64,
    /// Packets that came on a connection the sender's video had left.
    pub late_connection: u64,
}

/// One sender's incoming video.
pub struct VideoReceiver {
    /// The SFrame stream its frames must be sealed for (a member's camera or its screen).
    stream: Stream,
    assembler: Assembler,
    decoder: Decoder,
    monitor: Monitor,
    waiting_for_keyframe: bool,
    last_request: Option<Instant>,
    /// Frames under a key we do not hold yet (since when, the sealed frame, when it
    /// arrived), oldest first.
    held_for_key: std::collections::VecDeque<(Instant, Vec<u8>, Arrival)>,
    counts: ReceiveCounts,
    /// The connection its packets come on (numbered in order of creation).
    connection: Option<u64>,
}

impl std::fmt::Debug for VideoReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoReceiver")
            .field("waiting_for_keyframe", &self.waiting_for_keyframe)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

/// Whether a VP8 frame is a keyframe (RFC 6386 §9.1: bit 0 of the frame tag is 0).
fn is_vp8_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|tag| tag & 1 == 0)
}

impl VideoReceiver {
    /// A receiver whose first reporting period starts at `now`.
    pub fn new(now: Instant) -> Result<Self, VpxError> {
        Self::for_kind(now, VideoKind::Camera)
    }

    /// A receiver of a member's `kind` of video: a frame sealed for its other video is
    /// refused (counted undecryptable) even under the right key.
    pub fn for_kind(now: Instant, kind: VideoKind) -> Result<Self, VpxError> {
        Ok(Self {
            stream: kind.stream(),
            assembler: Assembler::default(),
            decoder: Decoder::new()?,
            monitor: Monitor::new(now),
            waiting_for_keyframe: true,
            last_request: None,
            held_for_key: std::collections::VecDeque::new(),
            counts: ReceiveCounts::default(),
            connection: None,
        })
    }

    /// Whether a packet that came on connection `conn` is taken. The sender's video moves
    /// to a newer connection (a direct one taking over from a relayed one) at a keyframe,
    /// with RTP numbering of its own: the frames being put together are dropped and the
    /// keyframe awaited. Stragglers of an older connection are dropped (counted late).
    pub fn from_connection(&mut self, conn: u64) -> bool {
        match self.connection {
            Some(current) if conn < current => {
                self.counts.late_connection += 1;
                false
            }
            Some(current) if conn == current => true,
            previous => {
                if previous.is_some() {
                    self.assembler.restart();
                    self.waiting_for_keyframe = true;
                }
                self.connection = Some(conn);
                true
            }
        }
    }

    /// What went wrong so far.
    pub fn counts(&self) -> ReceiveCounts {
        let assembly = self.assembler.stats();
        ReceiveCounts {
            assembled: assembly.frames,
            incomplete: assembly.incomplete + assembly.oversized,
            malformed_packets: assembly.malformed,
            ..self.counts
        }
    }

    /// Where a shown picture's time went (measured by the caller, which reads the clock).
    pub fn staged(&mut self, stages: ReceiveStages) {
        self.monitor.staged(stages);
    }

    /// Ends a reporting period at `now`.
    pub fn report(&mut self, now: Instant) -> VideoReport {
        self.monitor.report(now)
    }

    /// Takes one RTP packet from the connection of the member at leaf `sender`, at `now`
    /// (`unix_ms` by the wall clock).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        now: Instant,
        unix_ms: u64,
        opener: &mut Opener,
        sender: u32,
        packet: (u16, u32, bool, &[u8]),
    ) -> Received {
        let (seq, timestamp, marker, payload) = packet;
        let frames = self.assembler.push(now, seq, timestamp, marker, payload);
        self.take(now, unix_ms, opener, sender, frames)
    }

    /// Frames whose wait for a repair ran out by `now`, and frames kept for a key that has
    /// arrived since (the video loop calls this between packets, so a stream that stops
    /// after a loss still shows what came).
    pub fn poll(
        &mut self,
        now: Instant,
        unix_ms: u64,
        opener: &mut Opener,
        sender: u32,
    ) -> Received {
        let frames = self.assembler.poll(now);
        self.take(now, unix_ms, opener, sender, frames)
    }

    /// How long a complete frame may wait for a missing packet (a retransmission) before it.
    pub fn set_repair_wait(&mut self, wait: Duration) {
        self.assembler.set_repair_wait(wait);
    }

    /// Opens and decodes the frames kept for a key, then `frames`, in order.
    fn take(
        &mut self,
        now: Instant,
        unix_ms: u64,
        opener: &mut Opener,
        sender: u32,
        frames: Vec<AssembledFrame>,
    ) -> Received {
        let mut received = Received::default();
        let held = std::mem::take(&mut self.held_for_key);
        let frames = held
            .into_iter()
            .map(|(since, data, arrival)| (Some(since), data, false, arrival))
            .chain(
                frames
                    .into_iter()
                    .map(|frame| (None, frame.data, frame.after_loss, frame.arrival)),
            );
        for (held_since, data, after_loss, arrival) in frames {
            if after_loss {
                self.waiting_for_keyframe = true;
            }
            match opener.open_from(now, &data, sender) {
                Ok(opened) if opened.stream == self.stream => {
                    self.drop_held_for_key();
                    received.opened = true;
                    self.counts.bytes += data.len() as u64;
                    self.monitor.received(data.len());
                    self.decode(now, unix_ms, &opened.payload, arrival, &mut received);
                }
                Err(MediaError::UnknownKey { .. })
                    if self.held_for_key.len() < MAX_HELD_FOR_KEY
                        && held_since.is_none_or(|since| {
                            now.saturating_duration_since(since) < HOLD_FOR_KEY
                        }) =>
                {
                    self.held_for_key
                        .push_back((held_since.unwrap_or(now), data, arrival));
                }
                _ => {
                    self.counts.undecryptable += 1;
                    self.waiting_for_keyframe = true;
                }
            }
        }
        if self.waiting_for_keyframe && received.opened {
            let due = self.last_request.is_none_or(|last| {
                now.saturating_duration_since(last) >= KEYFRAME_REQUEST_INTERVAL
            });
            if due {
                self.last_request = Some(now);
                self.counts.keyframe_requests += 1;
                received.want_keyframe = true;
            }
        }
        received
    }

    /// A frame opened: whatever was kept for a key before it will never be shown.
    fn drop_held_for_key(&mut self) {
        if !self.held_for_key.is_empty() {
            self.counts.undecryptable += self.held_for_key.len() as u64;
            self.held_for_key.clear();
            self.waiting_for_keyframe = true;
        }
    }

    fn decode(
        &mut self,
        now: Instant,
        unix_ms: u64,
        frame: &[u8],
        arrival: Arrival,
        received: &mut Received,
    ) {
        let keyframe = is_vp8_keyframe(frame);
        if self.waiting_for_keyframe && !keyframe {
            self.counts.concealed += 1;
            return;
        }
        match self.decoder.decode(frame) {
            Ok(Some(picture)) => {
                self.waiting_for_keyframe = false;
                self.counts.decoded += 1;
                let shown = self.monitor.shown(now, unix_ms, &picture);
                received.pictures.push(Picture {
                    image: picture,
                    shown,
                    arrival,
                });
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(error = %err, "video frame not decoded");
                self.counts.undecodable += 1;
                self.waiting_for_keyframe = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::packetizer::Payloader;

    use super::*;
    use crate::group::media_keys::sender_base_key;
    use crate::media::video::sender::VideoSender;
    use crate::media::video::source::StampedTestSource;
    use crate::media::video::testsrc::read_stamp;
    use crate::test_clock::t0;

    const SECRET: [u8; 32] = [3; 32];

    /// A sender at leaf 1 and an opener that knows its epoch.
    fn pair() -> (VideoSender, Opener) {
        let now = t0();
        let mut sender =
            VideoSender::new(Box::new(StampedTestSource::new(320, 180).unwrap())).unwrap();
        sender.install(5, 1, &sender_base_key(&SECRET, 1)).unwrap();
        let mut opener = Opener::default();
        opener.install(now, 5, SECRET);
        (sender, opener)
    }

    /// The RTP payloads of one sealed frame.
    fn packets(sealed: &[u8]) -> Vec<Vec<u8>> {
        Vp8Payloader::default()
            .payload(1200, &Bytes::copy_from_slice(sealed))
            .unwrap()
            .into_iter()
            .map(|p| p.to_vec())
            .collect()
    }

    /// Packets on their way: one frame every 33 ms.
    struct Wire {
        seq: u16,
        timestamp: u32,
        frames: u64,
    }

    impl Wire {
        /// A wire whose first packet has sequence number `seq`.
        fn starting_at(seq: u16) -> Self {
            Self {
                seq,
                timestamp: 0,
                frames: 0,
            }
        }

        /// Sends a whole frame; returns how many pictures it showed.
        fn shows(
            &mut self,
            receiver: &mut VideoReceiver,
            opener: &mut Opener,
            sealed: &[u8],
        ) -> usize {
            self.send(receiver, opener, sealed, |_| true).pictures.len()
        }

        /// Sends one frame's packets (all, or those `keep` lets through) into `receiver`.
        fn send(
            &mut self,
            receiver: &mut VideoReceiver,
            opener: &mut Opener,
            sealed: &[u8],
            keep: impl Fn(usize) -> bool,
        ) -> Received {
            let payloads = packets(sealed);
            let last = payloads.len() - 1;
            let mut out = Received::default();
            for (i, payload) in payloads.iter().enumerate() {
                let seq = self.seq;
                self.seq = self.seq.wrapping_add(1);
                if !keep(i) {
                    continue;
                }
                let at = t0() + Duration::from_millis(33 * self.frames);
                let r = receiver.push(at, 0, opener, 1, (seq, self.timestamp, i == last, payload));
                out.pictures.extend(r.pictures);
                out.want_keyframe |= r.want_keyframe;
                out.opened |= r.opened;
            }
            self.timestamp = self.timestamp.wrapping_add(3000);
            self.frames += 1;
            out
        }
    }

    #[test]
    fn frames_decode_in_order_and_carry_their_stamps() {
        let (mut sender, mut opener) = pair();
        let mut receiver = VideoReceiver::new(t0()).unwrap();
        let mut wire = Wire::starting_at(65_530);
        for n in 0..10u32 {
            let frame = sender.capture(t0(), u64::from(n) * 33).unwrap().unwrap();
            let got = wire.send(&mut receiver, &mut opener, &frame.sealed, |_| true);
            let Picture { image, shown, .. } = got.pictures.into_iter().next().expect("decoded");
            assert_eq!(read_stamp(&image).unwrap().frame, n);
            assert_eq!(shown.stamp.unwrap().frame, n);
            assert!(shown.psnr_db.unwrap() > 30.0, "{shown:?}");
            assert!(!got.want_keyframe);
        }
        assert_eq!(receiver.counts().decoded, 10);
    }

    /// A member's camera frames on its screen track (or the other way round) are refused,
    /// though sealed under its own key: each video opens only as itself.
    #[test]
    fn a_camera_frame_is_never_taken_for_a_screen_or_back() {
        let (mut camera, mut opener) = pair();
        let mut screen_receiver = VideoReceiver::for_kind(t0(), VideoKind::Screen).unwrap();
        let mut screen_wire = Wire::starting_at(0);
        let frame = camera.capture(t0(), 0).unwrap().unwrap();
        assert_eq!(
            screen_wire.shows(&mut screen_receiver, &mut opener, &frame.sealed),
            0
        );
        assert_eq!(screen_receiver.counts().undecryptable, 1);
        let mut screen = VideoSender::of_kind(
            VideoKind::Screen,
            Box::new(StampedTestSource::new(320, 180).unwrap()),
        )
        .unwrap();
        screen.install(5, 1, &sender_base_key(&SECRET, 1)).unwrap();
        let shared = screen.capture(t0(), 0).unwrap().unwrap();
        let mut camera_receiver = VideoReceiver::new(t0()).unwrap();
        let mut wire = Wire::starting_at(0);
        assert_eq!(
            wire.shows(&mut camera_receiver, &mut opener, &shared.sealed),
            0
        );
        assert_eq!(camera_receiver.counts().undecryptable, 1);
        // On its own track the screen opens and shows (a fresh keyframe: the opener saw
        // the first one already, and a replay is refused).
        screen.request_keyframe(t0() + Duration::from_secs(1));
        let next = screen.capture(t0(), 33).unwrap().unwrap();
        assert!(next.keyframe);
        assert_eq!(
            screen_wire.shows(&mut screen_receiver, &mut opener, &next.sealed),
            1
        );
    }

    #[test]
    fn after_a_loss_nothing_is_shown_until_a_keyframe_which_is_asked_for() {
        let (mut sender, mut opener) = pair();
        let mut receiver = VideoReceiver::new(t0()).unwrap();
        // No retransmission comes here: the loss is given up at once.
        receiver.set_repair_wait(Duration::ZERO);
        let mut wire = Wire::starting_at(0);
        let first = sender.capture(t0(), 0).unwrap().unwrap();
        assert_eq!(wire.shows(&mut receiver, &mut opener, &first.sealed), 1);
        // The second frame loses its first packet (at this size, often its only one): the
        // third frame comes after a gap.
        let second = sender.capture(t0(), 33).unwrap().unwrap();
        assert!(
            wire.send(&mut receiver, &mut opener, &second.sealed, |i| i != 0)
                .pictures
                .is_empty()
        );
        let third = sender.capture(t0(), 66).unwrap().unwrap();
        let got = wire.send(&mut receiver, &mut opener, &third.sealed, |_| true);
        assert!(
            got.pictures.is_empty(),
            "a delta frame after a loss is not shown"
        );
        assert!(got.want_keyframe);
        sender.request_keyframe(t0() + Duration::from_secs(1));
        let key = sender.capture(t0(), 99).unwrap().unwrap();
        assert!(key.keyframe);
        let got = wire.send(&mut receiver, &mut opener, &key.sealed, |_| true);
        assert_eq!(
            read_stamp(
                &got.pictures
                    .into_iter()
                    .next()
                    .expect("the keyframe shows")
                    .image
            )
            .unwrap()
            .frame,
            3
        );
        let counts = receiver.counts();
        assert_eq!((counts.concealed, counts.keyframe_requests), (1, 1));
    }

    #[test]
    fn frames_of_an_epoch_we_hold_no_key_for_never_open() {
        // A member removed in epoch 6 keeps the keys of epoch 5 only.
        let (mut sender, mut opener) = pair();
        let mut receiver = VideoReceiver::new(t0()).unwrap();
        let mut wire = Wire::starting_at(0);
        let before = sender.capture(t0(), 0).unwrap().unwrap();
        assert_eq!(wire.shows(&mut receiver, &mut opener, &before.sealed), 1);
        sender.install(6, 1, &sender_base_key(&[4; 32], 1)).unwrap();
        for n in 1..5 {
            let after = sender.capture(t0(), n * 33).unwrap().unwrap();
            let got = wire.send(&mut receiver, &mut opener, &after.sealed, |_| true);
            assert!(got.pictures.is_empty() && !got.opened);
        }
        // Kept a while in case the key comes; it never does.
        let got = receiver.poll(t0() + Duration::from_secs(2), 0, &mut opener, 1);
        assert!(got.pictures.is_empty() && !got.opened);
        assert_eq!(receiver.counts().undecryptable, 4);
    }

    #[test]
    fn frames_sealed_under_a_key_that_arrives_a_little_later_are_shown_once_it_does() {
        let (mut sender, mut opener) = pair();
        let mut receiver = VideoReceiver::new(t0()).unwrap();
        let mut wire = Wire::starting_at(0);
        let first = sender.capture(t0(), 0).unwrap().unwrap();
        assert_eq!(wire.shows(&mut receiver, &mut opener, &first.sealed), 1);
        // The sender moves to epoch 6 (a keyframe first) before we have it.
        let next = [6; 32];
        sender.install(6, 1, &sender_base_key(&next, 1)).unwrap();
        let mut sent = Vec::new();
        for n in 1..4 {
            let frame = sender.capture(t0(), n * 33).unwrap().unwrap();
            assert_eq!(
                wire.shows(&mut receiver, &mut opener, &frame.sealed),
                0,
                "kept"
            );
            sent.push(frame);
        }
        assert!(sent[0].keyframe);
        // The epoch arrives 100 ms later: the three frames are shown, in order, no
        // keyframe asked for.
        let later = t0() + Duration::from_millis(200);
        opener.install(later, 6, next);
        let got = receiver.poll(later, 0, &mut opener, 1);
        let frames: Vec<u32> = got
            .pictures
            .iter()
            .map(|picture| read_stamp(&picture.image).unwrap().frame)
            .collect();
        assert_eq!(frames, [1, 2, 3]);
        assert!(!got.want_keyframe);
        assert_eq!(receiver.counts().undecryptable, 0);
    }

    #[test]
    fn frames_kept_for_a_key_that_never_comes_are_given_up() {
        let (mut sender, mut opener) = pair();
        let mut receiver = VideoReceiver::new(t0()).unwrap();
        let mut wire = Wire::starting_at(0);
        sender.install(6, 1, &sender_base_key(&[6; 32], 1)).unwrap();
        let frame = sender.capture(t0(), 0).unwrap().unwrap();
        assert_eq!(wire.shows(&mut receiver, &mut opener, &frame.sealed), 0);
        let got = receiver.poll(t0() + HOLD_FOR_KEY, 0, &mut opener, 1);
        assert!(got.pictures.is_empty());
        assert_eq!(receiver.counts().undecryptable, 1);
    }

    #[test]
    fn forged_replayed_and_foreign_frames_are_counted_not_shown() {
        let (mut sender, mut opener) = pair();
        let mut receiver = VideoReceiver::new(t0()).unwrap();
        let mut wire = Wire::starting_at(0);
        let frame = sender.capture(t0(), 0).unwrap().unwrap();
        assert_eq!(wire.shows(&mut receiver, &mut opener, &frame.sealed), 1);
        // The same frame again (a replay), then a forged one.
        assert!(
            wire.send(&mut receiver, &mut opener, &frame.sealed, |_| true)
                .pictures
                .is_empty()
        );
        let mut forged = sender.capture(t0(), 33).unwrap().unwrap().sealed;
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(
            wire.send(&mut receiver, &mut opener, &forged, |_| true)
                .pictures
                .is_empty()
        );
        // Another sender's frame on this sender's connection.
        let mut stranger =
            VideoSender::new(Box::new(StampedTestSource::new(320, 180).unwrap())).unwrap();
        stranger
            .install(5, 2, &sender_base_key(&SECRET, 2))
            .unwrap();
        let foreign = stranger.capture(t0(), 0).unwrap().unwrap();
        assert!(
            wire.send(&mut receiver, &mut opener, &foreign.sealed, |_| true)
                .pictures
                .is_empty()
        );
        // Audio sealed under our key is not video.
        let mut audio = crate::media::crypto::sframe::Sealer::new(1);
        audio.install(5, 1, &sender_base_key(&SECRET, 1)).unwrap();
        let audio_frame = audio.seal(&[0xfc; 40]).unwrap();
        assert!(
            wire.send(&mut receiver, &mut opener, &audio_frame, |_| true)
                .pictures
                .is_empty()
        );
        assert_eq!(receiver.counts().undecryptable, 4);
        // Truncated packets are refused by the assembler.
        let r = receiver.push(t0(), 0, &mut opener, 1, (999, 1, true, &[0x90]));
        assert!(r.pictures.is_empty());
        assert_eq!(receiver.counts().malformed_packets, 1);
    }
}
