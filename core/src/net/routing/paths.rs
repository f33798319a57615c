//! Every open connection of the control plane and its liveness (sans-IO): the remote
//! address of each connection to a peer, which are proven to carry traffic, which have gone
//! quiet, and the round-trip time to each peer. [`super::Routing`] keeps its connections
//! here and nowhere else.
//!
//! libp2p's request-response spreads requests over *every* connection to a peer (by request
//! id) and has one global timeout, so a connection that is open but carries nothing — a
//! hole-punched QUIC connection whose other end never completed the handshake, or a direct
//! path whose NAT mapping expired — silently swallows every other request until the
//! transport's idle timeout closes it (10 s), and the peer looks dead although the relay
//! circuit beside it works. The choice made here (`docs/protocol.md` §4, *Paths*): a
//! connection beside another one must earn its place, or it is closed.
//!
//! - Every connection starts **unproven**; a ping answered on it (libp2p ping sends one at
//!   once on every new connection, then every [`PING_INTERVAL`]) **proves** it.
//! - An unproven connection still unproven after its probation window
//!   ([`PathTimers::probation`]) is closed if another connection to the same peer is
//!   proven and alive. A peer's only connection is never closed here: there is nothing
//!   better to move to, and the transport's own timeouts judge it.
//! - A proven connection with no answered ping for the staleness window
//!   ([`PathTimers::stale`]) while another connection to the peer answered more recently
//!   is closed too (a path that died while another works).
//! - The requests in flight on a closed connection fail with "connection closed"; the
//!   runtime sends them again on the peer's remaining connection (see `crate::runtime`), so
//!   nothing is lost and nobody's liveness suffers for a path that broke.
//! - The windows scale with the peer's measured round-trip time, so the same rules hold
//!   from a LAN to a 600 ms satellite path.
//!
//! Connections to relays are kept (with their address) but not judged: our circuit
//! reservation lives on one particular connection to a relay, and closing it would take
//! every circuit through it along.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::is_relayed;

/// How often libp2p ping probes every connection.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long one ping may take before libp2p reports it failed (the second failure in a
/// row is reported). Longer than any round trip Conclave supports.
pub const PING_TIMEOUT: Duration = Duration::from_secs(8);

/// RTT assumed for a peer before any ping has been answered: a long intercontinental path,
/// so that a slow peer is not judged by LAN standards before it was measured.
const DEFAULT_RTT: Duration = Duration::from_millis(300);

/// The windows of the rules above, as functions of the peer's round-trip time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTimers {
    /// Floor of the probation window.
    pub probation_floor: Duration,
    /// Floor of the staleness window.
    pub stale_floor: Duration,
    /// Ceiling of both windows.
    pub ceiling: Duration,
}

impl Default for PathTimers {
    fn default() -> Self {
        Self {
            probation_floor: Duration::from_millis(1500),
            stale_floor: Duration::from_secs(3),
            ceiling: Duration::from_secs(8),
        }
    }
}

impl PathTimers {
    /// How long a new connection may stay unproven: the first ping needs a stream to be
    /// opened and negotiated and an answer (two round trips), plus a lost packet's
    /// retransmission.
    pub fn probation(&self, rtt: Duration) -> Duration {
        (self.probation_floor + rtt * 4).min(self.ceiling)
    }

    /// How long a proven connection may go without an answered ping while another one
    /// answers: a few ping intervals and round trips, so one lost ping never closes a path.
    pub fn stale(&self, rtt: Duration) -> Duration {
        self.stale_floor
            .max(PING_INTERVAL * 2 + rtt * 4)
            .min(self.ceiling)
    }
}

#[derive(Debug, Clone)]
struct Conn {
    /// The remote address (a circuit address when relayed).
    remote: Multiaddr,
    relayed: bool,
    /// Whether liveness is tracked (not for connections to relays).
    judged: bool,
    opened: Instant,
    /// When a ping on it was last answered.
    last_ok: Option<Instant>,
    /// Smoothed RTT of this connection (RFC 6298 weights).
    srtt: Option<Duration>,
    /// Asked to close; waiting for the swarm to report it closed.
    closing: bool,
}

impl Conn {
    fn proven(&self) -> bool {
        self.last_ok.is_some()
    }
}

/// One peer's connections.
#[derive(Debug, Default)]
struct PeerPaths {
    conns: HashMap<ConnectionId, Conn>,
}

impl PeerPaths {
    /// The RTT the peer's timers use: the slowest live proven connection (requests are
    /// spread over all of them), else [`DEFAULT_RTT`].
    fn rtt(&self) -> Duration {
        self.conns
            .values()
            .filter(|c| !c.closing)
            .filter_map(|c| c.srtt)
            .max()
            .unwrap_or(DEFAULT_RTT)
    }

    /// The latest answer on any connection other than `except` that is not closing.
    fn latest_other_ok(&self, except: ConnectionId) -> Option<Instant> {
        self.conns
            .iter()
            .filter(|(id, c)| **id != except && !c.closing)
            .filter_map(|(_, c)| c.last_ok)
            .max()
    }
}

/// Why a connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Never answered a ping within its probation window.
    Unproven,
    /// Answered before, but not for the staleness window, while another path answers.
    Stale,
}

/// A connection the driver must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// Whose connection.
    pub peer: PeerId,
    /// Which one.
    pub connection: ConnectionId,
    /// Whether it was relayed (for the log).
    pub relayed: bool,
    /// Why.
    pub reason: CloseReason,
}

/// Connection liveness of every tracked peer. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Paths {
    timers: PathTimers,
    peers: HashMap<PeerId, PeerPaths>,
}

impl Paths {
    /// Tracking with these windows.
    pub fn new(timers: PathTimers) -> Self {
        Self {
            timers,
            peers: HashMap::new(),
        }
    }

    /// A connection to `peer` was established with remote address `remote`; its liveness is
    /// tracked if `judged` (never for a relay).
    pub fn opened(
        &mut self,
        now: Instant,
        peer: PeerId,
        connection: ConnectionId,
        remote: Multiaddr,
        judged: bool,
    ) {
        self.peers.entry(peer).or_default().conns.insert(
            connection,
            Conn {
                relayed: is_relayed(&remote),
                remote,
                judged,
                opened: now,
                last_ok: None,
                srtt: None,
                closing: false,
            },
        );
    }

    /// A connection closed (whoever closed it).
    pub fn closed(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(paths) = self.peers.get_mut(&peer) {
            paths.conns.remove(&connection);
            if paths.conns.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    /// A ping on `connection` was answered after `rtt`.
    pub fn ping_ok(&mut self, now: Instant, peer: PeerId, connection: ConnectionId, rtt: Duration) {
        let Some(conn) = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.conns.get_mut(&connection))
            .filter(|c| c.judged)
        else {
            return;
        };
        conn.last_ok = Some(now);
        conn.srtt = Some(match conn.srtt {
            None => rtt,
            Some(srtt) => (srtt * 7 + rtt) / 8,
        });
    }

    /// Whether any connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The remote addresses of the open connections to `peer`.
    pub fn remotes(&self, peer: &PeerId) -> impl Iterator<Item = &Multiaddr> {
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|p| p.conns.values().map(|c| &c.remote))
    }

    /// The connection the control path to `peer` uses: a direct one if any is open, else a
    /// relayed one; `None` without connections.
    pub fn control_remote(&self, peer: &PeerId) -> Option<Multiaddr> {
        let conns = &self.peers.get(peer)?.conns;
        conns
            .values()
            .find(|c| !c.relayed)
            .or_else(|| conns.values().next())
            .map(|c| c.remote.clone())
    }

    /// Whether `connection` to `peer` has carried an answered ping.
    pub fn is_proven(&self, peer: &PeerId, connection: ConnectionId) -> bool {
        self.peers
            .get(peer)
            .and_then(|p| p.conns.get(&connection))
            .is_some_and(Conn::proven)
    }

    /// The round-trip time `peer`'s timers should assume (the slowest live path; a
    /// conservative default before the first measurement).
    pub fn rtt(&self, peer: &PeerId) -> Duration {
        self.peers.get(peer).map_or(DEFAULT_RTT, PeerPaths::rtt)
    }

    /// The connections to close now; each is reported once.
    pub fn poll_close(&mut self, now: Instant) -> Vec<Close> {
        let mut closes = Vec::new();
        for (peer, paths) in &mut self.peers {
            let rtt = paths.rtt();
            let probation = self.timers.probation(rtt);
            let stale = self.timers.stale(rtt);
            let ids: Vec<ConnectionId> = paths.conns.keys().copied().collect();
            for id in ids {
                let Some(other) = paths.latest_other_ok(id) else {
                    // Nothing else to move to: never close a peer's last working path.
                    continue;
                };
                // The other path must be alive itself.
                if now.saturating_duration_since(other) >= stale {
                    continue;
                }
                let Some(conn) = paths.conns.get_mut(&id) else {
                    continue;
                };
                if conn.closing || !conn.judged {
                    continue;
                }
                let reason = match conn.last_ok {
                    None if now >= conn.opened + probation => CloseReason::Unproven,
                    Some(ok) if now >= ok + stale && other > ok => CloseReason::Stale,
                    _ => continue,
                };
                conn.closing = true;
                closes.push(Close {
                    peer: *peer,
                    connection: id,
                    relayed: conn.relayed,
                    reason,
                });
            }
        }
        closes
    }

    /// When, from `now` on, [`Paths::poll_close`] may next have something to report: the
    /// earliest probation or staleness deadline at which another path to the same peer is
    /// still alive. A deadline where nothing could be closed is left out (a peer's only
    /// path, or every path quiet): only a new answer, an input, can change that, and a
    /// deadline in the past would wake the caller over and over.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|paths| {
                let rtt = paths.rtt();
                let probation = self.timers.probation(rtt);
                let stale = self.timers.stale(rtt);
                paths
                    .conns
                    .iter()
                    .filter(|(_, c)| !c.closing && c.judged)
                    .filter_map(move |(id, c)| {
                        let other = paths.latest_other_ok(*id)?;
                        let due = match c.last_ok {
                            None => c.opened + probation,
                            // Stale only once another path answered more recently.
                            Some(ok) if other > ok => ok + stale,
                            Some(_) => return None,
                        };
                        let at = due.max(now);
                        (at.saturating_duration_since(other) < stale).then_some(at)
                    })
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Simulated time: connections open, pings get answered at scheduled times, and
    /// [`Paths::poll_close`] runs every 100 ms as the driver's timer would.
    struct Sim {
        paths: Paths,
        t0: Instant,
        now: u64,
        peer: PeerId,
        /// (time, connection, rtt) of answered pings still to come.
        answers: Vec<(u64, ConnectionId, u64)>,
        /// (time, connection, reason) of every close so far.
        closed: Vec<(u64, ConnectionId, CloseReason)>,
    }

    impl Sim {
        #[allow(clippy::disallowed_methods)] // the simulation's epoch; time is simulated from here
        fn new() -> Self {
            Self {
                paths: Paths::default(),
                t0: Instant::now(),
                now: 0,
                peer: PeerId::random(),
                answers: Vec::new(),
                closed: Vec::new(),
            }
        }
        fn at(&self, t: u64) -> Instant {
            self.t0 + ms(t)
        }
        fn open(&mut self, id: usize, relayed: bool) -> ConnectionId {
            let conn = ConnectionId::new_unchecked(id);
            let remote: Multiaddr = if relayed {
                "/ip4/192.0.2.1/tcp/4001/p2p-circuit"
            } else {
                "/ip4/198.51.100.7/udp/4001/quic-v1"
            }
            .parse()
            .expect("a valid address");
            self.paths
                .opened(self.at(self.now), self.peer, conn, remote, true);
            conn
        }
        /// Pings on `conn` answered every second from `from` to `to` (inclusive).
        fn answering(&mut self, conn: ConnectionId, rtt: u64, from: u64, to: u64) {
            let mut t = from;
            while t <= to {
                self.answers.push((t, conn, rtt));
                t += 1000;
            }
        }
        /// Runs to `until`, returning the closes that happened on the way.
        fn run(&mut self, until: u64) -> Vec<(u64, ConnectionId, CloseReason)> {
            let before = self.closed.len();
            while self.now < until {
                self.now = (self.now + 100).min(until);
                let now = self.now;
                let mut due: Vec<_> = self
                    .answers
                    .iter()
                    .copied()
                    .filter(|a| a.0 <= now)
                    .collect();
                due.sort_by_key(|a| a.0);
                self.answers.retain(|a| a.0 > now);
                for (t, conn, rtt) in due {
                    if self.closed.iter().all(|c| c.1 != conn) {
                        self.paths.ping_ok(self.at(t), self.peer, conn, ms(rtt));
                    }
                }
                for close in self.paths.poll_close(self.at(now)) {
                    self.closed.push((now, close.connection, close.reason));
                }
            }
            self.closed[before..].to_vec()
        }
    }

    #[test]
    fn a_punched_connection_that_never_answers_is_closed_after_probation() {
        let mut sim = Sim::new();
        let circuit = sim.open(1, true);
        sim.answering(circuit, 100, 100, 30_000);
        sim.run(1000);
        let direct = sim.open(2, false);
        // Probation at 100 ms RTT: 1.5 s + 4 × 100 ms = 1.9 s after it opened.
        assert!(sim.run(2800).is_empty());
        assert_eq!(sim.run(2900), vec![(2900, direct, CloseReason::Unproven)]);
        // Reported once.
        assert!(sim.run(30_000).is_empty());
    }

    #[test]
    fn a_punched_connection_that_answers_is_kept() {
        let mut sim = Sim::new();
        let circuit = sim.open(1, true);
        sim.answering(circuit, 100, 100, 60_000);
        sim.run(1000);
        let direct = sim.open(2, false);
        sim.answering(direct, 50, 1100, 60_000);
        assert!(sim.run(60_000).is_empty());
        assert!(sim.paths.is_proven(&sim.peer, direct));
    }

    #[test]
    fn a_peers_only_connection_is_never_closed() {
        let mut sim = Sim::new();
        let only = sim.open(1, false);
        assert!(sim.run(60_000).is_empty());
        sim.answering(only, 100, 61_000, 65_000);
        assert!(sim.run(200_000).is_empty());
    }

    #[test]
    fn two_unproven_connections_are_both_kept() {
        let mut sim = Sim::new();
        sim.open(1, true);
        sim.open(2, false);
        assert!(sim.run(30_000).is_empty());
    }

    #[test]
    fn a_path_that_dies_beside_a_working_one_is_closed_as_stale() {
        let mut sim = Sim::new();
        let circuit = sim.open(1, true);
        let direct = sim.open(2, false);
        sim.answering(circuit, 100, 100, 30_000);
        // The direct path answers until 10 s, then its NAT mapping is gone.
        sim.answering(direct, 40, 100, 10_100);
        // Staleness at ~100 ms: max(3 s, 2 s + 400 ms) = 3 s after its last answer.
        assert!(sim.run(13_000).is_empty());
        assert_eq!(sim.run(13_100), vec![(13_100, direct, CloseReason::Stale)]);
        assert!(sim.run(30_000).is_empty());
    }

    #[test]
    fn one_lost_ping_closes_nothing() {
        let mut sim = Sim::new();
        let circuit = sim.open(1, true);
        let direct = sim.open(2, false);
        sim.answering(circuit, 100, 100, 30_000);
        sim.answering(direct, 40, 100, 10_100);
        // The ping due at 11.1 s is lost; the next one is answered.
        sim.answering(direct, 40, 12_100, 30_000);
        assert!(sim.run(30_000).is_empty());
    }

    #[test]
    fn when_every_path_goes_quiet_none_is_closed() {
        // The peer itself is silent (killed, or our own network dropped): closing would
        // gain nothing; the meeting's liveness rules decide about the member.
        let mut sim = Sim::new();
        let a = sim.open(1, true);
        let b = sim.open(2, false);
        sim.answering(a, 100, 100, 5100);
        sim.answering(b, 100, 100, 5100);
        assert!(sim.run(60_000).is_empty());
    }

    #[test]
    fn windows_scale_with_the_round_trip_time() {
        let timers = PathTimers::default();
        assert_eq!(timers.probation(ms(0)), ms(1500));
        assert_eq!(timers.probation(ms(600)), ms(3900));
        assert_eq!(timers.stale(ms(10)), ms(3000));
        assert_eq!(timers.stale(ms(600)), ms(4400));
        assert_eq!(timers.probation(ms(5000)), timers.ceiling);
    }

    #[test]
    fn a_healthy_satellite_path_is_kept() {
        // At a 600 ms RTT, with 1 s pings, a new path's first answer comes after two round
        // trips, and one lost ping leaves a 2.6 s gap: neither closes it.
        let mut sim = Sim::new();
        let a = sim.open(1, true);
        sim.answering(a, 600, 600, 60_000);
        sim.run(2000);
        let b = sim.open(2, false);
        sim.answering(b, 600, 3300, 20_300);
        sim.answering(b, 600, 22_300, 60_000);
        assert!(sim.run(60_000).is_empty());
    }

    #[test]
    fn rtt_is_the_slowest_live_path_smoothed() {
        let mut sim = Sim::new();
        assert_eq!(sim.paths.rtt(&sim.peer), DEFAULT_RTT);
        let a = sim.open(1, true);
        let b = sim.open(2, false);
        sim.paths.ping_ok(sim.at(100), sim.peer, a, ms(200));
        sim.paths.ping_ok(sim.at(100), sim.peer, b, ms(40));
        assert_eq!(sim.paths.rtt(&sim.peer), ms(200));
        sim.paths.ping_ok(sim.at(1100), sim.peer, a, ms(120));
        assert_eq!(sim.paths.rtt(&sim.peer), ms(190));
        sim.paths.closed(sim.peer, a);
        assert_eq!(sim.paths.rtt(&sim.peer), ms(40));
        sim.paths.closed(sim.peer, b);
        assert_eq!(sim.paths.rtt(&sim.peer), DEFAULT_RTT);
    }

    #[test]
    fn next_deadline_covers_probation_and_staleness() {
        let mut sim = Sim::new();
        assert_eq!(sim.paths.next_deadline(sim.at(0)), None);
        let a = sim.open(1, true);
        // A peer's only connection is never closed: nothing to wake up for.
        assert_eq!(sim.paths.next_deadline(sim.at(0)), None);
        sim.paths.ping_ok(sim.at(100), sim.peer, a, ms(100));
        let b = sim.open(2, false);
        // `b` unproven beside a live `a`: probation at 100 ms, 1.5 s + 4 × 100 ms.
        assert_eq!(sim.paths.next_deadline(sim.at(100)), Some(sim.at(1900)));
        // A timer that fires late still finds it due while `a` is alive.
        sim.paths.ping_ok(sim.at(2000), sim.peer, a, ms(100));
        assert_eq!(sim.paths.next_deadline(sim.at(2500)), Some(sim.at(2500)));
        // Both proven, `b` answered last: `a` goes stale 3 s after its last answer.
        sim.paths.ping_ok(sim.at(2600), sim.peer, b, ms(100));
        assert_eq!(sim.paths.next_deadline(sim.at(2600)), Some(sim.at(5000)));
    }

    #[test]
    fn quiet_paths_set_no_deadline_that_could_close_nothing() {
        let mut sim = Sim::new();
        let a = sim.open(1, true);
        let b = sim.open(2, false);
        sim.paths.ping_ok(sim.at(100), sim.peer, a, ms(100));
        sim.paths.ping_ok(sim.at(100), sim.peer, b, ms(100));
        // Both quiet since 100 ms (the peer, or our network, is gone): nothing closes until
        // one answers again, so the caller is not woken over and over.
        assert!(sim.paths.poll_close(sim.at(10_000)).is_empty());
        assert_eq!(sim.paths.next_deadline(sim.at(10_000)), None);
        // One path answers again: the other is judged from then on.
        sim.paths.ping_ok(sim.at(10_100), sim.peer, a, ms(100));
        assert_eq!(
            sim.paths.next_deadline(sim.at(10_100)),
            Some(sim.at(10_100))
        );
        let closed = sim.paths.poll_close(sim.at(10_100));
        assert!(
            matches!(closed.as_slice(), [c] if c.connection == b && c.reason == CloseReason::Stale)
        );
        assert_eq!(sim.paths.next_deadline(sim.at(10_100)), None);
    }

    #[test]
    fn a_relays_connections_are_kept_but_never_judged() {
        let mut sim = Sim::new();
        let relay = PeerId::random();
        let quiet: Multiaddr = "/ip4/192.0.2.9/tcp/4001".parse().expect("a valid address");
        let other: Multiaddr = "/ip4/192.0.2.9/udp/4001/quic-v1"
            .parse()
            .expect("a valid address");
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        sim.paths.opened(sim.at(0), relay, a, quiet.clone(), false);
        sim.paths.opened(sim.at(0), relay, b, other.clone(), false);
        // Pings are answered on one only: neither is proven, measured or closed.
        sim.paths.ping_ok(sim.at(100), relay, b, ms(50));
        assert!(!sim.paths.is_proven(&relay, b));
        assert_eq!(sim.paths.rtt(&relay), DEFAULT_RTT);
        assert_eq!(sim.paths.next_deadline(sim.at(0)), None);
        assert!(sim.paths.poll_close(sim.at(60_000)).is_empty());
        assert!(sim.paths.is_connected(&relay));
        let mut remotes: Vec<_> = sim.paths.remotes(&relay).cloned().collect();
        remotes.sort();
        let mut expected = vec![quiet, other];
        expected.sort();
        assert_eq!(remotes, expected);
        sim.paths.closed(relay, a);
        sim.paths.closed(relay, b);
        assert!(!sim.paths.is_connected(&relay));
    }

    #[test]
    fn the_control_path_prefers_a_direct_connection() {
        let mut sim = Sim::new();
        assert_eq!(sim.paths.control_remote(&sim.peer), None);
        let circuit = sim.open(1, true);
        let relayed = sim.paths.control_remote(&sim.peer).expect("a connection");
        assert!(is_relayed(&relayed));
        let direct = sim.open(2, false);
        let remote = sim.paths.control_remote(&sim.peer).expect("a connection");
        assert!(!is_relayed(&remote));
        sim.paths.closed(sim.peer, direct);
        assert_eq!(sim.paths.control_remote(&sim.peer), Some(relayed));
        sim.paths.closed(sim.peer, circuit);
        assert_eq!(sim.paths.control_remote(&sim.peer), None);
    }
}
