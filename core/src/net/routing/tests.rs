//! Routing with simulated time: back-off of reservations and redials, the address book's
//! caps, hole-punching retries and path reports.

use rand::SeedableRng;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addr(s: &str) -> Multiaddr {
    s.parse().expect("a valid address")
}

/// A refusal as the swarm reports it when a relay's circuit listener closes.
fn refused(why: ReserveError) -> io::Error {
    io::Error::other(relay::client::transport::Error::Reservation(why))
}

/// One client's routing, driven on simulated time (milliseconds since the start).
struct Sim {
    routing: Routing,
    t0: Instant,
    /// When the timer last ran.
    last: Instant,
    next_conn: usize,
}

impl Sim {
    #[allow(clippy::disallowed_methods)] // the simulation's epoch; time is simulated from here
    fn new() -> Self {
        let t0 = Instant::now();
        Self {
            routing: Routing::new(
                StdRng::seed_from_u64(7),
                vec![addr("/ip4/10.0.0.2/udp/4001/quic-v1")],
            ),
            t0,
            last: t0,
            next_conn: 0,
        }
    }

    fn at(&self, t: u64) -> Instant {
        self.t0 + ms(t)
    }

    /// Milliseconds from the start to `instant`.
    fn ms_of(&self, instant: Instant) -> u64 {
        u64::try_from(instant.duration_since(self.t0).as_millis()).expect("a short simulation")
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.routing.poll_action()).collect()
    }

    /// A relay we know, at `ip`.
    fn relay(&mut self, ip: &str) -> (PeerId, Multiaddr) {
        let peer = PeerId::random();
        let at = addr(&format!("/ip4/{ip}/tcp/4001/p2p/{peer}"));
        assert_eq!(self.routing.add_relay(&at), Some(peer));
        (peer, at)
    }

    fn connect(&mut self, t: u64, peer: PeerId, remote: &str) -> ConnectionId {
        self.next_conn += 1;
        let connection = ConnectionId::new_unchecked(self.next_conn);
        self.routing.handle_connection_established(
            self.at(t),
            peer,
            connection,
            addr(remote),
            None,
        );
        connection
    }

    /// Connects to `relay` and returns the reservation listener the runtime would open.
    fn connect_relay(&mut self, t: u64, relay: PeerId) -> (ConnectionId, ListenerId) {
        let connection = self.connect(t, relay, "/ip4/192.0.2.1/tcp/4001");
        let listener = self.expect_reserve(relay);
        (connection, listener)
    }

    /// The one action must be a reservation at `relay`; carries it out.
    fn expect_reserve(&mut self, relay: PeerId) -> ListenerId {
        let actions = self.actions();
        assert!(
            matches!(actions.as_slice(), [Action::Reserve { relay: r, addr }] if *r == relay && is_relayed(addr)),
            "{actions:?}"
        );
        let listener = ListenerId::next();
        self.routing.handle_reserving(relay, listener);
        listener
    }

    /// Whether a hole punching round is scheduled for `peer`.
    fn punch_scheduled(&self, peer: PeerId) -> bool {
        self.routing.retries.contains_key(&Retry::HolePunch(peer))
    }

    /// Runs the timer at its deadline; returns when that was and what it decided.
    fn step(&mut self, in_meeting: bool) -> (u64, Vec<Action>) {
        let at = self
            .routing
            .poll_timeout(self.last)
            .expect("something to wait for");
        self.last = at;
        self.routing.handle_timeout(at, in_meeting);
        (self.ms_of(at), self.actions())
    }
}

/// The delay drawn for a back-off whose nominal wait is `nominal`: in its upper half.
fn assert_jittered(delay: u64, nominal: Duration) {
    let nominal = u64::try_from(nominal.as_millis()).expect("short");
    assert!(
        (nominal / 2..=nominal).contains(&delay),
        "{delay} ms outside [{}, {nominal}] ms",
        nominal / 2
    );
}

#[test]
fn a_refused_reservation_is_recognised_through_the_transport_layers() {
    let unsupported = refused(ReserveError::Unsupported);
    assert!(matches!(
        reserve_error(&unsupported),
        Some(ReserveError::Unsupported)
    ));
    // The relay transport's error inside the swarm's `Either` of transports, whose
    // `source()` is its inner error's source (the inner error itself is skipped).
    #[derive(Debug)]
    struct EitherLike(relay::client::transport::Error);
    impl std::fmt::Display for EitherLike {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
    impl std::error::Error for EitherLike {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            std::error::Error::source(&self.0)
        }
    }
    let full = EitherLike(relay::client::transport::Error::Reservation(
        ReserveError::ResourceLimitExceeded,
    ));
    assert!(matches!(
        reserve_error(&io::Error::other(full)),
        Some(ReserveError::ResourceLimitExceeded)
    ));
    assert!(reserve_error(&io::Error::other("something else")).is_none());
    assert!(reserve_error(&io::ErrorKind::TimedOut.into()).is_none());
}

#[test]
fn refused_reservations_wait_longer_each_time_until_the_cap() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    let (_, mut listener) = sim.connect_relay(0, relay);
    let mut now = 0;
    let mut nominal = RESERVE_RETRY_MIN;
    for _ in 0..9 {
        let full = refused(ReserveError::ResourceLimitExceeded);
        sim.routing
            .handle_listener_closed(sim.at(now), listener, &[], Some(&full), true, false);
        assert!(
            sim.actions().is_empty(),
            "nothing until the back-off is over"
        );
        let (at, actions) = sim.step(false);
        assert_jittered(at - now, nominal);
        assert!(matches!(actions.as_slice(), [Action::Reserve { .. }]));
        listener = ListenerId::next();
        sim.routing.handle_reserving(relay, listener);
        now = at;
        nominal = (nominal * 2).min(RESERVE_RETRY_MAX);
    }
    assert_eq!(nominal, RESERVE_RETRY_MAX, "the cap was reached");
}

#[test]
fn refused_reservations_are_capped_shorter_in_a_meeting() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    let (_, mut listener) = sim.connect_relay(0, relay);
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..8 {
        let full = refused(ReserveError::ResourceLimitExceeded);
        sim.routing
            .handle_listener_closed(sim.at(now), listener, &[], Some(&full), true, true);
        let (at, _) = sim.step(true);
        waits.push(at - now);
        listener = ListenerId::next();
        sim.routing.handle_reserving(relay, listener);
        now = at;
    }
    let cap = u64::try_from(RESERVE_RETRY_MAX_IN_MEETING.as_millis()).expect("short");
    assert!(waits.iter().all(|w| *w <= cap), "{waits:?}");
    assert!(waits[5..].iter().all(|w| *w >= cap / 2), "{waits:?}");
}

#[test]
fn a_reservation_that_held_is_asked_again_within_the_first_wait() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    let (_, mut listener) = sim.connect_relay(0, relay);
    // Refused a few times: the back-off grows.
    let mut now = 0;
    for _ in 0..4 {
        let full = refused(ReserveError::ResourceLimitExceeded);
        sim.routing
            .handle_listener_closed(sim.at(now), listener, &[], Some(&full), true, false);
        let (at, _) = sim.step(false);
        listener = ListenerId::next();
        sim.routing.handle_reserving(relay, listener);
        now = at;
    }
    // Accepted, held for a while, then lost with the connection still up: the back-off
    // starts again from its first wait.
    sim.routing.handle_reservation_accepted(relay);
    now += 60_000;
    sim.routing
        .handle_listener_closed(sim.at(now), listener, &[], None, true, false);
    let (at, actions) = sim.step(false);
    assert_jittered(at - now, RESERVE_RETRY_MIN);
    assert!(matches!(actions.as_slice(), [Action::Reserve { .. }]));
}

#[test]
fn a_held_reservation_lost_with_its_connection_waits_for_the_reconnection() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    let (connection, listener) = sim.connect_relay(0, relay);
    sim.routing.handle_reservation_accepted(relay);
    sim.routing
        .handle_connection_closed(sim.at(5000), relay, connection, 0);
    assert!(matches!(sim.actions().as_slice(), [Action::RelayLost(r)] if *r == relay));
    sim.routing
        .handle_listener_closed(sim.at(5000), listener, &[], None, false, false);
    assert!(sim.actions().is_empty());
    // Back: reserved at once.
    sim.connect_relay(5300, relay);
}

#[test]
fn a_relay_without_circuit_relay_is_never_asked_again() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    let member = PeerId::random();
    assert_eq!(
        sim.routing.routes_to(&member).len(),
        1,
        "a circuit through it"
    );
    let (connection, listener) = sim.connect_relay(0, relay);
    let unsupported = refused(ReserveError::Unsupported);
    sim.routing
        .handle_listener_closed(sim.at(10), listener, &[], Some(&unsupported), true, false);
    assert_eq!(
        sim.routing.poll_timeout(sim.at(10)),
        None,
        "no retry scheduled"
    );
    assert!(
        sim.routing.routes_to(&member).is_empty(),
        "no circuits through it"
    );
    // Neither a reconnection nor identify without the hop protocol asks again.
    sim.routing
        .handle_connection_closed(sim.at(20), relay, connection, 0);
    sim.actions();
    sim.connect(30, relay, "/ip4/192.0.2.1/tcp/4001");
    let kad = StreamProtocol::new("/conclave/kad/1.0.0");
    sim.routing
        .handle_relay_identified(relay, &[], std::slice::from_ref(&kad));
    assert!(sim.actions().is_empty());
    // Until it lists the hop protocol.
    sim.routing
        .handle_relay_identified(relay, &[], &[kad, relay::HOP_PROTOCOL_NAME]);
    sim.expect_reserve(relay);
}

#[test]
fn a_relay_whose_identify_lists_no_hop_is_not_asked_on_connection() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    sim.routing
        .handle_relay_identified(relay, &[], &[StreamProtocol::new("/ipfs/ping/1.0.0")]);
    sim.connect(0, relay, "/ip4/192.0.2.1/tcp/4001");
    assert!(sim.actions().is_empty());
}

#[test]
fn one_reservation_per_relay_while_one_is_asked_for() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    sim.connect(0, relay, "/ip4/192.0.2.1/tcp/4001");
    sim.connect(5, relay, "/ip4/192.0.2.1/udp/4001/quic-v1");
    let actions = sim.actions();
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Reserve { .. }))
            .count(),
        1,
        "{actions:?}"
    );
    // A listener that could not be opened is asked again on the next connection.
    sim.routing.handle_reserve_failed(relay);
    sim.connect(10, relay, "/ip4/192.0.2.1/tcp/4001");
    sim.expect_reserve(relay);
}

#[test]
fn a_lost_relay_is_redialed_with_growing_waits() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    let (connection, _) = sim.connect_relay(0, relay);
    sim.routing
        .handle_connection_closed(sim.at(1000), relay, connection, 0);
    assert!(matches!(sim.actions().as_slice(), [Action::RelayLost(_)]));
    let mut now = 1000;
    let mut nominal = RELAY_REDIAL_MIN;
    for _ in 0..10 {
        let (at, actions) = sim.step(false);
        assert_jittered(at - now, nominal);
        assert!(
            matches!(actions.as_slice(), [Action::Dial { peer, addrs, what: "a lost relay", .. }]
                if *peer == relay && *addrs == vec![relay_addr.clone()]),
            "{actions:?}"
        );
        now = at;
        nominal = (nominal * 2).min(RELAY_REDIAL_MAX);
    }
    assert_eq!(nominal, RELAY_REDIAL_MAX);
    // Back: the next timer ends the redials.
    sim.connect(now + 10, relay, "/ip4/192.0.2.1/tcp/4001");
    sim.actions();
    let (_, actions) = sim.step(false);
    assert!(actions.is_empty());
    assert_eq!(sim.routing.poll_timeout(sim.last), None);
}

#[test]
fn a_lost_relay_is_redialed_within_two_seconds_in_a_meeting() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    let (connection, _) = sim.connect_relay(0, relay);
    sim.routing
        .handle_connection_closed(sim.at(0), relay, connection, 0);
    sim.actions();
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..12 {
        let (at, _) = sim.step(true);
        waits.push(at - now);
        now = at;
    }
    let cap = u64::try_from(RELAY_REDIAL_MAX_IN_MEETING.as_millis()).expect("short");
    // The first wait was drawn before the cap was known; every one after it is capped.
    assert!(waits[1..].iter().all(|w| *w <= cap), "{waits:?}");
    assert!(waits[6..].iter().all(|w| *w >= cap / 2), "{waits:?}");
}

#[test]
fn the_address_book_keeps_the_newest_addresses_of_a_bounded_number_of_peers() {
    let mut sim = Sim::new();
    let peer = PeerId::random();
    for port in 0..10 {
        sim.routing
            .remember_addr(peer, addr(&format!("/ip4/192.0.2.5/tcp/{port}/p2p/{peer}")));
    }
    // The same address again changes nothing.
    sim.routing
        .remember_addr(peer, addr("/ip4/192.0.2.5/tcp/9"));
    let kept = sim.routing.addrs_of(&peer);
    assert_eq!(kept.len(), ADDR_BOOK_PER_PEER);
    assert_eq!(kept[0], addr("/ip4/192.0.2.5/tcp/2"), "the oldest two went");
    assert_eq!(
        kept[7],
        addr("/ip4/192.0.2.5/tcp/9"),
        "stored without /p2p/"
    );

    for _ in 1..ADDR_BOOK_PEERS {
        sim.routing
            .remember_addr(PeerId::random(), addr("/ip4/192.0.2.6/tcp/1"));
    }
    let late = PeerId::random();
    sim.routing
        .remember_addr(late, addr("/ip4/192.0.2.7/tcp/1"));
    assert!(sim.routing.addrs_of(&late).is_empty(), "the book is full");
    // A peer already in it still learns addresses.
    sim.routing
        .remember_addr(peer, addr("/ip4/192.0.2.5/tcp/10"));
    assert_eq!(
        sim.routing.addrs_of(&peer).last(),
        Some(&addr("/ip4/192.0.2.5/tcp/10"))
    );
}

#[test]
fn routes_are_the_known_addresses_then_a_circuit_per_relay() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    let peer = PeerId::random();
    sim.routing
        .remember_addr(peer, addr("/ip4/192.0.2.5/tcp/1"));
    assert_eq!(
        sim.routing.routes_to(&peer),
        vec![
            addr("/ip4/192.0.2.5/tcp/1"),
            relay_addr.clone().with(Protocol::P2pCircuit)
        ]
    );
    assert!(
        sim.routing.routes_to(&relay).is_empty(),
        "no circuit to a relay through itself"
    );
}

#[test]
fn cut_off_every_member_and_relay_is_dialed_on_a_fresh_connection() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let member = PeerId::random();
    sim.routing
        .remember_addr(member, addr("/ip4/192.0.2.5/udp/1/quic-v1"));
    sim.connect(
        100,
        member,
        &format!("{relay_addr}/p2p-circuit/p2p/{member}"),
    );
    sim.actions();
    sim.routing.dial_afresh([member]);
    let dials: Vec<(PeerId, Vec<Multiaddr>)> = sim
        .actions()
        .into_iter()
        .filter_map(|action| match action {
            Action::Dial {
                peer,
                addrs,
                condition: PeerCondition::Always,
                ..
            } => Some((peer, addrs)),
            _ => None,
        })
        .collect();
    assert_eq!(
        dials,
        vec![
            (member, sim.routing.routes_to(&member)),
            (relay, vec![relay_addr]),
        ],
        "though connected to both, each is dialed again on every route, unconditionally"
    );
}

#[test]
fn hole_punching_is_retried_over_fresh_circuits_at_most_three_times() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let peer = PeerId::random();
    sim.connect(100, peer, &format!("{relay_addr}/p2p-circuit/p2p/{peer}"));
    sim.actions();
    let mut now = 200;
    let mut nominal = HOLE_PUNCH_RETRY_MIN;
    for _ in 0..HOLE_PUNCH_RETRIES {
        sim.routing.handle_hole_punch_failed(sim.at(now), peer);
        // A second failure report before the round changes nothing.
        sim.routing.handle_hole_punch_failed(sim.at(now), peer);
        let (at, actions) = sim.step(false);
        assert_jittered(at - now, nominal);
        assert!(
            matches!(actions.as_slice(), [Action::Dial { peer: p, addrs, condition: PeerCondition::Always, .. }]
                if *p == peer && addrs.iter().all(is_relayed) && !addrs.is_empty()),
            "{actions:?}"
        );
        now = at;
        nominal *= 2;
    }
    sim.routing.handle_hole_punch_failed(sim.at(now), peer);
    assert!(!sim.punch_scheduled(peer), "no fourth round");
}

#[test]
fn hole_punching_stops_once_the_path_is_direct() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let peer = PeerId::random();
    sim.connect(100, peer, &format!("{relay_addr}/p2p-circuit/p2p/{peer}"));
    sim.routing.handle_hole_punch_failed(sim.at(200), peer);
    sim.actions();
    // The other side's punch succeeded meanwhile: the scheduled round dials nothing.
    sim.connect(300, peer, "/ip4/198.51.100.7/udp/4001/quic-v1");
    assert!(matches!(
        sim.actions().as_slice(),
        [Action::PathChanged { direct: true, .. }]
    ));
    let at = sim.routing.poll_timeout(sim.at(300)).expect("the round");
    sim.routing.handle_timeout(at, false);
    assert!(
        sim.actions()
            .iter()
            .all(|a| !matches!(a, Action::Dial { .. }))
    );
    // Nor is another one scheduled.
    sim.routing.handle_hole_punch_failed(at, peer);
    assert!(!sim.punch_scheduled(peer));
}

#[test]
fn a_peer_gone_takes_its_hole_punching_rounds_along() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let peer = PeerId::random();
    let circuit = sim.connect(100, peer, &format!("{relay_addr}/p2p-circuit/p2p/{peer}"));
    for _ in 0..HOLE_PUNCH_RETRIES {
        sim.routing.handle_hole_punch_failed(sim.at(200), peer);
        sim.step(false);
    }
    sim.routing.handle_hole_punch_failed(sim.at(20_000), peer);
    assert!(!sim.punch_scheduled(peer), "the budget is spent");
    sim.routing
        .handle_connection_closed(sim.at(20_000), peer, circuit, 0);
    sim.actions();
    // Connected again later: a fresh budget of rounds.
    sim.connect(
        30_000,
        peer,
        &format!("{relay_addr}/p2p-circuit/p2p/{peer}"),
    );
    sim.routing.handle_hole_punch_failed(sim.at(30_000), peer);
    assert!(sim.punch_scheduled(peer));
}

#[test]
fn path_changes_are_reported_once_each() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let peer = PeerId::random();
    let circuit = format!("{relay_addr}/p2p-circuit/p2p/{peer}");
    let first = sim.connect(100, peer, &circuit);
    let actions = sim.actions();
    assert!(
        matches!(actions.as_slice(), [Action::PathChanged { peer: p, direct: false, remote }]
            if *p == peer && is_relayed(remote)),
        "{actions:?}"
    );
    let second = sim.connect(200, peer, &circuit);
    assert!(sim.actions().is_empty(), "still relayed");
    let direct = sim.connect(300, peer, "/ip4/198.51.100.7/udp/4001/quic-v1");
    assert!(matches!(
        sim.actions().as_slice(),
        [Action::PathChanged { direct: true, .. }]
    ));
    sim.routing
        .handle_connection_closed(sim.at(400), peer, first, 2);
    assert!(sim.actions().is_empty(), "still direct");
    sim.routing
        .handle_connection_closed(sim.at(500), peer, direct, 1);
    assert!(matches!(
        sim.actions().as_slice(),
        [Action::PathChanged { direct: false, .. }]
    ));
    sim.routing
        .handle_connection_closed(sim.at(600), peer, second, 0);
    assert!(sim.actions().is_empty(), "no path is not reported");
    // A new connection is reported again.
    sim.connect(700, peer, &circuit);
    assert!(matches!(
        sim.actions().as_slice(),
        [Action::PathChanged { direct: false, .. }]
    ));
}

#[test]
fn relays_are_dialed_over_quic_once_to_learn_our_udp_mapping() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let quic = addr("/ip4/192.0.2.1/udp/4001/quic-v1");
    let listen = [addr("/ip4/0.0.0.0/udp/4001/quic-v1"), quic.clone()];
    sim.routing.handle_relay_identified(relay, &listen, &[]);
    let actions = sim.actions();
    assert!(
        matches!(actions.as_slice(), [Action::Dial { peer, addrs, .. }] if *peer == relay && *addrs == vec![quic.clone()]),
        "only the dialable QUIC address: {actions:?}"
    );
    sim.routing.handle_relay_identified(relay, &listen, &[]);
    assert!(sim.actions().is_empty(), "once per connection");
}

#[test]
fn a_dead_path_beside_a_working_one_is_closed() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let peer = PeerId::random();
    let circuit = sim.connect(0, peer, &format!("{relay_addr}/p2p-circuit/p2p/{peer}"));
    let direct = sim.connect(0, peer, "/ip4/198.51.100.7/udp/4001/quic-v1");
    sim.actions();
    sim.routing
        .handle_ping_ok(sim.at(100), peer, circuit, ms(100));
    // Probation at 100 ms: 1.5 s + 4 × 100 ms after it opened.
    let (at, actions) = sim.step(false);
    assert_eq!(at, 1900);
    assert!(
        matches!(actions.as_slice(), [Action::Close(close)]
            if close.connection == direct && close.reason == CloseReason::Unproven),
        "{actions:?}"
    );
}

#[test]
fn a_held_reservation_whose_listener_closes_first_still_waits_for_the_reconnection() {
    let mut sim = Sim::new();
    let (relay, _) = sim.relay("192.0.2.1");
    let (connection, listener) = sim.connect_relay(0, relay);
    sim.routing.handle_reservation_accepted(relay);
    // The swarm already knows the connection is gone; its closing is reported next.
    sim.routing
        .handle_listener_closed(sim.at(5000), listener, &[], None, false, false);
    sim.routing
        .handle_connection_closed(sim.at(5000), relay, connection, 0);
    sim.actions();
    assert!(
        !sim.routing.retries.contains_key(&Retry::Reserve(relay)),
        "no retry to wait for"
    );
    sim.connect_relay(5300, relay);
}

#[test]
fn a_dial_failed_under_requests_dials_every_route_once_a_second_at_most() {
    let mut sim = Sim::new();
    let (_relay, relay_addr) = sim.relay("192.0.2.1");
    let member = PeerId::random();
    // All the DHT knew of it: its private LAN address.
    sim.routing
        .remember_addr(member, addr("/ip4/192.168.7.2/udp/4001/quic-v1"));
    sim.actions();
    let every_route = |sim: &mut Sim| -> Vec<Vec<Multiaddr>> {
        sim.actions()
            .into_iter()
            .filter_map(|action| match action {
                Action::Dial {
                    peer,
                    addrs,
                    condition: PeerCondition::Disconnected,
                    ..
                } if peer == member => Some(addrs),
                _ => None,
            })
            .collect()
    };
    sim.routing.dial_every_route(sim.at(0), member);
    assert_eq!(
        every_route(&mut sim),
        vec![vec![
            addr("/ip4/192.168.7.2/udp/4001/quic-v1"),
            relay_addr.with(Protocol::P2pCircuit)
        ]],
        "the circuit is dialed too, whether or not another dial is under way"
    );
    // Every request queued failed with the same dial: one dial serves them all.
    sim.routing.dial_every_route(sim.at(1), member);
    sim.routing.dial_every_route(
        sim.at(EVERY_ROUTE_REDIAL_GAP.as_millis() as u64 - 1),
        member,
    );
    assert!(every_route(&mut sim).is_empty());
    sim.routing
        .dial_every_route(sim.at(EVERY_ROUTE_REDIAL_GAP.as_millis() as u64), member);
    assert_eq!(
        every_route(&mut sim).len(),
        1,
        "a second failure a second later"
    );
}

/// Requests wait for a dial that neither connects nor fails (a handshake to the private
/// address the DHT had): after [`STALLED_DIAL_AFTER`] every route is dialed besides, circuit
/// included, [`STALLED_DIAL_ROUNDS`] times at most; a connection ends the wait.
#[test]
fn requests_waiting_on_a_stalled_dial_get_every_route_dialed_besides() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let member = PeerId::random();
    sim.routing
        .remember_addr(member, addr("/ip4/192.168.7.2/udp/4001/quic-v1"));
    sim.routing.handle_requests_waiting(sim.at(100), member);
    let stalled = STALLED_DIAL_AFTER.as_millis() as u64;
    let (at, actions) = sim.step(true);
    assert_eq!(at, 100 + stalled, "dialed once the first dial stalled");
    assert!(
        matches!(actions.as_slice(), [Action::Dial { peer, addrs, condition: PeerCondition::Disconnected, .. }]
            if *peer == member && addrs.contains(&relay_addr.clone().with(Protocol::P2pCircuit))),
        "{actions:?}"
    );
    // Still waiting: again, each as long, a bounded number of times.
    let mut dials = 1;
    while let Some(next) = sim.routing.poll_timeout(sim.last) {
        if next > sim.at(100 + stalled * u64::from(STALLED_DIAL_ROUNDS) * 2) {
            break;
        }
        let (_, actions) = sim.step(true);
        dials += actions
            .iter()
            .filter(|a| matches!(a, Action::Dial { peer, .. } if *peer == member))
            .count();
    }
    assert_eq!(dials, usize::from(STALLED_DIAL_ROUNDS), "bounded");
    // A new request waits afresh; a connection ends the wait before its deadline.
    let t = sim.ms_of(sim.last) + 10;
    sim.routing.handle_requests_waiting(sim.at(t), member);
    sim.connect(
        t + 500,
        member,
        &format!("{relay_addr}/p2p-circuit/p2p/{member}"),
    );
    sim.actions();
    sim.routing.handle_timeout(sim.at(t + stalled + 1), true);
    assert!(
        !sim.actions()
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if *peer == member)),
        "connected: nothing more to dial"
    );
    // Requests to a connected peer do not wait.
    sim.routing
        .handle_requests_waiting(sim.at(t + stalled + 2), member);
    sim.routing.handle_timeout(sim.at(t + 3 * stalled), true);
    assert!(
        !sim.actions()
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if *peer == member))
    );
}

#[test]
fn media_gone_direct_punches_a_relayed_control_path_again_at_once() {
    let mut sim = Sim::new();
    let (relay, relay_addr) = sim.relay("192.0.2.1");
    sim.connect_relay(0, relay);
    let member = PeerId::random();
    sim.connect(
        100,
        member,
        &format!("{relay_addr}/p2p-circuit/p2p/{member}"),
    );
    // Every hole punching round failed already: no more are made.
    for t in [200, 10_000, 30_000, 60_000] {
        sim.routing.handle_hole_punch_failed(sim.at(t), member);
        sim.routing.handle_timeout(sim.at(t + 9_000), true);
    }
    sim.actions();
    sim.routing.handle_hole_punch_failed(sim.at(80_000), member);
    sim.routing.handle_timeout(sim.at(95_000), true);
    assert!(sim.actions().is_empty());
    // The media connection went direct: a fresh circuit (a DCUtR round) at once.
    sim.routing.handle_media_direct(sim.at(100_000), member);
    sim.routing.handle_timeout(sim.at(100_000), true);
    let dials: Vec<Vec<Multiaddr>> = sim
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Dial { peer, addrs, .. } if peer == member => Some(addrs),
            _ => None,
        })
        .collect();
    assert_eq!(dials, vec![vec![relay_addr.with(Protocol::P2pCircuit)]]);
    // A direct control path needs nothing.
    let direct = PeerId::random();
    sim.connect(100_100, direct, "/ip4/192.0.2.9/udp/5/quic-v1");
    sim.actions();
    sim.routing.handle_media_direct(sim.at(100_200), direct);
    sim.routing.handle_timeout(sim.at(100_200), true);
    assert!(sim.actions().is_empty());
}
