//! How fast we may send to one peer: a send-side bandwidth estimate per connection.
//!
//! Every packet we send carries a transport-wide sequence number (the TWCC RTP header
//! extension); the other side reports when each one arrived (RTCP transport-cc feedback,
//! about every 100 ms), and a GCC estimator (delay trend + loss, from `rtc-interceptor`)
//! turns those reports into a target bitrate. Both halves run in the connection's interceptor
//! chain, so each connection serves its peer's estimate too.
//!
//! The chain has no pacer: `rtc-interceptor`'s pacer holds every packet, audio included, to
//! exactly the estimate, so a video keyframe would queue the audio behind it. Instead the
//! video encoder is asked for less than the estimate (the video loop), and audio never waits.
//!
//! What is published never exceeds 1.5 × what the peer received lately ([`PROBE_FACTOR`]):
//! a sender using less than its path carries has not tested the rest.
//!
//! [`EstimateCell`] is where the chain publishes the estimate (lock-free: the chain runs
//! under the connection's core lock) and where the media actor reads it once a second.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, PacketReport, Registry,
    Slot, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_TRANSPORT_CC,
};
use webrtc::peer_connection::MediaEngine;

/// Where the estimate starts, before any feedback: enough for 360p video and audio, so a
/// call on a good path starts at full quality; a worse path brings it down within a few
/// feedback rounds.
pub const INITIAL_ESTIMATE_BPS: f64 = 1_200_000.0;
/// The estimate never goes below this: audio and a minimal video layer.
pub const MIN_ESTIMATE_BPS: f64 = 100_000.0;
/// Nor above this: more than the largest layer we send, so probing stops there.
pub const MAX_ESTIMATE_BPS: f64 = 6_000_000.0;

/// The latest estimate of one connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendEstimate {
    /// Target send rate, bits per second.
    pub bps: f64,
    /// Smoothed fraction of our packets the peer reported lost (0–1).
    pub loss: f64,
    /// The estimate is only what we used lately ([`PROBE_FACTOR`]): the path showed no
    /// sign of its limit (no loss or delay growth made GCC go lower, no standing queue).
    /// A sender that sent little — a still shared screen — must not read it as the
    /// path's limit.
    pub limited_by_use: bool,
}

/// The estimate of one connection as the chain last published it.
#[derive(Debug, Default)]
pub struct EstimateCell {
    /// The target in bits per second, as `f64` bits; 0 while no feedback has arrived.
    bps: AtomicU64,
    /// The loss fraction in millionths.
    loss_ppm: AtomicU32,
    /// See [`SendEstimate::limited_by_use`].
    limited_by_use: std::sync::atomic::AtomicBool,
}

impl EstimateCell {
    fn publish(&self, (bps, limited_by_use): (f64, bool), loss: Option<f64>) {
        self.limited_by_use.store(limited_by_use, Ordering::Relaxed);
        self.bps.store(bps.to_bits(), Ordering::Relaxed);
        let ppm = (loss.unwrap_or(0.0).clamp(0.0, 1.0) * 1e6).round() as u32;
        self.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    /// The latest estimate, once the peer's feedback has produced one.
    pub fn get(&self) -> Option<SendEstimate> {
        let bps = f64::from_bits(self.bps.load(Ordering::Relaxed));
        (bps > 0.0).then(|| SendEstimate {
            bps,
            loss: f64::from(self.loss_ppm.load(Ordering::Relaxed)) / 1e6,
            limited_by_use: self.limited_by_use.load(Ordering::Relaxed),
        })
    }
}

/// What the peer received of ours over the last [`ACKED_WINDOW`], by its clock.
#[derive(Debug, Default)]
struct AckedRate {
    /// (arrival on the peer's clock, bytes), oldest first.
    arrivals: VecDeque<(Duration, usize)>,
    bytes: usize,
}

/// The span over which the received rate is measured.
const ACKED_WINDOW: Duration = Duration::from_millis(500);
/// A received rate needs at least this span of arrivals.
const ACKED_MIN_SPAN: Duration = Duration::from_millis(200);

impl AckedRate {
    fn add(&mut self, arrival: Duration, size: usize) {
        self.arrivals.push_back((arrival, size));
        self.bytes += size;
        while let Some(&(oldest, size)) = self.arrivals.front() {
            if arrival.saturating_sub(oldest) <= ACKED_WINDOW {
                break;
            }
            self.arrivals.pop_front();
            self.bytes -= size;
        }
    }

    /// Bits per second, once the arrivals span enough time to say.
    fn bps(&self) -> Option<f64> {
        let (first, _) = self.arrivals.front()?;
        let (last, last_size) = self.arrivals.back()?;
        let span = last.saturating_sub(*first);
        (span >= ACKED_MIN_SPAN).then(|| (self.bytes - last_size) as f64 * 8.0 / span.as_secs_f64())
    }
}

/// An estimate never exceeds this share of what the peer received lately, plus
/// [`PROBE_HEADROOM_BPS`]: a sender that uses less than its path could carry has not
/// tested the rest, and GCC's own estimate then climbs without bound (libwebrtc caps it
/// the same way). Several connections share our uplink; an untested estimate on each would
/// add up to more than it carries.
pub const PROBE_FACTOR: f64 = 1.5;
/// See [`PROBE_FACTOR`].
pub const PROBE_HEADROOM_BPS: f64 = 10_000.0;

/// A standing queue longer than this on the path means we send more than it carries.
pub const QUEUE_LIMIT: Duration = Duration::from_millis(60);
/// Once the queue is back under this, the path is clear again.
pub const QUEUE_CLEAR: Duration = Duration::from_millis(15);
/// On a standing queue the estimate goes to this share of what the peer receives, so the
/// queue drains; again after [`QUEUE_BACKOFF_HOLD`] if it has not drained by then.
pub const QUEUE_BACKOFF: f64 = 0.85;
/// See [`QUEUE_BACKOFF`]: the time a lower rate takes to show in the queue.
pub const QUEUE_BACKOFF_HOLD: Duration = Duration::from_secs(1);
/// How long the least one-way delay seen is remembered as the path's own (so a new, longer
/// path is not read as a standing queue for ever).
const BASE_DELAY_WINDOW: Duration = Duration::from_secs(10);

/// The standing queue on the path: each packet's one-way delay (on two unsynchronised
/// clocks, so up to a constant) less the least seen over [`BASE_DELAY_WINDOW`]; per
/// feedback round, the least of its packets (the queue every packet met, not a burst's
/// own tail).
///
/// GCC's delay detector reacts to how fast the delay grows (over 12.5 ms per packet
/// group); a sender a fifth above a link's rate grows a queue too slowly for it and fills
/// a half-second buffer before loss says anything. This one reacts to the queue itself.
#[derive(Debug, Default)]
struct StandingQueue {
    /// The first departure seen: departures are measured from it.
    origin: Option<Instant>,
    /// Least delay offset (ms) per second of departures, oldest first.
    minima: VecDeque<(Instant, f64)>,
    /// Whether the queue is over [`QUEUE_LIMIT`] and not yet back under [`QUEUE_CLEAR`].
    congested: bool,
}

impl StandingQueue {
    /// Takes one feedback round (departure, arrival on the peer's clock); returns the
    /// standing queue it shows, if any packet of it arrived.
    fn round(&mut self, packets: impl Iterator<Item = (Instant, Duration)>) -> Option<Duration> {
        let mut least: Option<f64> = None;
        for (departure, arrival) in packets {
            let origin = *self.origin.get_or_insert(departure);
            let offset = arrival.as_secs_f64() * 1000.0
                - departure.saturating_duration_since(origin).as_secs_f64() * 1000.0;
            least = Some(least.map_or(offset, |l| l.min(offset)));
            match self.minima.back_mut() {
                Some((since, min))
                    if departure.saturating_duration_since(*since) < Duration::from_secs(1) =>
                {
                    *min = min.min(offset);
                }
                _ => self.minima.push_back((departure, offset)),
            }
            while self.minima.front().is_some_and(|(since, _)| {
                departure.saturating_duration_since(*since) > BASE_DELAY_WINDOW
            }) {
                self.minima.pop_front();
            }
        }
        let base = self
            .minima
            .iter()
            .map(|(_, min)| *min)
            .fold(f64::INFINITY, f64::min);
        let queue = Duration::from_secs_f64(((least? - base) / 1000.0).max(0.0));
        if queue > QUEUE_LIMIT {
            self.congested = true;
        } else if queue < QUEUE_CLEAR {
            self.congested = false;
        }
        Some(queue)
    }
}

/// GCC, publishing each new estimate to an [`EstimateCell`]: within what was tested
/// ([`PROBE_FACTOR`]), and under what the peer receives while a standing queue drains
/// ([`QUEUE_LIMIT`]).
struct PublishingEstimator {
    gcc: Gcc,
    acked: AckedRate,
    queue: StandingQueue,
    /// While a standing queue drains: the rate we keep under, and since when.
    backoff: Option<(f64, Instant)>,
    cell: Arc<EstimateCell>,
}

impl PublishingEstimator {
    fn new(cell: Arc<EstimateCell>) -> Self {
        Self {
            gcc: Gcc::new(INITIAL_ESTIMATE_BPS, MIN_ESTIMATE_BPS, MAX_ESTIMATE_BPS),
            acked: AckedRate::default(),
            queue: StandingQueue::default(),
            backoff: None,
            cell,
        }
    }

    /// GCC's target, within what the peer has been seen to receive, and under it while a
    /// queue drains; and whether it is only what we used lately (the cap bound, not the
    /// path).
    fn tested_target(&self) -> (f64, bool) {
        let target = self.gcc.target_bitrate();
        let Some(acked) = self.acked.bps() else {
            return (target, false);
        };
        let (ceiling, by_use) = match self.backoff {
            Some((ceiling, _)) => (ceiling, false),
            None => (acked * PROBE_FACTOR + PROBE_HEADROOM_BPS, true),
        };
        let limited_by_use = by_use && ceiling < target;
        (target.min(ceiling).max(MIN_ESTIMATE_BPS), limited_by_use)
    }
}

impl PublishingEstimator {
    /// Keeps under what the peer receives while the path holds a standing queue (`queue`):
    /// once, and again each [`QUEUE_BACKOFF_HOLD`] it has not drained.
    fn back_off(&mut self, now: Instant, queue: Duration) {
        if !self.queue.congested {
            self.backoff = None;
            return;
        }
        let Some(acked) = self.acked.bps() else {
            return;
        };
        let due = self
            .backoff
            .is_none_or(|(_, since)| now.saturating_duration_since(since) >= QUEUE_BACKOFF_HOLD);
        if due {
            let ceiling = (acked * QUEUE_BACKOFF)
                .min(self.backoff.map_or(f64::INFINITY, |(c, _)| c))
                .max(MIN_ESTIMATE_BPS);
            tracing::debug!(?queue, ceiling, "standing queue on the path; sending less");
            self.backoff = Some((ceiling, now));
        }
    }
}

impl BandwidthEstimator for PublishingEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.gcc.on_reports(now, reports);
        for report in reports {
            if let (true, Some(arrival)) = (report.arrived, report.arrival) {
                self.acked.add(arrival, report.size);
            }
        }
        let arrived = reports
            .iter()
            .filter_map(|report| Some((report.departure, report.arrival?)));
        if let Some(queue) = self.queue.round(arrived) {
            self.back_off(now, queue);
        }
        self.cell
            .publish(self.tested_target(), self.gcc.stats().packet_loss);
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// Adds send-side congestion control to `registry` and `media`: TWCC numbering and
/// feedback for audio and video, and the estimator. Returns where its estimate appears.
pub fn congestion_control(
    registry: Registry,
    media: &mut MediaEngine,
) -> Result<(Registry, Arc<EstimateCell>), rtc::shared::error::Error> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    let cell = Arc::new(EstimateCell::default());
    let estimator = PublishingEstimator::new(Arc::clone(&cell));
    let registry = registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build());
    Ok((registry, cell))
}

#[cfg(test)]
mod tests {
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    use super::*;
    use crate::test_clock::t0;

    /// A bottleneck link: video frames of 1,200-byte packets leave in bursts 33 ms apart
    /// and queue at a link of `capacity_kbps` (20 ms base delay, tail drop past 500 ms of
    /// queue), as in the system tests' rate-limited uplinks.
    struct Bottleneck {
        start: Instant,
        id: u64,
        /// When the link is free again, since `start`.
        busy_until: Duration,
    }

    impl Bottleneck {
        fn new(start: Instant) -> Self {
            Self {
                start,
                id: 0,
                busy_until: Duration::ZERO,
            }
        }

        /// 100 ms of sending at `send_kbps` into `capacity_kbps`, from `at` (since start):
        /// the reports of those packets.
        fn round(&mut self, at: Duration, send_kbps: u64, capacity_kbps: u64) -> Vec<PacketReport> {
            let per_frame = (send_kbps * 1000 / 8 / 30 / 1200).max(1);
            let on_wire = Duration::from_secs_f64(1200.0 * 8.0 / (capacity_kbps as f64 * 1000.0));
            let mut reports = Vec::new();
            for frame in 0..3u32 {
                let departure = at + Duration::from_millis(33) * frame;
                for _ in 0..per_frame {
                    self.id += 1;
                    let queued = self.busy_until.saturating_sub(departure);
                    let arrived = queued < Duration::from_millis(500);
                    let arrival = if arrived {
                        self.busy_until = self.busy_until.max(departure) + on_wire;
                        Some(self.busy_until + Duration::from_millis(20))
                    } else {
                        None
                    };
                    reports.push(PacketReport {
                        ssrc: 1,
                        id: self.id,
                        rtp_sequence_number: self.id as u16,
                        is_twcc: true,
                        twcc_sequence_number: self.id as u16,
                        size: 1200,
                        arrived,
                        departure: self.start + departure,
                        arrival,
                        ecn: Ecn::NotEct,
                    });
                }
            }
            reports
        }
    }

    /// Feeds `seconds` of rounds at `send_kbps` into `capacity_kbps`, each reported 100 ms
    /// after it was sent, from `*at` on.
    fn run(
        estimator: &mut PublishingEstimator,
        link: &mut Bottleneck,
        at: &mut Duration,
        seconds: u32,
        send_kbps: u64,
        capacity_kbps: u64,
    ) {
        for _ in 0..seconds * 10 {
            let reports = link.round(*at, send_kbps, capacity_kbps);
            *at += Duration::from_millis(100);
            estimator.on_reports(link.start + *at, &reports);
        }
    }

    fn estimator() -> (PublishingEstimator, Arc<EstimateCell>) {
        let cell = Arc::new(EstimateCell::default());
        (PublishingEstimator::new(Arc::clone(&cell)), cell)
    }

    #[test]
    fn nothing_is_published_before_feedback() {
        let (mut estimator, cell) = estimator();
        assert_eq!(cell.get(), None);
        estimator.on_reports(t0(), &[]);
        assert_eq!(cell.get(), None, "an empty batch is no news");
    }

    #[test]
    fn a_link_slower_than_what_we_send_brings_the_estimate_under_it_and_a_fast_one_lets_it_climb() {
        let (mut estimator, cell) = estimator();
        let mut link = Bottleneck::new(t0());
        let mut at = Duration::ZERO;
        // 1.2 Mbit/s into an 800 kbit/s link for five seconds.
        run(&mut estimator, &mut link, &mut at, 5, 1200, 800);
        let congested = cell.get().expect("published");
        assert!(
            congested.bps < 800_000.0,
            "the estimate comes under the link rate: {congested:?}"
        );
        // Then ten seconds at what the estimate allows, on a link that now carries 5 Mbit/s.
        for _ in 0..10 {
            let send = (cell.get().expect("published").bps / 1000.0) as u64;
            run(&mut estimator, &mut link, &mut at, 1, send, 5000);
        }
        let clear = cell.get().expect("published");
        assert!(clear.bps > congested.bps * 1.5, "{congested:?} → {clear:?}");
    }

    #[test]
    fn an_estimate_never_runs_far_ahead_of_what_was_sent() {
        let (mut estimator, cell) = estimator();
        let mut link = Bottleneck::new(t0());
        let mut at = Duration::ZERO;
        // Thirty seconds of 300 kbit/s on a 10 Mbit/s link: GCC alone would climb to its
        // maximum; the published estimate stays within 1.5 × what arrived.
        run(&mut estimator, &mut link, &mut at, 30, 300, 10_000);
        assert!(estimator.gcc.target_bitrate() > 2_000_000.0);
        let estimate = cell.get().expect("published");
        assert!(
            (400_000.0..=500_000.0).contains(&estimate.bps),
            "{estimate:?}"
        );
    }

    #[test]
    fn a_standing_queue_brings_the_estimate_under_the_link_before_anything_is_lost() {
        let (mut estimator, cell) = estimator();
        let mut link = Bottleneck::new(t0());
        let mut at = Duration::ZERO;
        // A fifth more than an 800 kbit/s link carries (GCC's slope detector does not see a
        // queue growing this slowly), then whatever the estimate allows, for 20 s.
        let mut send = 960;
        let (mut longest_queue, mut sent) = (Duration::ZERO, Vec::new());
        for _ in 0..20 {
            run(&mut estimator, &mut link, &mut at, 1, send, 800);
            longest_queue = longest_queue.max(link.busy_until.saturating_sub(at));
            send = (cell.get().expect("published").bps * 0.9 / 1000.0) as u64;
            sent.push(send);
        }
        // It probes above the link now and then and backs off as soon as a queue stands:
        // nothing is lost, the queue stays far from its 500 ms, the link stays busy.
        let estimate = cell.get().expect("published");
        assert_eq!(estimate.loss, 0.0, "{sent:?}");
        assert!(
            longest_queue < Duration::from_millis(250),
            "{longest_queue:?} {sent:?}"
        );
        let mean = sent.iter().sum::<u64>() / sent.len() as u64;
        assert!((500..=900).contains(&mean), "{mean} kbit/s: {sent:?}");
    }

    #[test]
    fn the_queue_is_measured_from_the_least_delay_seen() {
        let start = t0();
        let mut queue = StandingQueue::default();
        // The peer's clock is 5 s off ours; the path takes 40 ms.
        let clock = Duration::from_secs(5);
        let packet = |ms: u64, queued: u64| {
            (
                start + Duration::from_millis(ms),
                clock + Duration::from_millis(ms + 40 + queued),
            )
        };
        assert_eq!(
            queue.round([packet(0, 0), packet(10, 3)].into_iter()),
            Some(Duration::ZERO)
        );
        let q = queue
            .round([packet(100, 70), packet(110, 80)].into_iter())
            .unwrap();
        assert_eq!(q.as_millis(), 70);
        assert!(queue.congested);
        let q = queue.round([packet(200, 30)].into_iter()).unwrap();
        assert_eq!(q.as_millis(), 30);
        assert!(queue.congested, "not clear until under 15 ms");
        queue.round([packet(300, 5)].into_iter());
        assert!(!queue.congested);
        assert_eq!(queue.round(std::iter::empty()), None);
    }

    #[test]
    fn loss_is_reported_with_the_estimate() {
        let (mut estimator, cell) = estimator();
        let mut link = Bottleneck::new(t0());
        let mut at = Duration::ZERO;
        // Three times what the link carries: its queue fills and drops.
        run(&mut estimator, &mut link, &mut at, 5, 1500, 500);
        let lossy = cell.get().expect("published");
        assert!(lossy.bps < 500_000.0, "{lossy:?}");
        assert!(lossy.loss > 0.1, "{lossy:?}");
    }
}
