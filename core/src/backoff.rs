//! Exponential back-off with jitter for every retry: control plane and chat (sans-IO).
//!
//! One [`Backoff`] per thing retried (a relay's reservation, the redial of lost relays, a
//! peer's hole punching, the TURN credential round, the joiner's DHT look-ups). The caller
//! owns the clock: [`Backoff::next_delay`] only says how long to wait before the next
//! attempt, and the driver schedules it.
//!
//! The nominal delay of attempt `n` (counting from 0) is `min · 2ⁿ`, capped at `max`. The
//! delay returned is drawn uniformly from the upper half of it, `[nominal / 2, nominal]`
//! ("equal jitter"): the jitter spreads clients that failed together (five clients refused
//! by one full relay do not come back in step), and the floor of half the nominal delay
//! bounds the attempt rate for certain. With `min = 1 s` and `max = 30 s` at most eight
//! attempts fit in a minute whatever the random draws, where full jitter (`[0, nominal]`)
//! could, by chance, retry at once several times in a row.
//!
//! [`Backoff::reset`] after a success: the next failure starts again from `min`.

use std::time::Duration;

use rand::Rng;

/// Exponential back-off with equal jitter, capped (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A back-off whose first delay is at most `min` and that never waits longer than
    /// `max` (raised to `min` if smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The wait before the next attempt, drawn from `[nominal / 2, nominal]` where the
    /// nominal delay doubles with every call from `min` up to `max`.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let nominal = self.nominal();
        // Stop counting once capped: the nominal delay stays `max`, and `attempt` cannot
        // overflow however long the failures last.
        if nominal < self.max {
            self.attempt = self.attempt.saturating_add(1);
        }
        let floor = nominal / 2;
        let spread = u64::try_from((nominal - floor).as_micros()).unwrap_or(u64::MAX);
        floor + Duration::from_micros(rng.gen_range(0..=spread))
    }

    /// The nominal delay of the next attempt: `min · 2^attempt`, at most `max`.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// How many delays were handed out since the last [`reset`](Self::reset) (stops
    /// growing once the cap is reached).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Changes the cap (the driver lowers it while in a meeting); `min` stays the floor.
    pub fn set_max(&mut self, max: Duration) {
        self.max = max.max(self.min);
    }

    /// Forgets the failures: the next delay is again at most `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_from_min_to_max_within_the_upper_half() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut backoff = Backoff::new(ms(250), ms(2000));
            for nominal in [250, 500, 1000, 2000, 2000, 2000] {
                let delay = backoff.next_delay(&mut rng);
                assert!(
                    delay >= ms(nominal / 2) && delay <= ms(nominal),
                    "{delay:?} outside [{}, {nominal}] ms",
                    nominal / 2
                );
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let mut rng = StdRng::seed_from_u64(1);
        let firsts: Vec<Duration> = (0..50)
            .map(|_| Backoff::new(ms(1000), ms(30_000)).next_delay(&mut rng))
            .collect();
        let mut distinct = firsts.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 40,
            "fifty clients failing together spread out: {firsts:?}"
        );
        let spread = distinct[distinct.len() - 1] - distinct[0];
        assert!(spread > ms(300), "over the upper half of 1 s: {spread:?}");
    }

    #[test]
    fn reset_starts_again_from_min() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(ms(100), ms(10_000));
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        assert_eq!(backoff.nominal(), ms(10_000));
        backoff.reset();
        assert_eq!(backoff.attempt(), 0);
        assert!(backoff.next_delay(&mut rng) <= ms(100));
    }

    #[test]
    fn attempts_in_a_minute_are_bounded_whatever_the_draws() {
        // The bound the relay test relies on: min 1 s, cap 30 s, every draw at its floor.
        let mut backoff = Backoff::new(ms(1000), ms(30_000));
        let mut floor_rng = rand::rngs::mock::StepRng::new(0, 0);
        let mut elapsed = Duration::ZERO;
        let mut attempts = 1; // the first one goes out at once
        loop {
            elapsed += backoff.next_delay(&mut floor_rng);
            if elapsed > Duration::from_secs(60) {
                break;
            }
            attempts += 1;
        }
        assert_eq!(attempts, 8);
    }

    #[test]
    fn the_cap_holds_for_ever_and_never_overflows() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..10_000 {
            assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(60));
        }
        assert!(backoff.attempt() < 10);
    }

    #[test]
    fn a_cap_below_min_is_raised_and_can_be_lowered_again() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut backoff = Backoff::new(ms(500), ms(100));
        assert_eq!(backoff.nominal(), ms(500));
        backoff.set_max(ms(30_000));
        for _ in 0..8 {
            backoff.next_delay(&mut rng);
        }
        backoff.set_max(ms(2000));
        let delay = backoff.next_delay(&mut rng);
        assert!(delay >= ms(1000) && delay <= ms(2000), "{delay:?}");
    }

    #[test]
    fn zero_min_never_waits() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.next_delay(&mut rng), Duration::ZERO);
    }
}
