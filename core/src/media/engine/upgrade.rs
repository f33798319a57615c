//! Relay first, direct later: a member whose connection went relayed gets a second
//! connection beside it that looks for a direct path, and that takes over once it has one.
//!
//! webrtc-rs' ICE agent (0.21) selects one candidate pair for good: a direct pair that
//! succeeds after a relayed one was nominated is never used. So the first connection to a
//! member accepts the first pair that works, relayed or not, and media flows at once. If
//! that pair is relayed, the offering side opens a second connection without relayed
//! candidates ([`Connection::direct_only`]), offered with `Signal::Upgrade`. It checks the
//! direct pairs in the background; once it is connected on a direct path, both sides:
//!
//! 1. send their audio on both connections for [`RETIRE_AFTER`] and their video on the new
//!    one only (each receiver drops the copies by their SFrame counters, which do not
//!    depend on the connection: the jitter buffer sees one stream);
//! 2. report `connection … connected` with the new path and the one it replaced;
//! 3. close the relayed connection after [`RETIRE_AFTER`] (frames still on their way over
//!    the relay arrive before that, and a peer whose handshake completed a flight later
//!    hears us meanwhile).
//!
//! An attempt that finds no direct path within [`UPGRADE_TIMEOUT`] is closed and made again
//! with fresh sockets and checks after a back-off ([`UPGRADE_RETRY_MIN`] doubling), at most
//! [`MAX_UPGRADE_ATTEMPTS`] times per connection: between two NATs that allow a direct path,
//! a round lost to a conntrack race or to a check lost on the way gets another chance,
//! and between two that never allow one the attempts stop.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use tracing::{debug, info};

use super::peer::{Connection, Pending};
use super::{Action, ConnId, ConnectionState, Engine, MediaPath};
use crate::media::MediaEvent;

/// How long a direct path attempt may take to connect before it is given up: ICE checks
/// through restrictive NATs and the DTLS handshake take a few round trips; a pair that
/// needs longer is not there.
pub(crate) const UPGRADE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a relayed connection replaced by a direct one stays open, carrying our audio
/// too: frames on their way over the relay arrive, and a peer whose side of the new
/// connection completed a flight later still hears us.
pub(crate) const RETIRE_AFTER: Duration = Duration::from_secs(3);
/// Wait after the first failed attempt before the next; doubled per attempt.
pub(crate) const UPGRADE_RETRY_MIN: Duration = Duration::from_secs(1);
/// Most direct path attempts beside one connection.
pub(crate) const MAX_UPGRADE_ATTEMPTS: u32 = 4;

/// The direct path attempts made beside one connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attempts {
    /// Attempts started so far.
    made: u32,
    /// When the attempt under way started.
    running_since: Option<Instant>,
    /// When the next attempt may start.
    next_at: Option<Instant>,
}

impl Attempts {
    /// Whether another attempt may start at `now`.
    fn may_start(&self, now: Instant) -> bool {
        self.running_since.is_none()
            && self.made < MAX_UPGRADE_ATTEMPTS
            && self.next_at.is_none_or(|at| now >= at)
    }

    fn started(&mut self, now: Instant) {
        self.made += 1;
        self.running_since = Some(now);
    }

    /// The attempt under way ended without a direct path: the next waits its back-off.
    fn failed(&mut self, now: Instant) {
        self.running_since = None;
        let doublings = self.made.saturating_sub(1).min(8);
        self.next_at = Some(now + UPGRADE_RETRY_MIN * 2u32.pow(doublings));
    }

    /// Whether the attempt under way has run out of time at `now`.
    fn timed_out(&self, now: Instant) -> bool {
        self.running_since
            .is_some_and(|since| now.saturating_duration_since(since) >= UPGRADE_TIMEOUT)
    }
}

impl Engine {
    /// Starts a direct path attempt to `peer` if we offer to it, its connection is
    /// connected over a relay, and no attempt is under way or waiting for its back-off.
    pub(super) fn maybe_upgrade(&mut self, now: Instant, peer: PeerId) {
        if self.relay_only || !self.offers_to(&peer) {
            return;
        }
        let due = self.members.get(&peer).is_some_and(|member| {
            let relayed = member.conn.as_ref().is_some_and(|conn| {
                conn.connected() && conn.broken.is_none() && conn.path == Some(MediaPath::Relayed)
            });
            relayed && member.upgrade.is_none() && member.upgrades.may_start(now)
        });
        if !due {
            return;
        }
        let id = self.new_conn_id();
        let Some(member) = self.members.get_mut(&peer) else {
            return;
        };
        member.upgrades.started(now);
        let attempt = member.upgrades.made;
        let mut conn = Connection::new(id, Pending::Offer);
        conn.direct_only = true;
        conn.unanswered_since = Some(now);
        member.upgrade = Some(conn);
        info!(peer = %peer, attempt, "relayed: looking for a direct path beside it");
        self.push(Action::Connect {
            peer,
            conn: id,
            direct_only: true,
        });
    }

    /// The other side looks for a direct path beside our connection: answered on a second
    /// connection (replacing an attempt of its before).
    pub(super) fn answer_upgrade(&mut self, now: Instant, from: PeerId, sdp: String) {
        if !self.members.contains_key(&from) {
            return;
        }
        let id = self.new_conn_id();
        let Some(member) = self.members.get_mut(&from) else {
            return;
        };
        let digest = super::offer_digest(&sdp);
        let mut conn = Connection::new(id, Pending::Answer { sdp, digest });
        conn.direct_only = true;
        conn.answering = Some((digest, now));
        let replaced = member.upgrade.replace(conn);
        member.upgrades.running_since = Some(now);
        if let Some(old) = replaced {
            self.push(Action::Close {
                peer: from,
                conn: old.id,
            });
        }
        debug!(peer = %from, "answering a direct path attempt");
        self.push(Action::Connect {
            peer: from,
            conn: id,
            direct_only: true,
        });
    }

    /// The direct path attempt `conn` to `peer` changed state.
    pub(super) fn upgrade_state(
        &mut self,
        now: Instant,
        peer: PeerId,
        conn: ConnId,
        state: ConnectionState,
    ) {
        let Some(upgrade) = self
            .members
            .get_mut(&peer)
            .and_then(|member| member.upgrade.as_mut())
            .filter(|upgrade| upgrade.id == conn)
        else {
            return;
        };
        debug!(peer = %peer, %state, "direct path attempt");
        upgrade.unanswered_since = None;
        upgrade.state = state;
        match state {
            ConnectionState::Connected => {
                upgrade.secured = true;
                upgrade.report_connected = true;
                self.push(Action::MeasurePath { peer, conn });
            }
            ConnectionState::Failed | ConnectionState::Closed => {
                self.give_up_upgrade(now, peer, "its checks failed");
            }
            _ => {}
        }
    }

    /// The path of the direct path attempt `conn` was measured: a direct one takes over.
    pub(super) fn upgrade_path(
        &mut self,
        now: Instant,
        peer: PeerId,
        conn: ConnId,
        measured: Option<(MediaPath, f64)>,
    ) {
        let Some(member) = self.members.get_mut(&peer) else {
            return;
        };
        let Some(upgrade) = member.upgrade.as_mut().filter(|upgrade| upgrade.id == conn) else {
            return;
        };
        if !upgrade.connected() || !std::mem::take(&mut upgrade.report_connected) {
            return;
        }
        match measured {
            Some((MediaPath::Direct, rtt)) => {
                upgrade.path = Some(MediaPath::Direct);
                upgrade.rtt_ms = Some(rtt);
                self.promote(now, peer);
            }
            _ => self.give_up_upgrade(now, peer, "no direct pair selected"),
        }
    }

    /// The direct connection takes over from the relayed one, which retires.
    fn promote(&mut self, now: Instant, peer: PeerId) {
        let Some(member) = self.members.get_mut(&peer) else {
            return;
        };
        let Some(upgrade) = member.upgrade.take() else {
            return;
        };
        member.upgrades = Attempts::default();
        let since_join = now.saturating_duration_since(member.since);
        let new = upgrade.id;
        let rtt_ms = upgrade.rtt_ms;
        let ice_restarts = upgrade.ice_restarts;
        let old = member.conn.replace(upgrade);
        let previous = old.as_ref().and_then(|old| old.path);
        info!(peer = %peer, ?since_join, "direct path found: it takes over from the relayed one");
        self.push(Action::SendAudio {
            peer,
            conn: new,
            on: true,
        });
        if let Some(old) = old {
            self.retiring.push((peer, old.id, now + RETIRE_AFTER));
        }
        self.report(MediaEvent::Connection {
            peer_id: peer,
            state: ConnectionState::Connected.as_str().to_owned(),
            path: MediaPath::Direct.as_str(),
            previous_path: previous.map(MediaPath::as_str),
            since_join_ms: millis(since_join),
            rtt_ms,
            ice_restarts,
        });
    }

    /// The direct path attempt to `peer` ended without a direct path: closed, and (on the
    /// offering side) made again after its back-off.
    pub(super) fn give_up_upgrade(&mut self, now: Instant, peer: PeerId, why: &str) {
        let Some(member) = self.members.get_mut(&peer) else {
            return;
        };
        let Some(upgrade) = member.upgrade.take() else {
            return;
        };
        member.upgrades.failed(now);
        let attempt = member.upgrades.made;
        info!(peer = %peer, attempt, why, "no direct path this time");
        self.push(Action::Close {
            peer,
            conn: upgrade.id,
        });
    }

    /// The periodic work of the upgrades: attempts that ran out of time are given up,
    /// relayed connections replaced long enough ago are closed, and relayed members whose
    /// back-off is over get their next attempt.
    pub(super) fn check_upgrades(&mut self, now: Instant) {
        let timed_out: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, member)| member.upgrade.is_some() && member.upgrades.timed_out(now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in timed_out {
            self.give_up_upgrade(now, peer, "it found no direct pair in time");
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|(_, _, at)| *at <= now);
        self.retiring = waiting;
        for (peer, conn, _) in due {
            debug!(peer = %peer, %conn, "closing the relayed connection a direct one replaced");
            self.push(Action::Close { peer, conn });
        }
        let peers: Vec<PeerId> = self.members.keys().copied().collect();
        for peer in peers {
            self.maybe_upgrade(now, peer);
        }
    }

    /// Closes `peer`'s direct path attempt and its retiring connections, if any (the
    /// member left, or its connection is replaced: a new one gets attempts afresh).
    pub(super) fn close_upgrade(&mut self, peer: &PeerId) {
        let attempt = self.members.get_mut(peer).and_then(|member| {
            member.upgrades = Attempts::default();
            member.upgrade.take()
        });
        let (retiring, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|(p, _, _)| p == peer);
        self.retiring = kept;
        let closing = attempt
            .map(|attempt| attempt.id)
            .into_iter()
            .chain(retiring.into_iter().map(|(_, conn, _)| conn));
        for conn in closing.collect::<Vec<_>>() {
            self.push(Action::Close { peer: *peer, conn });
        }
    }
}

/// Whole milliseconds of `duration`, saturating.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
