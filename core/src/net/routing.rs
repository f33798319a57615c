//! How the control plane reaches peers and relays (sans-IO): the address book, the relays
//! and their circuit reservations, redials, hole-punching retries, and the connections to
//! every peer with their proven paths.
//!
//! The runtime feeds [`Routing`] what the swarm reports (`handle_*`, with `now`), asks it
//! for routes ([`Routing::routes_to`]), and carries out what it decides, drained from
//! [`Routing::poll_action`] after every input: dial, listen on a relay circuit (a
//! reservation), close a connection, report a changed control path. [`Routing::poll_timeout`]
//! is the next retry; [`Routing::handle_timeout`] runs it. No clock, no swarm, no tasks:
//! time is an argument and the jitter comes from the injected random source.
//!
//! Every retry waits with exponential back-off and jitter ([`Backoff`]):
//! - **Reservations**, per relay: a refused one is asked again after
//!   [`RESERVE_RETRY_MIN`]…[`RESERVE_RETRY_MAX`] (capped at
//!   [`RESERVE_RETRY_MAX_IN_MEETING`] in a meeting); one that held and was lost is asked
//!   again at once on reconnection, or after the reset back-off. A relay that answered that
//!   it offers no circuit relay (no hop protocol), or whose identify lists none, is never
//!   asked again this session and not used for circuits ("no-hop").
//! - **Relay redials**: a relay whose last connection closed is dialed again after
//!   [`RELAY_REDIAL_MIN`]…[`RELAY_REDIAL_MAX`] ([`RELAY_REDIAL_MAX_IN_MEETING`] in a
//!   meeting), until every relay is connected.
//! - **Hole punching**: after a failed DCUtR round a fresh circuit is dialed (DCUtR runs
//!   on every new relayed connection), at most [`HOLE_PUNCH_RETRIES`] times per peer while
//!   connected, and never once the path is direct.
//!
//! Connections are tracked once, in [`paths::Paths`]: their remote address, and for
//! peers other than relays whether they are proven (a ping answered on them) and their
//! round-trip time. The control path reported per peer is direct while any connection to
//! it is not a relay circuit, relayed otherwise, and each change is reported once.

pub mod paths;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::relay::outbound::hop::ReserveError;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::PeerCondition;
use libp2p::{Multiaddr, PeerId, StreamProtocol, relay};
use rand::rngs::StdRng;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::invite::peer_of;
use paths::{Close, CloseReason, Paths};

/// Most remembered addresses per peer in the address book.
pub const ADDR_BOOK_PER_PEER: usize = 8;
/// Most peers in the address book.
pub const ADDR_BOOK_PEERS: usize = 1024;
/// First wait before dialing a lost relay again (a restarted relay is usually back within
/// this); doubled per failure up to [`RELAY_REDIAL_MAX`], every wait jittered
/// ([`Backoff`]).
pub const RELAY_REDIAL_MIN: Duration = Duration::from_millis(250);
/// Longest wait between attempts to reach a lost relay.
pub const RELAY_REDIAL_MAX: Duration = Duration::from_secs(30);
/// Longest wait between attempts during a meeting: the members' calls through the relay
/// recover only once we are back, so a relay that returns must be found within seconds.
pub const RELAY_REDIAL_MAX_IN_MEETING: Duration = Duration::from_secs(2);
/// First wait before asking a relay that refused a reservation (full, rate-limited, or the
/// request failed) again; doubled per refusal up to [`RESERVE_RETRY_MAX`]. A reservation
/// that held and was lost is asked for again within this, or at once on reconnection.
pub const RESERVE_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reservation attempts at one relay.
pub const RESERVE_RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest wait between reservation attempts during a meeting (a member without a
/// reservation cannot be reached through that relay).
pub const RESERVE_RETRY_MAX_IN_MEETING: Duration = Duration::from_secs(10);
/// First wait before dialing a fresh circuit for another hole punching round.
pub const HOLE_PUNCH_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between hole punching rounds.
pub const HOLE_PUNCH_RETRY_MAX: Duration = Duration::from_secs(8);
/// Most hole punching rounds over fresh circuits per peer while connected.
pub const HOLE_PUNCH_RETRIES: u32 = 3;

/// Shortest time between two dials of every route to one peer after failed dials
/// ([`Routing::dial_every_route`]).
pub const EVERY_ROUTE_REDIAL_GAP: Duration = Duration::from_secs(1);
/// How long our requests may wait for a dial to a peer before every route to it is dialed
/// besides ([`Routing::handle_requests_waiting`]). A dial to a private address or through
/// a port-restricted NAT hangs until its handshake times out (5 s and more), and libp2p
/// starts no other dial for the requests meanwhile; the peer's circuit answers within a
/// few round trips.
pub const STALLED_DIAL_AFTER: Duration = Duration::from_millis(1500);
/// Most dials of every route per wait of our requests for a peer
/// ([`STALLED_DIAL_AFTER`] apart); a request sent after re-arms it.
pub const STALLED_DIAL_ROUNDS: u8 = 4;

/// What the runtime must do on the swarm, drained from [`Routing::poll_action`].
#[derive(Debug, Clone)]
pub enum Action {
    /// Dial `peer` on `addrs` (never empty) when `condition` holds; `what` names the dial in
    /// the logs.
    Dial {
        /// Whom.
        peer: PeerId,
        /// Where.
        addrs: Vec<Multiaddr>,
        /// When the swarm should go ahead.
        condition: PeerCondition,
        /// Why, for the logs.
        what: &'static str,
    },
    /// Ask `relay` for a circuit reservation: listen on `addr` (the relay's address with
    /// `/p2p-circuit`), then report the listener with [`Routing::handle_reserving`] or the
    /// failure with [`Routing::handle_reserve_failed`].
    Reserve {
        /// The relay.
        relay: PeerId,
        /// The circuit address to listen on.
        addr: Multiaddr,
    },
    /// Close a control connection that carries nothing ([`paths`]).
    Close(Close),
    /// The control path to `peer` changed (relays are not reported).
    PathChanged {
        /// The peer.
        peer: PeerId,
        /// Whether a direct (not relayed) connection is open.
        direct: bool,
        /// The remote address of the connection that path uses.
        remote: Multiaddr,
    },
    /// The last connection to `relay` closed: relayed media paths may have gone with it.
    RelayLost(PeerId),
}

/// A retry carried out when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Retry {
    /// Ask the relay for a circuit reservation again.
    Reserve(PeerId),
    /// Dial a fresh circuit to the peer for another hole punching round.
    HolePunch(PeerId),
}

/// A circuit reservation asked for at one relay.
#[derive(Debug, Clone, Copy, Default)]
struct Reservation {
    /// The circuit listener, once the runtime reported it.
    listener: Option<ListenerId>,
    /// Whether the relay accepted it.
    held: bool,
}

/// How a reservation ended.
#[derive(Debug, Clone, Copy)]
struct Ended<'a> {
    /// Whether the relay had accepted it.
    held: bool,
    /// Why the listener closed, if it failed.
    error: Option<&'a io::Error>,
    /// Whether the connection to the relay is still up.
    connected: bool,
    /// Whether we are in a meeting (shorter waits).
    in_meeting: bool,
}

/// The control plane's routing state. See the [module docs](self).
#[derive(Debug)]
pub struct Routing {
    /// Randomness for the back-off jitter.
    rng: StdRng,
    /// Our listen addresses (circuit addresses included while reservations hold).
    listen_addrs: Vec<Multiaddr>,
    /// Addresses we learnt per peer, at most [`ADDR_BOOK_PER_PEER`] each (oldest evicted)
    /// and [`ADDR_BOOK_PEERS`] peers.
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    /// Relays we know (configured, and hinted by the invite we joined with).
    relays: HashMap<PeerId, Multiaddr>,
    /// Our circuit reservations, asked for or held, at most one per relay.
    reservations: HashMap<PeerId, Reservation>,
    /// Back-off of the reservation attempts per relay.
    reserve_backoff: HashMap<PeerId, Backoff>,
    /// Relays that offer no circuit relay: never asked for a reservation again this session,
    /// nor used for circuits.
    no_hop: HashSet<PeerId>,
    /// When to dial relays we lost again.
    relay_redial: Option<Instant>,
    /// Back-off of the relay redials.
    relay_backoff: Backoff,
    /// Retries waiting for their time.
    retries: HashMap<Retry, Instant>,
    /// Every open connection per peer, and which are proven.
    paths: Paths,
    /// The control path last reported per peer: whether it is direct.
    reported_paths: HashMap<PeerId, bool>,
    /// Relays we dialed over QUIC as well, to learn our public UDP mapping from them.
    relays_over_quic: HashSet<PeerId>,
    /// Back-off of the fresh circuits dialed after hole punching failed, per peer.
    punch_retries: HashMap<PeerId, Backoff>,
    /// When we last dialed every route to a peer because a dial failed under its requests.
    every_route_dialed: HashMap<PeerId, Instant>,
    /// Peers our requests wait to be connected to: since when (or the last dial of every
    /// route), and how many such dials this wait had.
    waiting: HashMap<PeerId, (Instant, u8)>,
    /// Decisions not yet taken by the runtime.
    actions: VecDeque<Action>,
}

impl Routing {
    /// Routing for a client listening on `listen_addrs`, drawing jitter from `rng`.
    pub fn new(rng: StdRng, listen_addrs: Vec<Multiaddr>) -> Self {
        Self {
            rng,
            listen_addrs,
            addr_book: HashMap::new(),
            relays: HashMap::new(),
            reservations: HashMap::new(),
            reserve_backoff: HashMap::new(),
            no_hop: HashSet::new(),
            relay_redial: None,
            relay_backoff: Backoff::new(RELAY_REDIAL_MIN, RELAY_REDIAL_MAX),
            retries: HashMap::new(),
            paths: Paths::default(),
            reported_paths: HashMap::new(),
            relays_over_quic: HashSet::new(),
            punch_retries: HashMap::new(),
            every_route_dialed: HashMap::new(),
            waiting: HashMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The next decision to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When, from `now` on, [`Routing::handle_timeout`] has work next.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        [
            self.relay_redial,
            self.retries.values().min().copied(),
            self.paths.next_deadline(now),
            self.waiting
                .values()
                .map(|(since, _)| *since + STALLED_DIAL_AFTER)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now`: relay redials, retries, closing dead paths.
    pub fn handle_timeout(&mut self, now: Instant, in_meeting: bool) {
        self.redial_relays(now, in_meeting);
        self.run_retries(now);
        self.close_dead_paths(now);
        self.dial_stalled(now);
    }

    // --- Addresses ------------------------------------------------------------------

    /// Our listen addresses.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// A new listen address (a relay circuit once a reservation holds).
    pub fn add_listen_addr(&mut self, addr: Multiaddr) {
        if !self.listen_addrs.contains(&addr) {
            self.listen_addrs.push(addr);
        }
    }

    /// Remembers an address of `peer` (without its `/p2p/` suffix): the oldest of the peer's
    /// goes past [`ADDR_BOOK_PER_PEER`]; a new peer past [`ADDR_BOOK_PEERS`] is not
    /// remembered.
    pub fn remember_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        let addr = without_p2p(addr);
        if self.addr_book.len() >= ADDR_BOOK_PEERS && !self.addr_book.contains_key(&peer) {
            return;
        }
        let addrs = self.addr_book.entry(peer).or_default();
        if !addrs.contains(&addr) {
            if addrs.len() >= ADDR_BOOK_PER_PEER {
                addrs.remove(0);
            }
            addrs.push(addr);
        }
    }

    /// The addresses remembered for `peer`, oldest first.
    pub fn addrs_of(&self, peer: &PeerId) -> &[Multiaddr] {
        self.addr_book.get(peer).map_or(&[], Vec::as_slice)
    }

    /// Every way we know to reach `peer`: its addresses, then a circuit through each relay
    /// we know (members reserve at the meeting's relays, so behind any NAT the circuit is
    /// how they are reached; a relay without a reservation for it just refuses).
    pub fn routes_to(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut routes = self.addrs_of(peer).to_vec();
        for (relay, addr) in &self.relays {
            if relay == peer || self.no_hop.contains(relay) {
                continue;
            }
            let circuit = addr.clone().with(Protocol::P2pCircuit);
            if !routes.contains(&circuit) {
                routes.push(circuit);
            }
        }
        routes
    }

    // --- Relays and reservations ----------------------------------------------------

    /// A relay: we reserve a circuit with it once connected, so that peers who cannot
    /// reach us directly (NAT) reach us through it. Returns its peer id (`None` for an
    /// address without `/p2p/`).
    pub fn add_relay(&mut self, addr: &Multiaddr) -> Option<PeerId> {
        let peer = peer_of(addr)?;
        self.relays.insert(peer, addr.clone());
        if self.is_connected(&peer) {
            self.reserve(peer);
        }
        Some(peer)
    }

    /// Whether `peer` is one of our relays.
    pub fn is_relay(&self, peer: &PeerId) -> bool {
        self.relays.contains_key(peer)
    }

    /// Our relays.
    pub fn relays(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.relays.keys().copied()
    }

    /// Cut off from the meeting: dial `members` (every route to each) and every relay
    /// again on fresh connections. The connections still held may be dead without the swarm
    /// knowing (a circuit over a relay connection that died), and requests sent on them
    /// vanish; the first fresh connection that works carries them, and the dead ones are
    /// closed once it answers ([`paths`]).
    pub fn dial_afresh(&mut self, members: impl IntoIterator<Item = PeerId>) {
        let members: Vec<(PeerId, Vec<Multiaddr>)> = members
            .into_iter()
            .map(|peer| (peer, self.routes_to(&peer)))
            .collect();
        let relays = self
            .relays
            .iter()
            .map(|(peer, addr)| (*peer, vec![addr.clone()]));
        let dials: Vec<(PeerId, Vec<Multiaddr>)> = members.into_iter().chain(relays).collect();
        for (peer, addrs) in dials {
            if addrs.is_empty() {
                continue;
            }
            self.actions.push_back(Action::Dial {
                peer,
                addrs,
                condition: PeerCondition::Always,
                what: "cut off: a fresh connection",
            });
        }
    }

    /// A dial to `peer` failed with our requests waiting for it (see `runtime::control`):
    /// dial every route to it (circuits included), without waiting for another dial under
    /// way to end, unless such a dial started within [`EVERY_ROUTE_REDIAL_GAP`] (every
    /// request queued fails at once with the dial, and one dial serves them all).
    pub fn dial_every_route(&mut self, now: Instant, peer: PeerId) {
        self.dial_every_route_for(
            now,
            peer,
            "every route, after a dial failed under our requests",
        );
    }

    /// A request of ours to `peer` went out while no connection to it is open: it waits for
    /// a dial (ours, or one started elsewhere with whatever addresses it had). If none has
    /// connected within [`STALLED_DIAL_AFTER`], every route is dialed besides.
    pub fn handle_requests_waiting(&mut self, now: Instant, peer: PeerId) {
        if !self.is_connected(&peer) {
            self.waiting.entry(peer).or_insert((now, 0));
        }
    }

    /// Peers our requests still wait for: every route dialed after [`STALLED_DIAL_AFTER`],
    /// again each as long, [`STALLED_DIAL_ROUNDS`] times at most.
    fn dial_stalled(&mut self, now: Instant) {
        let stalled: Vec<PeerId> = self
            .waiting
            .iter()
            .filter(|(_, (since, _))| now >= *since + STALLED_DIAL_AFTER)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in stalled {
            let rounds = self.waiting.get(&peer).map_or(0, |(_, rounds)| *rounds + 1);
            if rounds >= STALLED_DIAL_ROUNDS {
                self.waiting.remove(&peer);
            } else {
                self.waiting.insert(peer, (now, rounds));
            }
            debug!(peer = %peer, round = rounds, "our requests wait for a dial that has not connected; dialing every route");
            self.dial_every_route_for(
                now,
                peer,
                "every route, as a dial stalled under our requests",
            );
        }
    }

    fn dial_every_route_for(&mut self, now: Instant, peer: PeerId, what: &'static str) {
        if self
            .every_route_dialed
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < EVERY_ROUTE_REDIAL_GAP)
        {
            return;
        }
        let addrs = self.routes_to(&peer);
        if addrs.is_empty() {
            return;
        }
        self.every_route_dialed
            .retain(|_, at| now.saturating_duration_since(*at) < EVERY_ROUTE_REDIAL_GAP);
        self.every_route_dialed.insert(peer, now);
        self.actions.push_back(Action::Dial {
            peer,
            addrs,
            condition: PeerCondition::Disconnected,
            what,
        });
    }

    /// The runtime listens on `relay`'s circuit through `listener`.
    pub fn handle_reserving(&mut self, relay: PeerId, listener: ListenerId) {
        self.reservations.entry(relay).or_default().listener = Some(listener);
    }

    /// The runtime could not listen on `relay`'s circuit (asked again on reconnection).
    pub fn handle_reserve_failed(&mut self, relay: PeerId) {
        self.reservations.remove(&relay);
    }

    /// `relay` accepted (or renewed) our reservation.
    pub fn handle_reservation_accepted(&mut self, relay: PeerId) {
        if let Some(reservation) = self.reservations.get_mut(&relay) {
            reservation.held = true;
        }
        if let Some(backoff) = self.reserve_backoff.get_mut(&relay) {
            backoff.reset();
        }
    }

    /// The relay whose reservation listens through `listener`, if any.
    pub fn reservation_relay(&self, listener: ListenerId) -> Option<PeerId> {
        self.reservations
            .iter()
            .find(|(_, r)| r.listener == Some(listener))
            .map(|(relay, _)| *relay)
    }

    /// A listener closed: its addresses are no longer ours, and if it was a reservation it
    /// ended (refused, or lost after it held) and is asked for again after the back-off.
    /// `relay_connected` is the swarm's word on whether the relay is still connected (the
    /// listener may close before its connection's closing is reported).
    pub fn handle_listener_closed(
        &mut self,
        now: Instant,
        listener: ListenerId,
        addresses: &[Multiaddr],
        error: Option<&io::Error>,
        relay_connected: bool,
        in_meeting: bool,
    ) {
        self.listen_addrs.retain(|a| !addresses.contains(a));
        if let Some(relay) = self.reservation_relay(listener)
            && let Some(reservation) = self.reservations.remove(&relay)
        {
            let ended = Ended {
                held: reservation.held,
                error,
                connected: relay_connected,
                in_meeting,
            };
            self.on_reservation_ended(now, relay, &ended);
        }
    }

    /// What a relay's identify says: its listen addresses (we dial it over QUIC too, to
    /// learn our UDP mapping) and its protocols (without the hop protocol it is not asked
    /// for reservations until it lists it; an empty list tells nothing).
    pub fn handle_relay_identified(
        &mut self,
        relay: PeerId,
        listen_addrs: &[Multiaddr],
        protocols: &[StreamProtocol],
    ) {
        self.dial_relay_over_quic(relay, listen_addrs);
        if protocols.is_empty() {
            return;
        }
        if protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            if self.no_hop.remove(&relay) {
                info!(%relay, "the relay offers circuit relay now");
                if self.is_connected(&relay) {
                    self.reserve(relay);
                }
            }
        } else if self.no_hop.insert(relay) {
            info!(%relay, "the relay lists no circuit relay protocol; not asking it for a reservation");
        }
    }

    /// Reserves a circuit at relay `peer` unless we hold or are asking for one, a retry is
    /// waiting for its time, or the relay said it offers no circuit relay.
    fn reserve(&mut self, peer: PeerId) {
        if self.reservations.contains_key(&peer)
            || self.retries.contains_key(&Retry::Reserve(peer))
            || self.no_hop.contains(&peer)
        {
            return;
        }
        let Some(addr) = self.relays.get(&peer) else {
            return;
        };
        let addr = addr.clone().with(Protocol::P2pCircuit);
        self.reservations.insert(peer, Reservation::default());
        self.actions
            .push_back(Action::Reserve { relay: peer, addr });
    }

    /// A reservation at `relay` ended: refused (`held` false) or lost after it held.
    /// A relay without the hop protocol is never asked again; otherwise the next attempt
    /// waits for the relay's back-off (reset if the reservation had held, and left to the
    /// reconnection if the connection went with it).
    fn on_reservation_ended(&mut self, now: Instant, relay: PeerId, ended: &Ended<'_>) {
        let Ended {
            held,
            error,
            connected,
            in_meeting,
        } = *ended;
        if error
            .and_then(reserve_error)
            .is_some_and(|e| matches!(e, ReserveError::Unsupported))
        {
            info!(%relay, "the relay offers no circuit relay; not asking it for a reservation again");
            self.no_hop.insert(relay);
            self.reserve_backoff.remove(&relay);
            return;
        }
        let max = if in_meeting {
            RESERVE_RETRY_MAX_IN_MEETING
        } else {
            RESERVE_RETRY_MAX
        };
        let backoff = self
            .reserve_backoff
            .entry(relay)
            .or_insert_with(|| Backoff::new(RESERVE_RETRY_MIN, max));
        if held {
            backoff.reset();
            if !connected {
                info!(%relay, error = ?error, "relay reservation ended with the connection; reserving again on reconnection");
                return;
            }
        }
        backoff.set_max(max);
        let delay = backoff.next_delay(&mut self.rng);
        let attempt = backoff.attempt();
        if held {
            info!(%relay, error = ?error, retry_in = ?delay, "relay reservation ended");
        } else {
            // Refusals repeat for as long as the relay is full: one line per attempt at
            // most, and quiet after the first few.
            let reason = error.map_or_else(
                || "closed".to_owned(),
                |e| match reserve_error(e) {
                    Some(refusal) => refusal.to_string(),
                    None => e.to_string(),
                },
            );
            if attempt <= 3 {
                info!(%relay, %reason, attempt, retry_in = ?delay, "relay reservation refused");
            } else {
                debug!(%relay, %reason, attempt, retry_in = ?delay, "relay reservation refused");
            }
        }
        self.retries.insert(Retry::Reserve(relay), now + delay);
    }

    /// Dials every relay we are not connected to; schedules the next attempt (with back-off
    /// and jitter) while some stay unreachable.
    fn redial_relays(&mut self, now: Instant, in_meeting: bool) {
        let Some(at) = self.relay_redial else {
            return;
        };
        if now < at {
            return;
        }
        let lost: Vec<(PeerId, Multiaddr)> = self
            .relays
            .iter()
            .filter(|(peer, _)| !self.paths.is_connected(peer))
            .map(|(peer, addr)| (*peer, addr.clone()))
            .collect();
        if lost.is_empty() {
            self.relay_redial = None;
            return;
        }
        for (peer, addr) in lost {
            self.actions.push_back(Action::Dial {
                peer,
                addrs: vec![addr],
                condition: PeerCondition::DisconnectedAndNotDialing,
                what: "a lost relay",
            });
        }
        let max = if in_meeting {
            RELAY_REDIAL_MAX_IN_MEETING
        } else {
            RELAY_REDIAL_MAX
        };
        self.relay_backoff.set_max(max);
        self.relay_redial = Some(now + self.relay_backoff.next_delay(&mut self.rng));
    }

    /// Carries out the retries whose time has come.
    fn run_retries(&mut self, now: Instant) {
        let due: Vec<Retry> = self
            .retries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(retry, _)| *retry)
            .collect();
        for retry in due {
            self.retries.remove(&retry);
            match retry {
                // When the connection went meanwhile, the reconnection reserves.
                Retry::Reserve(relay) if self.is_connected(&relay) => self.reserve(relay),
                Retry::Reserve(_) => {}
                Retry::HolePunch(peer) => self.dial_punch_circuit(peer),
            }
        }
    }

    /// Dials relay `relay` over QUIC too (once per connection to it) if it listens on QUIC,
    /// we do and we reached it another way. Identify on that connection tells us our public
    /// UDP address (the NAT's mapping of our QUIC port), the candidate hole punching over
    /// QUIC needs; a TCP connection only yields a TCP candidate.
    fn dial_relay_over_quic(&mut self, relay: PeerId, relay_addrs: &[Multiaddr]) {
        if !self
            .listen_addrs
            .iter()
            .any(|a| is_quic(a) && !is_relayed(a))
            || self.paths.remotes(&relay).any(is_quic)
            || self.relays_over_quic.contains(&relay)
        {
            return;
        }
        let quic: Vec<Multiaddr> = relay_addrs
            .iter()
            .filter(|a| is_quic(a) && !is_relayed(a) && is_dialable(a))
            .cloned()
            .collect();
        if quic.is_empty() {
            return;
        }
        self.relays_over_quic.insert(relay);
        debug!(%relay, addrs = ?quic, "dialing the relay over QUIC to learn our UDP mapping");
        self.actions.push_back(Action::Dial {
            peer: relay,
            addrs: quic,
            condition: PeerCondition::Always,
            what: "the relay over QUIC",
        });
    }

    // --- Connections and paths ------------------------------------------------------

    /// Whether any connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.paths.is_connected(peer)
    }

    /// The round-trip time `peer`'s timers should assume ([`Paths::rtt`]).
    pub fn rtt(&self, peer: &PeerId) -> Duration {
        self.paths.rtt(peer)
    }

    /// A connection to `peer` was established with remote address `remote` (see
    /// [`remote_of`]); `dialed` is the address we dialed, remembered for the peer. A relay
    /// is asked for a reservation; a peer's control path may have changed.
    pub fn handle_connection_established(
        &mut self,
        now: Instant,
        peer: PeerId,
        connection: ConnectionId,
        remote: Multiaddr,
        dialed: Option<Multiaddr>,
    ) {
        self.waiting.remove(&peer);
        // Relays are not judged: our reservation lives on one particular connection.
        let judged = !self.relays.contains_key(&peer);
        self.paths.opened(now, peer, connection, remote, judged);
        self.update_path(peer);
        if let Some(addr) = dialed {
            self.remember_addr(peer, addr);
        }
        if self.relays.contains_key(&peer) {
            self.reserve(peer);
        }
    }

    /// A connection to `peer` closed, `remaining` still open. With the last one go the
    /// peer's hole-punching retries; a relay lost that way is dialed again (with back-off).
    pub fn handle_connection_closed(
        &mut self,
        now: Instant,
        peer: PeerId,
        connection: ConnectionId,
        remaining: u32,
    ) {
        self.paths.closed(peer, connection);
        if remaining == 0 {
            self.relays_over_quic.remove(&peer);
            self.punch_retries.remove(&peer);
            self.retries.remove(&Retry::HolePunch(peer));
        }
        self.update_path(peer);
        if remaining == 0 && self.relays.contains_key(&peer) {
            self.actions.push_back(Action::RelayLost(peer));
            if self.relay_redial.is_none() {
                info!(relay = %peer, "lost the relay; dialing it again");
                self.relay_backoff.reset();
                self.relay_redial = Some(now + self.relay_backoff.next_delay(&mut self.rng));
            }
        }
    }

    /// A ping on `connection` to `peer` was answered after `rtt`.
    pub fn handle_ping_ok(
        &mut self,
        now: Instant,
        peer: PeerId,
        connection: ConnectionId,
        rtt: Duration,
    ) {
        self.paths.ping_ok(now, peer, connection, rtt);
    }

    /// Hole punching to `peer` failed: after a back-off, dial a fresh circuit to it (a new
    /// circuit beside the one in use), at most [`HOLE_PUNCH_RETRIES`] times while
    /// connected: DCUtR runs on every new relayed connection with the address candidates
    /// both ends know by then. The first circuit often comes up before identify on our QUIC
    /// connection to the relay has told us our public UDP address, so the first round only
    /// had TCP candidates (and TCP punching fails where the routers answer unsolicited SYNs
    /// with resets).
    pub fn handle_hole_punch_failed(&mut self, now: Instant, peer: PeerId) {
        if self.reported_paths.get(&peer) == Some(&true)
            || self.retries.contains_key(&Retry::HolePunch(peer))
        {
            return;
        }
        let backoff = self
            .punch_retries
            .entry(peer)
            .or_insert_with(|| Backoff::new(HOLE_PUNCH_RETRY_MIN, HOLE_PUNCH_RETRY_MAX));
        if backoff.attempt() >= HOLE_PUNCH_RETRIES {
            debug!(peer = %peer, "no more hole punching rounds while connected; staying relayed");
            return;
        }
        let delay = backoff.next_delay(&mut self.rng);
        debug!(peer = %peer, retry_in = ?delay, "another hole punching round scheduled");
        self.retries.insert(Retry::HolePunch(peer), now + delay);
    }

    /// The media connection to `peer` went direct: its NAT and ours let a direct path
    /// through, so a control path still on a circuit gets a hole punching round at once
    /// (DCUtR over a fresh circuit), with its rounds counted afresh.
    pub fn handle_media_direct(&mut self, now: Instant, peer: PeerId) {
        if self.reported_paths.get(&peer) != Some(&false) {
            return;
        }
        debug!(peer = %peer, "media went direct while the control path is relayed: punching again");
        self.punch_retries.remove(&peer);
        self.retries.insert(Retry::HolePunch(peer), now);
    }

    /// Dials a fresh circuit to `peer` for another hole punching round, unless a direct
    /// path came up meanwhile or the peer is gone.
    fn dial_punch_circuit(&mut self, peer: PeerId) {
        if self.reported_paths.get(&peer) == Some(&true) || !self.is_connected(&peer) {
            return;
        }
        let circuits: Vec<Multiaddr> = self
            .routes_to(&peer)
            .into_iter()
            .filter(is_relayed)
            .collect();
        if circuits.is_empty() {
            return;
        }
        self.actions.push_back(Action::Dial {
            peer,
            addrs: circuits,
            condition: PeerCondition::Always,
            what: "a new relay circuit for another hole punching round",
        });
    }

    /// Reports a peer's control path when it changes: direct while any connection to it is
    /// not a relay circuit (after hole punching both may be open; requests then use either
    /// until the relayed one idles out), relayed otherwise. Relays themselves are not
    /// reported.
    fn update_path(&mut self, peer: PeerId) {
        if self.relays.contains_key(&peer) {
            return;
        }
        let Some(remote) = self.paths.control_remote(&peer) else {
            if let Some(direct) = self.reported_paths.remove(&peer) {
                debug!(peer = %peer, direct, "no control connection left");
            }
            return;
        };
        let direct = !is_relayed(&remote);
        if self.reported_paths.insert(peer, direct) == Some(direct) {
            return;
        }
        let path = if direct { "direct" } else { "relayed" };
        info!(peer = %peer, path, %remote, "control path");
        self.actions.push_back(Action::PathChanged {
            peer,
            direct,
            remote,
        });
    }

    /// Closes the connections that failed to prove themselves or went quiet beside a
    /// working one ([`Paths`]); their requests move to the peer's other connection.
    fn close_dead_paths(&mut self, now: Instant) {
        for close in self.paths.poll_close(now) {
            let why = match close.reason {
                CloseReason::Unproven => "never answered a ping",
                CloseReason::Stale => "stopped answering pings",
            };
            info!(peer = %close.peer, relayed = close.relayed, why, "closing a control connection that carries nothing; its requests move to the peer's other connection");
            self.actions.push_back(Action::Close(close));
        }
    }
}

/// Why a relay refused a reservation, from the error that closed the circuit listener
/// (the relay transport's error, wrapped in the swarm's transport layers).
pub fn reserve_error(err: &io::Error) -> Option<&ReserveError> {
    let mut cause = err
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(error) = cause {
        if let Some(refusal) = error.downcast_ref::<ReserveError>() {
            return Some(refusal);
        }
        if let Some(relay::client::transport::Error::Reservation(refusal)) = error.downcast_ref() {
            return Some(refusal);
        }
        cause = error.source();
    }
    None
}

/// Whether `addr` goes through a relay circuit.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Whether `addr` is a QUIC address.
pub fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1))
}

/// Whether `addr` can be dialed (not an unspecified IP such as `0.0.0.0`).
pub fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// The remote end of a connection: the address dialed, or where a listener's peer came from
/// (for an inbound circuit, the local circuit address, which names the relay).
pub fn remote_of(endpoint: &ConnectedPoint) -> Multiaddr {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => address.clone(),
        ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => local_addr.clone(),
        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
    }
}

fn without_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}
