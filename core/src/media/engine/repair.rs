//! The ICE-restart policy of a broken path: when the offering side restarts ICE again, and
//! when it gives up on restarts and replaces the connection. Pure: fed `now`.

use std::time::{Duration, Instant};

/// How long a path may stay `disconnected` before the offering side restarts ICE (it may
/// come back by itself first).
pub(crate) const RESTART_AFTER: Duration = Duration::from_secs(2);
/// Time an answered ICE restart gets before the next one, from its offer: both sides
/// gather afresh (a TURN allocation: two round trips to the relay), the answer comes back
/// over the control plane, and the checks through the NATs take another round trip or two
/// — well over two seconds at an intercontinental round-trip time. A restart before that
/// would throw away checks about to succeed (so a path that must be relayed would never
/// come back).
pub(crate) const RESTART_RETRY: Duration = Duration::from_millis(4500);
/// Time the first answered ICE restart of a path that was direct gets before the next one.
pub(crate) const RESTART_RETRY_DIRECT: Duration = Duration::from_secs(4);
/// Time after which a restart offer that got no answer is sent again (the signalling path
/// may have been down too, e.g. through a relay that restarted). The answerer may gather
/// for up to [`GATHER_TIMEOUT`](crate::media::transport::peer::GATHER_TIMEOUT) (+ 0.5 s)
/// before it answers; a new offer sent before that would make the answer on its way stale.
pub(crate) const RESTART_UNANSWERED_RETRY: Duration = Duration::from_secs(6);
/// Answered ICE restarts tried before the connection is replaced by a new one.
pub(crate) const MAX_ICE_RESTARTS: u32 = 3;

/// A connection whose path stopped working, and what we did about it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrokenPath {
    pub(crate) since: Instant,
    /// Whether the path was relayed (TURN) when it broke.
    pub(crate) relayed: bool,
    /// ICE restarts offered so far.
    pub(crate) attempts: u32,
    /// How many of them the other side answered.
    pub(crate) answered: u32,
    /// The latest restart offer, and whether its answer came.
    pub(crate) last_attempt: Option<(Instant, bool)>,
}

impl BrokenPath {
    pub(crate) fn new(since: Instant, relayed: bool) -> Self {
        Self {
            since,
            relayed,
            attempts: 0,
            answered: 0,
            last_attempt: None,
        }
    }

    /// Whether the offering side should restart ICE (again) at `now`: once the path has been
    /// down for [`RESTART_AFTER`]; again [`RESTART_UNANSWERED_RETRY`] after an offer that was
    /// not answered (lost on the way), or [`RESTART_RETRY`] after one that was, so that its
    /// connectivity checks get the time a relayed pair needs. A path that was direct may well
    /// come back the same way soon: its first answered restart gets only
    /// [`RESTART_RETRY_DIRECT`] (the checks of a generation give up after a few seconds),
    /// every later one the full wait, so that a relayed fallback can still win.
    pub(crate) fn restart_due(&self, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) < RESTART_AFTER {
            return false;
        }
        match self.last_attempt {
            None => true,
            Some((at, false)) => now.saturating_duration_since(at) >= RESTART_UNANSWERED_RETRY,
            Some((at, true)) => {
                let wait = if !self.relayed && self.answered <= 1 {
                    RESTART_RETRY_DIRECT
                } else {
                    RESTART_RETRY
                };
                now.saturating_duration_since(at) >= wait
            }
        }
    }

    /// A restart offer goes out at `now`.
    pub(crate) fn attempt(&mut self, now: Instant) {
        self.attempts += 1;
        self.last_attempt = Some((now, false));
    }

    /// The answer to the latest restart offer arrived.
    pub(crate) fn answered(&mut self) {
        if let Some((_, answered @ false)) = self.last_attempt.as_mut() {
            *answered = true;
            self.answered += 1;
        }
    }

    /// The path failed outright: no point waiting for it to come back by itself.
    pub(crate) fn failed(&mut self, now: Instant) {
        if let Some(due) = now.checked_sub(RESTART_AFTER) {
            self.since = self.since.min(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_clock::t0;

    #[test]
    fn restarts_wait_for_the_path_then_retry_lost_offers_soon_and_answered_ones_late() {
        let t0 = t0();
        let mut broken = BrokenPath::new(t0, true);
        assert!(
            !broken.restart_due(t0 + RESTART_AFTER / 2),
            "may come back by itself"
        );
        assert!(broken.restart_due(t0 + RESTART_AFTER));

        // An offer nobody answered (the signalling path was down too) goes again soon.
        let first = t0 + RESTART_AFTER;
        broken.attempt(first);
        assert_eq!(broken.attempts, 1);
        assert!(!broken.restart_due(first + RESTART_UNANSWERED_RETRY / 2));
        assert!(broken.restart_due(first + RESTART_UNANSWERED_RETRY));

        // An answered one gets longer than a relayed pair needs before it may be chosen.
        let second = first + RESTART_UNANSWERED_RETRY;
        broken.attempt(second);
        assert_eq!(broken.attempts, 2);
        broken.answered();
        broken.answered(); // counted once per offer
        assert_eq!(broken.answered, 1);
        assert!(!broken.restart_due(second + RESTART_RETRY - Duration::from_millis(1)));
        assert!(broken.restart_due(second + RESTART_RETRY));
    }

    #[test]
    fn a_direct_path_is_retried_sooner_once_then_with_the_relay_wait() {
        let t0 = t0();
        let mut broken = BrokenPath::new(t0, false);
        let first = t0 + RESTART_AFTER;
        broken.attempt(first);
        broken.answered();
        assert!(!broken.restart_due(first + RESTART_RETRY_DIRECT / 2));
        assert!(broken.restart_due(first + RESTART_RETRY_DIRECT));
        let second = first + RESTART_RETRY_DIRECT;
        broken.attempt(second);
        broken.answered();
        assert!(!broken.restart_due(second + RESTART_RETRY_DIRECT));
        assert!(broken.restart_due(second + RESTART_RETRY));
    }
}
