//! What a receiver measures of one sender's video (sans-IO: pictures and times in, reports
//! out): frame rate, size, freezes, lost frames, and — when the sender runs `testsrc` —
//! end-to-end latency and quality against the exact reference.
//!
//! A *freeze* is a gap longer than [`FREEZE`] between two pictures shown. Lost frames are
//! the frame numbers a testsrc stamp skips; quality is the luma PSNR of each picture against
//! the testsrc picture its stamp names, redrawn here.
//!
//! [`SendMonitor`] measures our own video as it goes out: rate, size, bitrate and the time
//! from capture to the sealed frame.

use std::time::{Duration, Instant};

use super::I420Frame;
use super::testsrc::{Stamp, TestSource, read_stamp};

/// A gap between two pictures longer than this is a freeze.
pub const FREEZE: Duration = Duration::from_millis(500);

/// One reporting period of one sender's video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoReport {
    /// Pictures shown in the period.
    pub frames: u32,
    /// Pictures per second over the period.
    pub fps: f64,
    /// Size of the last picture.
    pub width: u32,
    /// Size of the last picture.
    pub height: u32,
    /// Gaps longer than [`FREEZE`] in the period.
    pub freezes: u32,
    /// The longest gap between two pictures in the period.
    pub longest_gap: Duration,
    /// Frame numbers the stamps skipped (testsrc senders only).
    pub lost: u32,
    /// Median and 95th percentile of capture → shown, in ms (testsrc senders only).
    pub latency_ms: Option<(u32, u32)>,
    /// Lowest and mean luma PSNR against the reference, in dB (testsrc senders only).
    pub psnr_db: Option<(f64, f64)>,
    /// Sealed video received in the period, kbit/s.
    pub kbps: u32,
    /// Where the time from a frame's first packet to its picture went (medians).
    pub stages: Option<StageMedians>,
}

/// Where one picture's time went at the receiver, from its frame's first packet to the
/// picture. Measured by the video loop, which reads the clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveStages {
    /// The frame's first packet → its last one.
    pub assembly: Duration,
    /// The last packet → decoding begins: the loop's inbox, a wait for a repair before it,
    /// a wait for a key.
    pub waiting: Duration,
    /// Opening (SFrame) and decoding (VP8).
    pub decode: Duration,
}

/// Medians of [`ReceiveStages`] over a period, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageMedians {
    /// First packet → last packet.
    pub assembly_ms: f64,
    /// Last packet → decoding begins.
    pub waiting_ms: f64,
    /// Opening and decoding.
    pub decode_ms: f64,
}

impl StageMedians {
    /// The medians of each stage over `stages` (none if empty).
    fn of(stages: &[ReceiveStages]) -> Option<Self> {
        let median = |stage: fn(&ReceiveStages) -> Duration| {
            let mut values: Vec<Duration> = stages.iter().map(stage).collect();
            values.sort_unstable();
            values
                .get(values.len() / 2)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        (!stages.is_empty()).then(|| Self {
            assembly_ms: median(|s| s.assembly),
            waiting_ms: median(|s| s.waiting),
            decode_ms: median(|s| s.decode),
        })
    }
}

/// What a shown picture carried.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shown {
    /// Its testsrc stamp, if it has one.
    pub stamp: Option<Stamp>,
    /// Its luma PSNR against the testsrc reference, if it has a stamp.
    pub psnr_db: Option<f64>,
}

/// Measures one sender's video.
#[derive(Debug)]
pub struct Monitor {
    period_start: Instant,
    last_shown: Option<Instant>,
    last_stamp: Option<Stamp>,
    frames: u32,
    size: (u32, u32),
    freezes: u32,
    longest_gap: Duration,
    lost: u32,
    latencies: Vec<u32>,
    psnrs: Vec<f64>,
    bytes: u64,
    stages: Vec<ReceiveStages>,
    /// The reference generator for the size last seen.
    reference: Option<TestSource>,
}

impl Monitor {
    /// A monitor whose first period starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            period_start: now,
            last_shown: None,
            last_stamp: None,
            frames: 0,
            size: (0, 0),
            freezes: 0,
            longest_gap: Duration::ZERO,
            lost: 0,
            latencies: Vec::new(),
            psnrs: Vec::new(),
            bytes: 0,
            stages: Vec::new(),
            reference: None,
        }
    }

    /// `bytes` of sealed video arrived.
    pub fn received(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Where a shown picture's time went.
    pub fn staged(&mut self, stages: ReceiveStages) {
        self.stages.push(stages);
    }

    /// A picture was shown at `now` (`unix_ms` by the wall clock, for the stamp's latency);
    /// returns its stamp and quality.
    pub fn shown(&mut self, now: Instant, unix_ms: u64, picture: &I420Frame) -> Shown {
        if let Some(last) = self.last_shown {
            let gap = now.saturating_duration_since(last);
            self.longest_gap = self.longest_gap.max(gap);
            if gap > FREEZE {
                self.freezes += 1;
            }
        }
        self.last_shown = Some(now);
        self.frames += 1;
        self.size = (picture.width(), picture.height());
        let Some(stamp) = read_stamp(picture) else {
            return Shown::default();
        };
        if let Some(previous) = self.last_stamp
            && stamp.frame > previous.frame
        {
            self.lost += stamp.frame - previous.frame - 1;
        }
        self.last_stamp = Some(stamp);
        self.latencies.push(stamp.age_ms(unix_ms));
        let reference = match &self.reference {
            Some(source) if source.size() == self.size => source,
            _ => match TestSource::new(picture.width(), picture.height()) {
                Ok(source) => self.reference.insert(source),
                Err(_) => {
                    return Shown {
                        stamp: Some(stamp),
                        psnr_db: None,
                    };
                }
            },
        };
        let psnr_db = picture.psnr_y(&reference.draw(stamp));
        if let Some(psnr) = psnr_db {
            self.psnrs.push(psnr);
        }
        Shown {
            stamp: Some(stamp),
            psnr_db,
        }
    }

    /// The report of the period that ends at `now`; the next one starts.
    pub fn report(&mut self, now: Instant) -> VideoReport {
        let elapsed = now
            .saturating_duration_since(self.period_start)
            .as_secs_f64();
        // A freeze still going on counts too.
        let ongoing = self
            .last_shown
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        let longest_gap = self.longest_gap.max(ongoing);
        let freezes = self.freezes + u32::from(ongoing > FREEZE && self.frames > 0);
        self.latencies.sort_unstable();
        let latency_ms = percentile(&self.latencies, 50).zip(percentile(&self.latencies, 95));
        let psnr_db = (!self.psnrs.is_empty()).then(|| {
            let low = self.psnrs.iter().copied().fold(f64::INFINITY, f64::min);
            let finite: Vec<f64> = self
                .psnrs
                .iter()
                .copied()
                .filter(|p| p.is_finite())
                .collect();
            let mean = if finite.is_empty() {
                f64::INFINITY
            } else {
                finite.iter().sum::<f64>() / finite.len() as f64
            };
            (low, mean)
        });
        let report = VideoReport {
            frames: self.frames,
            fps: if elapsed > 0.0 {
                f64::from(self.frames) / elapsed
            } else {
                0.0
            },
            width: self.size.0,
            height: self.size.1,
            freezes,
            longest_gap,
            lost: self.lost,
            latency_ms,
            psnr_db,
            kbps: if elapsed > 0.0 {
                (self.bytes as f64 * 8.0 / 1000.0 / elapsed).round() as u32
            } else {
                0
            },
            stages: StageMedians::of(&self.stages),
        };
        self.stages.clear();
        self.bytes = 0;
        self.period_start = now;
        self.frames = 0;
        self.freezes = 0;
        self.longest_gap = Duration::ZERO;
        self.lost = 0;
        self.latencies.clear();
        self.psnrs.clear();
        report
    }
}

/// One reporting period of our own video as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSendReport {
    /// Which of our videos (the camera unless said otherwise by the video loop).
    pub kind: super::VideoKind,
    /// Frames sealed and handed to the connections in the period.
    pub frames: u32,
    /// Frames per second over the period.
    pub fps: f64,
    /// Keyframes among them.
    pub keyframes: u32,
    /// Size of the last picture sent.
    pub width: u32,
    /// Size of the last picture sent.
    pub height: u32,
    /// Sealed video sent per connection, kbit/s.
    pub kbps: u32,
    /// Median and 95th percentile of capture → sealed (drawing or reading the picture,
    /// encoding, sealing), in ms.
    pub encode_ms: Option<(f64, f64)>,
    /// Frames dropped because a connection's send queue was full, since the start.
    pub not_sent: u64,
    /// What the encoder aims at now (the weakest path's estimate allows), kbit/s.
    pub target_kbps: u32,
    /// The CPU, not the network, holds the picture smaller (set by the video loop).
    pub cpu_limited: bool,
}

/// Measures our own video as sent (sans-IO: the caller times each frame).
#[derive(Debug)]
pub struct SendMonitor {
    period_start: Instant,
    frames: u32,
    keyframes: u32,
    size: (u32, u32),
    bytes: u64,
    encode_times: Vec<Duration>,
    not_sent: u64,
}

impl SendMonitor {
    /// A monitor whose first period starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            period_start: now,
            frames: 0,
            keyframes: 0,
            size: (0, 0),
            bytes: 0,
            encode_times: Vec::new(),
            not_sent: 0,
        }
    }

    /// A frame of `size` went out: `sealed_bytes` long, a keyframe or not, `took` from
    /// capture to sealed.
    pub fn sent(&mut self, size: (u32, u32), sealed_bytes: usize, keyframe: bool, took: Duration) {
        self.frames += 1;
        self.keyframes += u32::from(keyframe);
        self.size = size;
        self.bytes += sealed_bytes as u64;
        self.encode_times.push(took);
    }

    /// A frame found a connection's send queue full.
    pub fn not_sent(&mut self) {
        self.not_sent += 1;
    }

    /// The report of the period that ends at `now`, when the encoder aims at
    /// `target_kbps`; the next one starts.
    pub fn report(&mut self, now: Instant, target_kbps: u32) -> VideoSendReport {
        let elapsed = now
            .saturating_duration_since(self.period_start)
            .as_secs_f64();
        self.encode_times.sort_unstable();
        let at = |p: usize| {
            let last = self.encode_times.len().checked_sub(1)?;
            self.encode_times
                .get(last * p / 100)
                .map(|d| d.as_secs_f64() * 1000.0)
        };
        let report = VideoSendReport {
            kind: super::VideoKind::Camera,
            frames: self.frames,
            fps: per_second(f64::from(self.frames), elapsed),
            keyframes: self.keyframes,
            width: self.size.0,
            height: self.size.1,
            kbps: per_second(self.bytes as f64 * 8.0 / 1000.0, elapsed).round() as u32,
            encode_ms: at(50).zip(at(95)),
            not_sent: self.not_sent,
            target_kbps,
            cpu_limited: false,
        };
        self.period_start = now;
        self.frames = 0;
        self.keyframes = 0;
        self.bytes = 0;
        self.encode_times.clear();
        report
    }
}

/// `amount` per second over `elapsed` seconds (0 over no time).
fn per_second(amount: f64, elapsed: f64) -> f64 {
    if elapsed > 0.0 { amount / elapsed } else { 0.0 }
}

/// The `p`th percentile of sorted `values`.
fn percentile(values: &[u32], p: usize) -> Option<u32> {
    let last = values.len().checked_sub(1)?;
    values.get(last * p / 100).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_clock::t0;

    #[test]
    fn a_steady_stream_reports_its_rate_latency_and_quality() {
        let start = t0();
        let source = TestSource::new(320, 180).expect("valid size");
        let mut monitor = Monitor::new(start);
        for frame in 0..30u32 {
            let at = start + Duration::from_millis(u64::from(frame) * 33);
            let captured = 1_000_000 + u64::from(frame) * 33;
            let picture = source.draw(Stamp {
                frame,
                captured_ms: captured as u32,
            });
            monitor.shown(at, captured + 40 + u64::from(frame % 3), &picture);
        }
        let report = monitor.report(start + Duration::from_millis(990));
        assert_eq!(report.frames, 30);
        assert!((report.fps - 30.3).abs() < 0.5, "{}", report.fps);
        assert_eq!((report.width, report.height), (320, 180));
        assert_eq!((report.freezes, report.lost), (0, 0));
        assert_eq!(report.latency_ms, Some((41, 42)));
        assert_eq!(
            report.psnr_db,
            Some((f64::INFINITY, f64::INFINITY)),
            "exact pictures"
        );
        assert_eq!(report.stages, None, "no stage was measured");
        // The next period starts empty.
        let next = monitor.report(start + Duration::from_millis(1100));
        assert_eq!((next.frames, next.latency_ms), (0, None));
    }

    #[test]
    fn stage_times_are_reported_as_medians_per_period() {
        let start = t0();
        let mut monitor = Monitor::new(start);
        for (assembly, waiting, decode) in [(1, 10, 400), (3, 30, 500), (2, 20, 9_000)] {
            monitor.staged(ReceiveStages {
                assembly: Duration::from_millis(assembly),
                waiting: Duration::from_micros(waiting),
                decode: Duration::from_micros(decode),
            });
        }
        let stages = monitor
            .report(start + Duration::from_secs(1))
            .stages
            .expect("three pictures staged");
        assert_eq!(stages.assembly_ms, 2.0);
        assert!((stages.waiting_ms - 0.02).abs() < 1e-9);
        assert!((stages.decode_ms - 0.5).abs() < 1e-9);
        assert_eq!(monitor.report(start + Duration::from_secs(2)).stages, None);
    }

    #[test]
    fn what_we_send_is_reported_per_period() {
        let start = t0();
        let mut monitor = SendMonitor::new(start);
        for i in 0..30u64 {
            monitor.sent((640, 360), 4_000, i == 0, Duration::from_millis(2 + i % 3));
        }
        monitor.not_sent();
        let report = monitor.report(start + Duration::from_secs(1), 800);
        assert_eq!((report.frames, report.keyframes), (30, 1));
        assert_eq!((report.width, report.height), (640, 360));
        assert_eq!(report.kbps, 960, "30 × 4,000 bytes in a second");
        assert_eq!(report.encode_ms, Some((3.0, 4.0)));
        assert_eq!(report.not_sent, 1);
        let next = monitor.report(start + Duration::from_secs(2), 800);
        assert_eq!((next.frames, next.encode_ms, next.not_sent), (0, None, 1));
    }

    #[test]
    fn gaps_and_skipped_frames_are_freezes_and_losses() {
        let start = t0();
        let source = TestSource::new(320, 180).expect("valid size");
        let mut monitor = Monitor::new(start);
        for (frame, at_ms) in [(0u32, 0u64), (1, 33), (5, 700), (6, 733)] {
            let picture = source.draw(Stamp {
                frame,
                captured_ms: at_ms as u32,
            });
            monitor.shown(start + Duration::from_millis(at_ms), at_ms, &picture);
        }
        let report = monitor.report(start + Duration::from_millis(2000));
        assert_eq!(report.lost, 3);
        // The 667 ms gap, and the one still going on at the report.
        assert_eq!(report.freezes, 2);
        assert_eq!(report.longest_gap, Duration::from_millis(1267));
    }

    #[test]
    fn pictures_without_a_stamp_count_but_measure_nothing_else() {
        let start = t0();
        let mut monitor = Monitor::new(start);
        let plain = I420Frame::black(64, 32).expect("valid size");
        monitor.shown(start, 0, &plain);
        let report = monitor.report(start + Duration::from_millis(100));
        assert_eq!(report.frames, 1);
        assert_eq!((report.latency_ms, report.psnr_db), (None, None));
    }
}
