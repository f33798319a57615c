//! Adaptive jitter buffer for one sender's 20 ms frames. Sans-IO: arrival and playout
//! times are arguments.
//!
//! - [`JitterBuffer::push`] files a packet by its SFrame counter, which the sender's audio
//!   sealer raises by one per 20 ms frame and never restarts. Unlike an RTP sequence number
//!   it belongs to the sender, not to a connection: frames of one sender arriving over two
//!   connections (a relayed one and the direct one taking over) file into one sequence, a
//!   frame that came both ways is a duplicate, and a new connection continues the stream.
//!   It drops duplicates and packets whose playout time has passed, and updates the RFC
//!   3550 inter-arrival jitter estimate.
//! - [`JitterBuffer::pop`] is called once per 20 ms by the playout clock. Playout starts
//!   once the first packet has waited the target delay; from then on each call yields the
//!   next frame, or tells the decoder to recover it from the next packet's FEC data, or to
//!   conceal it.
//! - The target delay follows the jitter (`frame + 3 × jitter`, bounded); when more audio is
//!   queued than the target needs, one frame is skipped to catch up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::FRAME_MS;

/// A counter jump this large means a new stream (the sender restarted), not loss (≈ 20 s
/// of audio).
const STREAM_JUMP: u64 = 1000;
/// Consecutive empty slots concealed before the sender counts as quiet (muted, or its path
/// is down): the buffer then plays silence and starts afresh with the next packet, so a
/// sender that resumes where it stopped is heard again at once.
pub const CONCEAL_LIMIT: u32 = 5;

/// Bounds of the jitter buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest playout delay.
    pub min_delay: Duration,
    /// Largest playout delay.
    pub max_delay: Duration,
    /// Most packets held.
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(300),
            capacity: 64,
        }
    }
}

/// What the playout clock should do for this 20 ms slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Not started yet (or nothing ever arrived): play silence, nothing was lost.
    Wait,
    /// Decode this packet.
    Frame(Vec<u8>),
    /// The packet is missing but the next one is here: recover from its FEC data.
    Recover(Vec<u8>),
    /// The packet is missing: conceal.
    Conceal,
}

/// Counters for the `media` stats events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets received twice.
    pub duplicate: u64,
    /// Slots whose packet was missing while a later one was there (recovered or concealed).
    pub lost: u64,
    /// Missing slots recovered by FEC.
    pub recovered: u64,
    /// Slots with nothing to play because nothing newer had arrived.
    pub underruns: u64,
    /// Frames skipped to reduce delay.
    pub skipped: u64,
    /// Slots played (including recovered and concealed).
    pub played: u64,
}

/// One sender's jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    packets: BTreeMap<u64, Vec<u8>>,
    highest: Option<u64>,
    next: Option<u64>,
    first_arrival: Option<Instant>,
    /// The latest arrival and its counter.
    last: Option<(Instant, u64)>,
    jitter_ms: f64,
    /// Consecutive slots with nothing to play.
    quiet_slots: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        Self {
            config,
            packets: BTreeMap::new(),
            highest: None,
            next: None,
            first_arrival: None,
            last: None,
            jitter_ms: 0.0,
            quiet_slots: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Inter-arrival jitter estimate (RFC 3550 §6.4.1).
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter_ms / 1000.0)
    }

    /// The current target playout delay.
    pub fn target_delay(&self) -> Duration {
        let frame = f64::from(FRAME_MS);
        let target = Duration::from_secs_f64((frame + 3.0 * self.jitter_ms) / 1000.0);
        target.clamp(self.config.min_delay, self.config.max_delay)
    }

    /// A packet arrived at `now` with SFrame counter `seq` (one per 20 ms frame).
    pub fn push(&mut self, now: Instant, seq: u64, payload: Vec<u8>) {
        if self
            .next
            .is_some_and(|next| seq.abs_diff(next) > STREAM_JUMP)
        {
            // A new stream (the sender started afresh): start over.
            let stats = self.stats;
            *self = Self::new(self.config.clone());
            self.stats = stats;
        }
        if self.next.is_some_and(|next| seq < next) {
            self.stats.late += 1;
            return;
        }
        if self.packets.contains_key(&seq) {
            self.stats.duplicate += 1;
            return;
        }
        if let Some((last_arrival, last_seq)) = self.last {
            let arrival_ms = now.saturating_duration_since(last_arrival).as_secs_f64() * 1000.0;
            // Frames between the two (negative for one that overtook the other), 20 ms each.
            let frames = if seq >= last_seq {
                (seq - last_seq) as f64
            } else {
                -((last_seq - seq) as f64)
            };
            let media_ms = frames * f64::from(FRAME_MS);
            let d = (arrival_ms - media_ms).abs();
            self.jitter_ms += (d - self.jitter_ms) / 16.0;
        }
        self.last = Some((now, seq));
        self.first_arrival.get_or_insert(now);
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.packets.insert(seq, payload);
        self.stats.received += 1;
        while self.packets.len() > self.config.capacity {
            self.packets.pop_first();
        }
    }

    /// The playout clock's 20 ms tick at `now`.
    pub fn pop(&mut self, now: Instant) -> Playout {
        let next = match self.next {
            Some(next) => next,
            None => {
                let Some(first) = self.first_arrival else {
                    return Playout::Wait;
                };
                if now < first + self.target_delay() {
                    return Playout::Wait;
                }
                let Some((&lowest, _)) = self.packets.first_key_value() else {
                    return Playout::Wait;
                };
                lowest
            }
        };
        // Too much queued for the target delay: skip one frame to catch up.
        let queued_ms =
            self.highest.map_or(0, |h| h.saturating_sub(next) + 1) * u64::from(FRAME_MS);
        let mut next = next;
        if Duration::from_millis(queued_ms)
            > self.target_delay() + Duration::from_millis(u64::from(FRAME_MS) * 3)
        {
            self.packets.remove(&next);
            next += 1;
            self.stats.skipped += 1;
        }
        self.next = Some(next + 1);
        self.stats.played += 1;
        if let Some(packet) = self.packets.remove(&next) {
            self.quiet_slots = 0;
            return Playout::Frame(packet);
        }
        if self.highest.is_none_or(|highest| highest < next) {
            // Nothing newer has arrived: the network is slow, or the sender is quiet (muted,
            // or its path is down); not a loss.
            self.stats.underruns += 1;
            self.quiet_slots += 1;
            if self.quiet_slots > CONCEAL_LIMIT {
                // Quiet: stop concealing, and let the next packet start playout afresh
                // (with the target delay) whatever its sequence number.
                self.next = None;
                self.first_arrival = None;
                self.last = None;
                return Playout::Wait;
            }
            return Playout::Conceal;
        }
        self.quiet_slots = 0;
        self.stats.lost += 1;
        match self.packets.get(&(next + 1)) {
            Some(following) => {
                self.stats.recovered += 1;
                Playout::Recover(following.clone())
            }
            None => Playout::Conceal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const FRAME: Duration = Duration::from_millis(20);

    use crate::test_clock::t0;

    /// Sends `n` packets every 20 ms through `deliver` (which decides arrival or loss) and
    /// plays out every 20 ms; returns the playout decisions.
    fn run(
        n: u16,
        mut deliver: impl FnMut(u16) -> Option<Duration>,
    ) -> (Vec<Playout>, JitterStats) {
        let start = t0();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut arrivals: Vec<(Instant, u16)> = (0..n)
            .filter_map(|seq| {
                deliver(seq).map(|delay| (start + FRAME * u32::from(seq) + delay, seq))
            })
            .collect();
        arrivals.sort();
        let mut out = Vec::new();
        let mut arrivals = arrivals.into_iter().peekable();
        for slot in 0..(u32::from(n) + 30) {
            let now = start + FRAME * slot;
            while let Some((at, seq)) = arrivals.peek().copied() {
                if at > now {
                    break;
                }
                arrivals.next();
                buffer.push(at, u64::from(seq), vec![seq as u8]);
            }
            out.push(buffer.pop(now));
        }
        (out, buffer.stats())
    }

    fn played_sequence(out: &[Playout]) -> Vec<u8> {
        out.iter()
            .filter_map(|p| {
                if let Playout::Frame(p) = p {
                    Some(p[0])
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn a_clean_stream_plays_every_frame_in_order() {
        let (out, stats) = run(100, |_| Some(Duration::from_millis(5)));
        assert_eq!(
            played_sequence(&out),
            (0..100u16).map(|s| s as u8).collect::<Vec<_>>()
        );
        assert_eq!((stats.lost, stats.late, stats.duplicate), (0, 0, 0));
    }

    #[test]
    fn reordered_packets_play_in_order() {
        // Every 4th packet arrives 30 ms late, after its successor.
        let (out, stats) = run(100, |seq| {
            Some(Duration::from_millis(if seq % 4 == 0 { 30 } else { 2 }))
        });
        assert_eq!(
            played_sequence(&out),
            (0..100u16).map(|s| s as u8).collect::<Vec<_>>()
        );
        assert_eq!(stats.lost, 0);
    }

    #[test]
    fn loss_is_recovered_or_concealed_and_never_stalls_playout() {
        for seed in 0..3 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (out, stats) = run(500, |_| {
                (rng.gen_range(0..100) >= 5).then(|| Duration::from_millis(rng.gen_range(0..15)))
            });
            let first = out
                .iter()
                .position(|p| *p != Playout::Wait)
                .expect("playout started");
            let slots = &out[first..first + 480];
            assert!(
                slots.iter().all(|p| *p != Playout::Wait),
                "playout never stalls once started"
            );
            assert!(
                stats.lost >= 10 && stats.lost <= 45,
                "about 5 % lost: {stats:?}"
            );
            assert!(
                stats.recovered > 0,
                "FEC used when the next packet is there: {stats:?}"
            );
        }
    }

    #[test]
    fn a_sender_that_pauses_is_heard_again_when_it_resumes() {
        let start = t0();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut slot = 0u32;
        let mut tick = |buffer: &mut JitterBuffer, send: Option<u16>| {
            let now = start + FRAME * slot;
            if let Some(seq) = send {
                buffer.push(now, u64::from(seq), vec![seq as u8]);
            }
            slot += 1;
            buffer.pop(now)
        };
        for seq in 0..50u16 {
            tick(&mut buffer, Some(seq));
        }
        // The path is down (or the sender muted) for 10 s: a few slots are concealed, then
        // silence, never hundreds of slots of concealment noise.
        let quiet: Vec<Playout> = (0..500).map(|_| tick(&mut buffer, None)).collect();
        let concealed = quiet.iter().filter(|p| **p == Playout::Conceal).count();
        assert!(
            concealed <= CONCEAL_LIMIT as usize + 3,
            "{concealed} slots concealed"
        );
        assert_eq!(quiet.last(), Some(&Playout::Wait));
        // The sender resumes where it stopped (sequence numbers continue): heard again
        // within the target delay, every frame, none dropped as late.
        let late_before = buffer.stats().late;
        let resumed: Vec<Playout> = (50..150u16)
            .map(|seq| tick(&mut buffer, Some(seq)))
            .collect();
        let first = resumed
            .iter()
            .position(|p| matches!(p, Playout::Frame(_)))
            .expect("heard again");
        assert!(first <= 4, "heard again after {first} slots");
        assert!(
            resumed[first..]
                .iter()
                .all(|p| matches!(p, Playout::Frame(_)))
        );
        assert_eq!(buffer.stats().late, late_before);
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped_and_counted() {
        let start = t0();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        buffer.push(start, 10, vec![10]);
        buffer.push(start, 10, vec![10]);
        assert_eq!(buffer.stats().duplicate, 1);
        let later = start + Duration::from_millis(200);
        assert_eq!(buffer.pop(later), Playout::Frame(vec![10]));
        buffer.push(later, 9, vec![9]);
        assert_eq!(buffer.stats().late, 1);
    }

    #[test]
    fn a_new_stream_restarts_the_buffer_instead_of_stalling_it() {
        let start = t0();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        for seq in 0..10u16 {
            buffer.push(start + FRAME * u32::from(seq), u64::from(seq), vec![1]);
        }
        let mut now = start;
        for _ in 0..12 {
            now += FRAME;
            buffer.pop(now);
        }
        // The sender started afresh: its counter is somewhere else entirely.
        let mut played_new = 0;
        for i in 0..30u16 {
            now += FRAME;
            if i < 10 {
                buffer.push(now, 40_000 + u64::from(i), vec![2]);
            }
            if buffer.pop(now) == Playout::Frame(vec![2]) {
                played_new += 1;
            }
        }
        assert_eq!(played_new, 10, "{:?}", buffer.stats());
    }

    #[test]
    fn frames_of_one_sender_over_two_connections_play_once_each_in_order() {
        // Frames 0..50 over a relayed path (80 ms), 50..100 over a direct one (20 ms)
        // that took over: the direct ones overtake the relayed ones still on their way,
        // and frames 45..50 came both ways during the switch.
        let start = t0();
        let mut arrivals: Vec<(Instant, u64)> = (0..50u64)
            .map(|seq| (start + FRAME * seq as u32 + Duration::from_millis(80), seq))
            .chain(
                (45..100u64)
                    .map(|seq| (start + FRAME * seq as u32 + Duration::from_millis(20), seq)),
            )
            .collect();
        arrivals.sort();
        let mut buffer = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = arrivals.into_iter().peekable();
        let mut played = Vec::new();
        for slot in 0..140u32 {
            let now = start + FRAME * slot;
            while let Some((at, seq)) = arrivals.peek().copied() {
                if at > now {
                    break;
                }
                arrivals.next();
                buffer.push(at, seq, vec![seq as u8]);
            }
            match buffer.pop(now) {
                Playout::Frame(p) => played.push(p[0]),
                // Before the first frame, and after the last.
                Playout::Wait => {}
                _ if played.last() == Some(&99) => {}
                other => panic!("slot {slot}: {other:?} ({:?})", buffer.stats()),
            }
        }
        let stats = buffer.stats();
        assert_eq!(stats.lost, 0, "{stats:?}");
        assert_eq!(stats.duplicate, 5, "{stats:?}");
        // The lower delay lets the buffer drop frames it no longer needs queued: a
        // skipped frame is a 20 ms step, never a gap.
        let expected: Vec<u8> = (0..100u8).collect();
        let mut missing: Vec<u8> = expected
            .iter()
            .filter(|s| !played.contains(s))
            .copied()
            .collect();
        missing.sort_unstable();
        assert!(
            missing.len() as u64 == stats.skipped && stats.skipped <= 3,
            "played {played:?}, {stats:?}"
        );
        assert!(
            played.windows(2).all(|w| w[0] < w[1]),
            "in order: {played:?}"
        );
    }

    #[test]
    fn the_target_delay_follows_jitter_within_bounds() {
        let start = t0();
        let mut calm = JitterBuffer::new(JitterConfig::default());
        let mut rough = JitterBuffer::new(JitterConfig::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for seq in 0..200u16 {
            let sent = start + FRAME * u32::from(seq);
            calm.push(sent, u64::from(seq), vec![]);
            rough.push(
                sent + Duration::from_millis(rng.gen_range(0..80)),
                u64::from(seq),
                vec![],
            );
        }
        assert_eq!(calm.target_delay(), JitterConfig::default().min_delay);
        assert!(
            rough.target_delay() > Duration::from_millis(60),
            "{:?}",
            rough.target_delay()
        );
        assert!(rough.target_delay() <= JitterConfig::default().max_delay);
    }
}
