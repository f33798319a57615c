//! Keeping up when the CPU cannot (sans-IO): a sender whose capture → sealed time fills
//! most of its frame interval is sending a picture too large for this machine, whatever the
//! network allows. Frames are never queued for the encoder (the video loop skips a capture
//! that is a whole frame late), so an overloaded encoder shows as lost frame rate; this
//! guard brings the picture down a layer instead, and back up once the load has stayed low.
//!
//! The measure is the share of wall time spent capturing, encoding and sealing (as
//! libwebrtc's overuse detector measures encode usage): over [`OVERUSE_SHARE`] for
//! [`OVERUSE_PERIODS`] one-second periods in a row — or fewer captures than
//! [`ON_TIME_SHARE`] of those due — halves the largest size allowed; under
//! [`UNDERUSE_SHARE`] for [`UNDERUSE_PERIODS`] periods doubles it again (and a larger size
//! that overloads at once makes the next try wait twice as long). Wall time, not CPU
//! time: a thread starved by other work or throttled by its cgroup is as late as a slow one.

use std::time::{Duration, Instant};

/// A measuring period.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Busy share of a period above which the sender is overloaded.
pub const OVERUSE_SHARE: f64 = 0.8;
/// Periods in a row overloaded before the size goes down.
pub const OVERUSE_PERIODS: u32 = 2;
/// Busy share of a period under which a larger size may be tried: a size up has four
/// times the pixels, so only a load that stays under [`OVERUSE_SHARE`] four times over.
pub const UNDERUSE_SHARE: f64 = 0.2;
/// Periods in a row under [`UNDERUSE_SHARE`] before the size goes up.
pub const UNDERUSE_PERIODS: u32 = 10;
/// Share of the frames due in a period that must have been captured: fewer, and the
/// sender is late (captures a whole frame late are skipped, not queued), so overloaded
/// whatever its busy share says (a thread throttled or starved between frames).
pub const ON_TIME_SHARE: f64 = 0.9;
/// The smallest size the guard asks for: the source's size divided by this.
pub const MAX_FACTOR: u32 = 4;
/// A larger size that overloads within this time was a mistake: the next try waits twice
/// as long (up to [`MAX_UNDERUSE_PERIODS`]), so the size does not swing.
pub const FAILED_TRY: Duration = Duration::from_secs(10);
/// Longest wait, in periods, before trying a larger size.
pub const MAX_UNDERUSE_PERIODS: u32 = 60;

/// The guard of one sender.
#[derive(Debug)]
pub struct CpuGuard {
    period_start: Instant,
    busy: Duration,
    /// Captures in this period.
    captures: u32,
    over: u32,
    under: u32,
    /// Pictures are at most the source's size divided by this (1: no limit).
    min_factor: u32,
    /// Periods under [`UNDERUSE_SHARE`] needed before the next larger size.
    underuse_periods: u32,
    /// When the size last went up.
    last_up: Option<Instant>,
}

impl CpuGuard {
    /// A guard starting its first period at `now`, with no limit.
    pub fn new(now: Instant) -> Self {
        Self {
            period_start: now,
            busy: Duration::ZERO,
            captures: 0,
            over: 0,
            under: 0,
            min_factor: 1,
            underuse_periods: UNDERUSE_PERIODS,
            last_up: None,
        }
    }

    /// The size divisor the sender must stay at or above.
    pub fn min_factor(&self) -> u32 {
        self.min_factor
    }

    /// Whether the CPU, not the network, limits the size now.
    pub fn is_limiting(&self) -> bool {
        self.min_factor > 1
    }

    /// One capture, due every `interval`, took `busy` until sealed (or dropped by the
    /// encoder), ending at `now`; returns the new size divisor when it changed.
    pub fn frame(&mut self, now: Instant, busy: Duration, interval: Duration) -> Option<u32> {
        self.busy += busy;
        self.captures += 1;
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed < PERIOD {
            return None;
        }
        let share = self.busy.as_secs_f64() / elapsed.as_secs_f64();
        let due = (elapsed.as_secs_f64() / interval.as_secs_f64().max(1e-3)).floor();
        let late = f64::from(self.captures) < ON_TIME_SHARE * due;
        self.period_start = now;
        self.busy = Duration::ZERO;
        self.captures = 0;
        if share > OVERUSE_SHARE || late {
            self.under = 0;
            self.over += 1;
            if self.over >= OVERUSE_PERIODS && self.min_factor < MAX_FACTOR {
                self.over = 0;
                self.min_factor *= 2;
                if self
                    .last_up
                    .is_some_and(|up| now.saturating_duration_since(up) < FAILED_TRY)
                {
                    self.underuse_periods = (self.underuse_periods * 2).min(MAX_UNDERUSE_PERIODS);
                }
                tracing::info!(
                    share,
                    late,
                    min_factor = self.min_factor,
                    "video encoder overloaded: a smaller picture"
                );
                return Some(self.min_factor);
            }
        } else if share < UNDERUSE_SHARE {
            self.over = 0;
            self.under += 1;
            if self.under >= self.underuse_periods && self.min_factor > 1 {
                self.under = 0;
                self.min_factor /= 2;
                self.last_up = Some(now);
                tracing::info!(
                    share,
                    min_factor = self.min_factor,
                    "video encoder has room: a larger picture"
                );
                return Some(self.min_factor);
            }
        } else {
            self.over = 0;
            self.under = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    const HEAVY: Duration = Duration::from_millis(30);
    const LIGHT: Duration = Duration::from_millis(5);

    /// Feeds `seconds` of captures from `start + from` seconds at `fps` (of 30 due a
    /// second), each busy `busy`; returns the changes.
    fn run(guard: &mut CpuGuard, from: u64, seconds: u32, fps: u32, busy: Duration) -> Vec<u32> {
        let start = t0() + Duration::from_secs(from);
        (1..=u64::from(seconds * fps))
            .filter_map(|n| {
                let at = start + Duration::from_micros(1_000_000 * n / u64::from(fps));
                guard.frame(at, busy, Duration::from_secs(1) / 30)
            })
            .collect()
    }

    #[test]
    fn an_encoder_that_fills_its_frames_gets_a_smaller_picture() {
        let mut guard = CpuGuard::new(t0());
        // 30 fps at 30 ms a capture: 90 % busy. Two periods, then a halving.
        assert_eq!(run(&mut guard, 0, 2, 30, HEAVY), vec![2]);
        assert!(guard.is_limiting());
        // Still overloaded at the half size: down to a quarter, and no further.
        assert_eq!(run(&mut guard, 2, 6, 30, HEAVY), vec![4]);
        assert_eq!(guard.min_factor(), MAX_FACTOR);
    }

    #[test]
    fn a_passing_peak_changes_nothing_and_room_brings_the_size_back() {
        let mut guard = CpuGuard::new(t0());
        // One overloaded second between normal ones: no change.
        assert!(run(&mut guard, 0, 1, 30, HEAVY).is_empty());
        assert!(run(&mut guard, 1, 1, 30, Duration::from_millis(15)).is_empty());
        assert!(run(&mut guard, 2, 1, 30, HEAVY).is_empty());
        assert_eq!(guard.min_factor(), 1);
        // Overloaded for good: halved; then light for ten seconds: back.
        assert_eq!(run(&mut guard, 3, 2, 30, HEAVY), vec![2]);
        assert_eq!(run(&mut guard, 5, 10, 30, LIGHT), vec![1]);
        assert!(!guard.is_limiting());
    }

    #[test]
    fn a_larger_size_that_overloads_at_once_is_tried_again_later() {
        let mut guard = CpuGuard::new(t0());
        assert_eq!(run(&mut guard, 0, 2, 30, HEAVY), vec![2]);
        assert_eq!(run(&mut guard, 2, 10, 30, LIGHT), vec![1]);
        // The full size overloads again at once: down, and the next try waits 20 s.
        assert_eq!(run(&mut guard, 12, 2, 30, HEAVY), vec![2]);
        assert!(run(&mut guard, 14, 19, 30, LIGHT).is_empty());
        assert_eq!(run(&mut guard, 33, 1, 30, LIGHT), vec![1]);
    }

    #[test]
    fn a_sender_that_misses_its_frames_is_overloaded_whatever_its_busy_share() {
        let mut guard = CpuGuard::new(t0());
        // 18 of the 30 captures due a second, each 20 ms: 36 % busy, but late.
        assert_eq!(
            run(&mut guard, 0, 2, 18, Duration::from_millis(20)),
            vec![2]
        );
    }
}
