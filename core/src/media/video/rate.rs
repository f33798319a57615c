//! What our encoder aims at (sans-IO): the send estimate of every connection our video goes
//! to, less what audio and the packets' own overhead need, within what the picture size
//! needs and a floor.
//!
//! One encoder serves every receiver (a mesh encodes each layer once), so the weakest path
//! decides the rate for all of them; giving each receiver its own layer is the next step
//! (see docs/architecture.md, "Video rate").
//!
//! The rate goes down at once when an estimate falls, and up only once it has held higher for
//! [`RAISE_AFTER`]: an estimate that climbs and falls back (GCC probing) would otherwise
//! make the encoder overshoot the path right after each climb.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Kept for audio (Opus at up to 64 kbit/s with its RTP, SRTP and SFrame overhead).
pub const AUDIO_RESERVE_KBPS: u32 = 80;
/// Share of the rest the encoder may aim at: the remainder covers RTP and SRTP headers,
/// retransmissions and keyframes that come out larger than the rate allows.
pub const VIDEO_SHARE: f64 = 0.85;
/// The encoder never aims lower: below this VP8 pictures are more blur than picture.
pub const MIN_VIDEO_KBPS: u32 = 80;
/// How long a higher rate must hold before the encoder follows it up.
pub const RAISE_AFTER: Duration = Duration::from_millis(500);
/// Changes smaller than this share of the current rate are not made.
const DEADBAND: f64 = 0.05;

/// Decides the encoder's target from the connections' send estimates.
#[derive(Debug)]
pub struct RateControl {
    /// What the picture size needs at full quality (the encoder's own default).
    ceiling_kbps: u32,
    current_kbps: u32,
    /// The latest estimate of each connection our video goes to, bits per second.
    /// The latest estimate of each path, and whether it is only what we used lately.
    estimates: HashMap<PeerId, (f64, bool)>,
    /// Since when a higher target than the current one has been wanted.
    higher_since: Option<Instant>,
}

impl RateControl {
    /// Rate control for an encoder whose full-quality rate is `ceiling_kbps`; it starts
    /// there.
    pub fn new(ceiling_kbps: u32) -> Self {
        Self {
            ceiling_kbps,
            current_kbps: ceiling_kbps,
            estimates: HashMap::new(),
            higher_since: None,
        }
    }

    /// The encoder's target now, kbit/s.
    pub fn target_kbps(&self) -> u32 {
        self.current_kbps
    }

    /// The latest estimate of the path to `peer`.
    pub fn estimate(&mut self, peer: PeerId, bps: f64, limited_by_use: bool) {
        if bps.is_finite() && bps > 0.0 {
            self.estimates.insert(peer, (bps, limited_by_use));
        }
    }

    /// Our video no longer goes to `peer`.
    pub fn forget(&mut self, peer: &PeerId) {
        self.estimates.remove(peer);
    }

    /// What the encoder should aim at, at `now`: `Some` when that changed.
    pub fn update(&mut self, now: Instant) -> Option<u32> {
        let wanted = self.wanted_kbps();
        let current = self.current_kbps;
        let change = f64::from(wanted.abs_diff(current)) / f64::from(current.max(1));
        if wanted < current {
            self.higher_since = None;
            if change < DEADBAND {
                return None;
            }
            self.current_kbps = wanted;
            return Some(wanted);
        }
        if wanted == current || change < DEADBAND {
            self.higher_since = None;
            return None;
        }
        let since = *self.higher_since.get_or_insert(now);
        if now.saturating_duration_since(since) < RAISE_AFTER {
            return None;
        }
        self.higher_since = None;
        self.current_kbps = wanted;
        Some(wanted)
    }

    /// The rate the weakest path allows, within the floor and the ceiling.
    /// Changes the most ever aimed at (our videos started or stopped), and starts from what
    /// the paths allow of it: an estimate that is only what we used so far (audio alone, a
    /// still screen) says nothing of a path's limit, so a video that starts is not held to
    /// it (were it, nothing would ever show the path can carry more); an estimate that
    /// shows a limit is kept to.
    pub fn set_ceiling(&mut self, ceiling_kbps: u32) {
        self.ceiling_kbps = ceiling_kbps;
        self.current_kbps = self.usable_kbps(f64::INFINITY);
        self.higher_since = None;
    }

    fn wanted_kbps(&self) -> u32 {
        // An estimate that is only what we used (a still screen sends little) says nothing
        // of the path's limit: it holds the rate where it is rather than lower it.
        let holding =
            (f64::from(self.current_kbps) / VIDEO_SHARE + f64::from(AUDIO_RESERVE_KBPS)) * 1000.0;
        self.usable_kbps(holding)
    }

    /// The rate the weakest path allows, reading an estimate that is only what we used as
    /// at least `by_use_floor_bps`.
    fn usable_kbps(&self, by_use_floor_bps: f64) -> u32 {
        let weakest = self
            .estimates
            .values()
            .map(|&(bps, by_use)| {
                if by_use {
                    bps.max(by_use_floor_bps)
                } else {
                    bps
                }
            })
            .fold(f64::INFINITY, f64::min);
        if !weakest.is_finite() {
            return self.ceiling_kbps;
        }
        let usable = (weakest / 1000.0 - f64::from(AUDIO_RESERVE_KBPS)) * VIDEO_SHARE;
        (usable.max(0.0).round() as u32)
            .clamp(MIN_VIDEO_KBPS, self.ceiling_kbps.max(MIN_VIDEO_KBPS))
    }
}

/// Share of the rate a shared screen gets when the camera is on too: what the meeting looks
/// at comes first.
pub const SCREEN_SHARE: f64 = 0.75;

/// Shares `total_kbps` between our camera and our screen, each given by its full-quality
/// rate when it is sent (`None`: not sent). The screen gets [`SCREEN_SHARE`] of the rate, or
/// more where the camera needs less, up to its full rate; the camera the rest, at least
/// half of [`MIN_VIDEO_KBPS`] (and the screen at least [`MIN_VIDEO_KBPS`]).
pub fn split(
    total_kbps: u32,
    camera_full: Option<u32>,
    screen_full: Option<u32>,
) -> (Option<u32>, Option<u32>) {
    match (camera_full, screen_full) {
        (None, None) => (None, None),
        (Some(_), None) => (Some(total_kbps), None),
        (None, Some(_)) => (None, Some(total_kbps)),
        (Some(camera), Some(screen)) => {
            let screen_kbps = ((f64::from(total_kbps) * SCREEN_SHARE) as u32)
                .max(total_kbps.saturating_sub(camera))
                .min(screen);
            let camera_kbps = total_kbps
                .saturating_sub(screen_kbps)
                .max(MIN_VIDEO_KBPS / 2);
            let screen_kbps = total_kbps
                .saturating_sub(camera_kbps)
                .max(MIN_VIDEO_KBPS)
                .min(screen);
            (Some(camera_kbps), Some(screen_kbps))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    fn peers() -> (PeerId, PeerId) {
        (PeerId::random(), PeerId::random())
    }

    #[test]
    fn without_estimates_the_encoder_aims_at_full_quality() {
        let mut rate = RateControl::new(800);
        assert_eq!(rate.target_kbps(), 800);
        assert_eq!(rate.update(t0()), None);
    }

    #[test]
    fn the_weakest_path_decides_at_once_going_down() {
        let (a, b) = peers();
        let mut rate = RateControl::new(800);
        rate.estimate(a, 3_000_000.0, false);
        rate.estimate(b, 600_000.0, false);
        // (600 − 80) × 0.85 = 442.
        assert_eq!(rate.update(t0()), Some(442));
        assert_eq!(rate.target_kbps(), 442);
        // A path that collapses gives the floor, not less.
        rate.estimate(b, 50_000.0, false);
        assert_eq!(rate.update(t0()), Some(MIN_VIDEO_KBPS));
        // Once that receiver is gone, the others decide (after the hold, going up).
        rate.forget(&b);
        let start = t0();
        assert_eq!(rate.update(start), None);
        assert_eq!(rate.update(start + RAISE_AFTER), Some(800));
    }

    #[test]
    fn going_up_waits_until_the_higher_estimate_has_held() {
        let (a, _) = peers();
        let mut rate = RateControl::new(800);
        rate.estimate(a, 400_000.0, false);
        let start = t0();
        assert_eq!(rate.update(start), Some(272));
        rate.estimate(a, 700_000.0, false);
        assert_eq!(rate.update(start + Duration::from_millis(250)), None);
        // It fell back in between: the wait starts again.
        rate.estimate(a, 400_000.0, false);
        assert_eq!(rate.update(start + Duration::from_millis(375)), None);
        rate.estimate(a, 700_000.0, false);
        assert_eq!(rate.update(start + Duration::from_millis(500)), None);
        assert_eq!(rate.update(start + Duration::from_millis(750)), None);
        assert_eq!(rate.update(start + Duration::from_secs(1)), Some(527));
    }

    #[test]
    fn small_changes_are_not_made() {
        let (a, _) = peers();
        let mut rate = RateControl::new(800);
        rate.estimate(a, 500_000.0, false);
        assert_eq!(rate.update(t0()), Some(357));
        rate.estimate(a, 490_000.0, false);
        assert_eq!(rate.update(t0()), None, "349 is within 5 % of 357");
    }

    #[test]
    fn a_shared_screen_takes_most_of_the_rate_and_the_camera_the_rest() {
        assert_eq!(split(800, Some(800), None), (Some(800), None));
        assert_eq!(split(1200, None, Some(1200)), (None, Some(1200)));
        assert_eq!(split(500, None, None), (None, None));
        // A short path: three quarters to the screen.
        assert_eq!(split(612, Some(800), Some(1200)), (Some(153), Some(459)));
        // A wide one: the screen at its full rate, the camera what is left.
        assert_eq!(split(1800, Some(800), Some(1200)), (Some(600), Some(1200)));
        // A camera that needs little leaves the screen more than its share.
        assert_eq!(split(1000, Some(100), Some(1200)), (Some(100), Some(900)));
        // Both keep a floor when almost nothing is left.
        assert_eq!(split(90, Some(800), Some(1200)), (Some(40), Some(80)));
    }

    #[test]
    fn a_new_video_starts_at_what_the_paths_have_shown_they_carry() {
        let (a, b) = peers();
        let mut rate = RateControl::new(0);
        rate.set_ceiling(2000);
        assert_eq!(rate.target_kbps(), 2000, "no estimate yet");
        // Audio alone sent 40 kbit/s on each path: that is no limit for a new video.
        rate.estimate(a, 70_000.0, true);
        rate.estimate(b, 70_000.0, true);
        rate.set_ceiling(1300);
        assert_eq!(rate.target_kbps(), 1300);
        assert_eq!(rate.update(t0()), None, "and it holds");
        // A path that showed its limit is kept to.
        rate.estimate(b, 1_000_000.0, false);
        rate.set_ceiling(2000);
        assert_eq!(rate.target_kbps(), 782);
        rate.set_ceiling(500);
        assert_eq!(rate.target_kbps(), 500);
    }

    #[test]
    fn what_we_used_is_not_read_as_the_paths_limit() {
        let (a, b) = peers();
        let mut rate = RateControl::new(1200);
        // A still screen sent 30 kbit/s: the estimate is only 1.5 times that.
        rate.estimate(a, 55_000.0, true);
        assert_eq!(rate.update(t0()), None, "held at 1200");
        assert_eq!(rate.target_kbps(), 1200);
        // A real limit on another path still brings it down.
        rate.estimate(b, 600_000.0, false);
        assert_eq!(rate.update(t0()), Some(442));
        // And a path whose estimate shows its limit (GCC went lower) does too.
        rate.forget(&b);
        rate.estimate(a, 300_000.0, false);
        assert_eq!(rate.update(t0()), Some(187));
    }
}
