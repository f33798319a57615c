//! The meeting's timers and bounds ([`Config`]), and how the timers that wait for a peer
//! scale with its measured round-trip time (`docs/protocol.md` §9).

use std::time::Duration;

use crate::proto::control::MAX_MEMBERS;

/// Timers and bounds of a meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often peers greet each other.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer counts as gone. Must exceed the heartbeat interval.
    pub liveness_timeout: Duration,
    /// Least time between two hellos to the same candidate.
    pub hello_retry: Duration,
    /// How long a join may take before it is abandoned.
    pub join_timeout: Duration,
    /// How often a joiner greets every known peer again with a fresh key package while
    /// it waits for the MLS welcome.
    pub rehello_interval: Duration,
    /// How long a committer waits for acknowledgements.
    pub commit_timeout: Duration,
    /// How long a member keeps a staged commit without confirmation.
    pub staged_timeout: Duration,
    /// Pause after an aborted commit before trying again.
    pub commit_backoff: Duration,
    /// Delay between attempts to deliver a chat message to one member.
    pub chat_retry: Duration,
    /// Attempts to deliver a media signal or a state announcement to one member.
    pub chat_attempts: u32,
    /// How long a chat line is retried to one member before it counts as failed for it
    /// (and a receiver stops waiting for a line missing from a sender's sequence).
    pub chat_give_up: Duration,
    /// How long a joiner waits in a lobby for the host's approval.
    pub lobby_timeout: Duration,
    /// How long a joiner stays in a member's lobby without greeting it again (joiners
    /// greet every [`Config::rehello_interval`]).
    pub lobby_expiry: Duration,
    /// Most joiners waiting in the lobby at once.
    pub max_lobby: usize,
    /// Most members (including us).
    pub max_members: usize,
    /// Silence of the whole network (no ping answered by anyone) after which, with every
    /// member silent too, we count ourselves as the one cut off (`docs/protocol.md` §5
    /// rule 12).
    pub network_silence: Duration,
    /// How long the network may be back without any member answering before we stop
    /// reconnecting and count them as gone.
    pub reconnect_grace: Duration,
    /// Least time between two times we drop our group and join again (`docs/protocol.md`
    /// §5, "Epoch proofs"): even on valid evidence, a member cannot be knocked out of the
    /// group more often than this.
    pub rejoin_interval: Duration,
    /// How long a change may stay due (a kick, a goodbye, a member gone) without the
    /// committer committing it before the next member takes over (`docs/protocol.md` §6,
    /// "Commit rules"). Scaled by [`Config::takeover_after_for`].
    pub takeover_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            liveness_timeout: Duration::from_secs(3),
            hello_retry: Duration::from_secs(3),
            join_timeout: Duration::from_secs(30),
            rehello_interval: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(2),
            staged_timeout: Duration::from_secs(4),
            commit_backoff: Duration::from_millis(300),
            chat_retry: Duration::from_millis(300),
            chat_attempts: 8,
            chat_give_up: Duration::from_secs(30),
            lobby_timeout: Duration::from_secs(600),
            lobby_expiry: Duration::from_secs(30),
            max_lobby: 32,
            max_members: MAX_MEMBERS,
            network_silence: Duration::from_millis(1500),
            reconnect_grace: Duration::from_secs(5),
            rejoin_interval: Duration::from_secs(10),
            takeover_after: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Sets the heartbeat interval.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets the liveness timeout.
    pub fn with_liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = timeout;
        self
    }

    /// Sets the join timeout.
    pub fn with_join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// Silence after which a peer `rtt` away counts as gone: the configured floor, or two
    /// heartbeat intervals and three round trips (a heartbeat lost and retransmitted by the
    /// transport, answered late) if that is longer.
    pub fn liveness_for(&self, rtt: Duration) -> Duration {
        self.liveness_timeout
            .max(self.heartbeat_interval * 2 + rtt * 3)
    }

    /// Network silence after which we count ourselves cut off, when the slowest member is
    /// `rtt` away: the configured floor and half a round trip. Pings go out every second,
    /// so a working network is never silent for much more than a second; a dropped one has
    /// been silent for most of the liveness window when this is asked.
    pub fn network_silence_for(&self, rtt: Duration) -> Duration {
        self.network_silence + rtt / 2
    }

    /// How long a committer waits for acknowledgements when the slowest member is `rtt`
    /// away: the configured floor, or four round trips and half a second (a lost commit
    /// retransmitted, the member's staging work).
    pub fn commit_timeout_for(&self, rtt: Duration) -> Duration {
        self.commit_timeout
            .max(rtt * 4 + Duration::from_millis(500))
    }

    /// How long a due change may wait for the committer when the slowest member is `rtt`
    /// away: the configured floor, or three commit attempts (each with its timeout and
    /// back-off) after the member's silence was noticed, if that is longer.
    pub fn takeover_after_for(&self, rtt: Duration) -> Duration {
        self.takeover_after
            .max((self.commit_timeout_for(rtt) + self.commit_backoff) * 3 + self.liveness_for(rtt))
    }

    /// How long a member keeps a commit staged when its committer is `rtt` away: past the
    /// committer's own wait, with two more round trips for the confirmation to arrive.
    pub fn staged_timeout_for(&self, rtt: Duration) -> Duration {
        self.staged_timeout
            .max(self.commit_timeout_for(rtt) + rtt * 2)
    }
}
