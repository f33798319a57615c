//! Simulated-time tests of the meeting machine with real MLS (openmls, in memory): N
//! machines, a message queue with latency and optional partitions, and a clock that jumps
//! to the next deadline. No sockets, no sleeps.

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::identity::Identity;
use crate::invite::MeetingSecret;
use crate::media::MediaCommand;
use crate::proto::control::Hello;

const LATENCY: Duration = Duration::from_millis(20);

enum Packet {
    Request {
        from: PeerId,
        to: PeerId,
        request: Request,
        tag: u64,
    },
    Response {
        from: PeerId,
        to: PeerId,
        response: Response,
        tag: u64,
    },
}

struct Node {
    machine: Machine<StdRng>,
    events: Vec<MeetingEvent>,
    alive: bool,
    sent: Vec<Request>,
    /// Media signalling payloads delivered to this node's media plane, by sender.
    signals: Vec<(PeerId, Vec<u8>)>,
}

struct Sim {
    start: Instant,
    now: Instant,
    nodes: BTreeMap<PeerId, Node>,
    queue: Vec<(Instant, Packet)>,
    providers: Vec<PeerId>,
    /// Pairs that cannot reach each other (both directions).
    cut: BTreeSet<(PeerId, PeerId)>,
    /// Nodes whose network dropped: they reach nobody, and nothing on the network answers
    /// them (every other node hears the network: a relay's pings, as the driver reports).
    offline: BTreeSet<PeerId>,
    seed: u64,
    /// Next simulated DHT lookup (joiners learn the providers, as the driver does).
    next_lookup: Instant,
}

fn keys(secret: u8) -> MeetingKeys {
    MeetingKeys::derive(MeetingId([3; 16]), &MeetingSecret::from_bytes([secret; 32]))
}

/// An MLS message for the test meeting.
fn group_message(message: Vec<u8>) -> Request {
    Request::Group {
        meeting_id: keys(1).meeting_id(),
        message,
    }
}

impl Sim {
    fn new() -> Self {
        // The simulated clock needs one arbitrary origin; it never reads the clock again.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            start: now,
            now,
            nodes: BTreeMap::new(),
            queue: Vec::new(),
            providers: Vec::new(),
            cut: BTreeSet::new(),
            offline: BTreeSet::new(),
            seed: 0,
            next_lookup: now,
        }
    }

    fn unix_ms(&self) -> u64 {
        1_700_000_000_000 + (self.now - self.start).as_millis() as u64
    }

    fn rng(&mut self) -> StdRng {
        self.seed += 1;
        StdRng::seed_from_u64(self.seed)
    }

    fn add(&mut self, machine: Machine<StdRng>, peer: PeerId) {
        self.nodes.insert(
            peer,
            Node {
                machine,
                events: Vec::new(),
                alive: true,
                sent: Vec::new(),
                signals: Vec::new(),
            },
        );
        self.drain(peer);
    }

    fn host(&mut self) -> PeerId {
        let identity = Identity::generate();
        let peer = identity.peer_id();
        let rng = self.rng();
        let machine = Machine::host(
            Config::default(),
            MlsIdentity::new(&identity),
            Provider::default(),
            "host".into(),
            keys(1),
            self.now,
            rng,
        )
        .unwrap();
        self.add(machine, peer);
        peer
    }

    fn joiner_with(
        &mut self,
        identity: &Identity,
        secret: u8,
        via: PeerId,
        host: Option<PeerId>,
    ) -> PeerId {
        let peer = identity.peer_id();
        let name = format!("j{}", self.seed + 1);
        self.add_joiner(peer, MlsIdentity::new(identity), &name, secret, host);
        self.greet(peer, via);
        peer
    }

    /// Adds a joining machine for `peer` (not greeting anyone yet).
    fn add_joiner(
        &mut self,
        peer: PeerId,
        me: MlsIdentity,
        name: &str,
        secret: u8,
        host: Option<PeerId>,
    ) {
        let rng = self.rng();
        let machine = Machine::joiner(
            Config::default(),
            me,
            Provider::default(),
            name.into(),
            keys(secret),
            host,
            self.now,
            rng,
        );
        self.add(machine, peer);
    }

    /// A host whose meeting has a lobby.
    fn lobby_host(&mut self) -> PeerId {
        let host = self.host();
        self.set_lobby(host);
        host
    }

    /// `peer` knows (from the invite) that the meeting has a lobby, from now on.
    fn set_lobby(&mut self, peer: PeerId) {
        let now = self.now;
        self.node(peer).machine.set_lobby(now, true);
    }

    /// `peer` learns of candidate `via` now and greets it.
    fn greet(&mut self, peer: PeerId, via: PeerId) {
        let (now, unix_ms) = (self.now, self.unix_ms());
        self.node(peer)
            .machine
            .handle_candidate(now, unix_ms, via, vec![]);
        self.drain(peer);
    }

    /// A host and `N` joiners (the right secret, greeting the host) that formed the group.
    fn form<const N: usize>(&mut self) -> (PeerId, [PeerId; N]) {
        let host = self.host();
        let joiners: [PeerId; N] = std::array::from_fn(|_| self.joiner(1, host));
        let everyone: Vec<PeerId> = std::iter::once(host).chain(joiners).collect();
        self.run_until(Duration::from_secs(5), |s| s.agree(&everyone))
            .expect("group formed");
        (host, joiners)
    }

    /// `to` handles `request` from `from` now (its outputs are not drained).
    fn request(&mut self, to: PeerId, from: PeerId, request: Request) -> Response {
        let (now, unix_ms) = (self.now, self.unix_ms());
        self.node(to)
            .machine
            .handle_request(now, unix_ms, from, request)
    }

    /// `host` removes `victim` now.
    fn kick(&mut self, host: PeerId, victim: PeerId) {
        let now = self.now;
        self.node(host).machine.kick(now, victim).unwrap();
        self.drain(host);
    }

    /// `host` lets `joiner` in from the lobby now.
    fn approve(&mut self, host: PeerId, joiner: PeerId) {
        let now = self.now;
        self.node(host).machine.approve(now, joiner).unwrap();
        self.drain(host);
    }

    /// `peer`'s process is gone without a word: its node and everything on the way to it.
    fn forget(&mut self, peer: PeerId) {
        self.nodes.remove(&peer);
        self.queue.retain(
            |(_, p)| !matches!(p, Packet::Request { to, .. } | Packet::Response { to, .. } if *to == peer),
        );
    }

    fn joiner(&mut self, secret: u8, via: PeerId) -> PeerId {
        self.joiner_with(&Identity::generate(), secret, via, Some(via))
    }

    fn node(&mut self, peer: PeerId) -> &mut Node {
        self.nodes.get_mut(&peer).expect("node exists")
    }

    fn drain(&mut self, peer: PeerId) {
        let now = self.now;
        let node = self.nodes.get_mut(&peer).expect("node exists");
        while let Some(output) = node.machine.poll_output() {
            match output {
                Output::Send {
                    to, request, tag, ..
                } => {
                    node.sent.push(request.clone());
                    self.queue.push((
                        now + LATENCY,
                        Packet::Request {
                            from: peer,
                            to,
                            request,
                            tag,
                        },
                    ));
                }
                Output::StartProviding => self.providers.push(peer),
                Output::StopProviding => self.providers.retain(|p| *p != peer),
                Output::Media(MediaCommand::Signal { from, payload }) => {
                    node.signals.push((from, payload));
                }
                Output::Persist(_) | Output::Media(_) => {}
                Output::Event(event) => node.events.push(event),
            }
        }
    }

    fn reachable(&self, a: PeerId, b: PeerId) -> bool {
        self.nodes.get(&b).is_some_and(|n| n.alive)
            && !self.offline.contains(&a)
            && !self.offline.contains(&b)
            && !self.cut.contains(&(a, b))
            && !self.cut.contains(&(b, a))
    }

    /// Advances to the next packet or deadline and processes it.
    fn step(&mut self) {
        let next_packet = self.queue.iter().map(|(at, _)| *at).min();
        let next_timer = self
            .nodes
            .values()
            .filter(|n| n.alive)
            .filter_map(|n| n.machine.poll_timeout())
            .min();
        let Some(next) = [next_packet, next_timer, Some(self.next_lookup)]
            .into_iter()
            .flatten()
            .min()
        else {
            return;
        };
        self.now = self.now.max(next);
        let (now, unix_ms) = (self.now, self.unix_ms());
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.queue = later;
        for (_, packet) in due {
            match packet {
                Packet::Request {
                    from,
                    to,
                    request,
                    tag,
                } => {
                    if self.reachable(from, to) {
                        let response = self
                            .node(to)
                            .machine
                            .handle_request(now, unix_ms, from, request);
                        self.drain(to);
                        self.queue.push((
                            now + LATENCY,
                            Packet::Response {
                                from: to,
                                to: from,
                                response,
                                tag,
                            },
                        ));
                    } else if self.nodes.get(&from).is_some_and(|n| n.alive) {
                        self.node(from).machine.handle_send_failed(now, to, tag);
                        self.drain(from);
                    }
                }
                Packet::Response {
                    from,
                    to,
                    response,
                    tag,
                } => {
                    if self.nodes.get(&to).is_some_and(|n| n.alive) {
                        if self.reachable(to, from) {
                            self.node(to)
                                .machine
                                .handle_response(now, unix_ms, from, tag, response);
                        } else {
                            self.node(to).machine.handle_send_failed(now, from, tag);
                        }
                        self.drain(to);
                    }
                }
            }
        }
        let peers: Vec<PeerId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(p, _)| *p)
            .collect();
        if now >= self.next_lookup {
            self.next_lookup = now + Duration::from_secs(1);
            let providers = self.providers.clone();
            for peer in &peers {
                if matches!(self.nodes[peer].machine.phase(), Phase::Joining { .. }) {
                    for provider in &providers {
                        self.node(*peer)
                            .machine
                            .handle_candidate(now, unix_ms, *provider, vec![]);
                    }
                    self.drain(*peer);
                }
            }
        }
        for peer in &peers {
            if !self.offline.contains(peer) {
                self.node(*peer).machine.network_heard(now);
            }
        }
        for peer in peers {
            if self
                .node(peer)
                .machine
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.node(peer).machine.handle_timeout(now, unix_ms);
                self.drain(peer);
            }
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..200_000 {
            if self.now >= end {
                return;
            }
            let before = self.now;
            self.step();
            if self.now == before && self.queue.is_empty() {
                self.now = end;
            }
        }
        panic!("simulation did not reach its end time");
    }

    /// Runs until `done` holds (checked after each step), at most `limit`; returns the time taken.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let start = self.now;
        for _ in 0..200_000 {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now >= start + limit {
                return None;
            }
            self.step();
        }
        None
    }

    fn members(&self, peer: PeerId) -> Vec<PeerId> {
        let mut members: Vec<PeerId> = self.nodes[&peer]
            .machine
            .members()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        members.sort();
        members
    }

    fn epoch(&self, peer: PeerId) -> Option<(u64, crate::group::SecurityCode)> {
        self.nodes[&peer].machine.epoch()
    }

    /// Whether every live node in `peers` is in the group with the same epoch and code and
    /// lists exactly the others.
    fn agree(&self, peers: &[PeerId]) -> bool {
        let first = self.epoch(peers[0]);
        first.is_some()
            && peers.iter().all(|p| {
                let mut others: Vec<PeerId> = peers.iter().copied().filter(|o| o != p).collect();
                others.sort();
                self.epoch(*p) == first && self.members(*p) == others
            })
    }

    /// Makes `peer` send a chat line and returns the MLS message it sent (not delivered).
    fn chat_message(&mut self, peer: PeerId, text: &str) -> Vec<u8> {
        let (now, unix_ms) = (self.now, self.unix_ms());
        self.node(peer)
            .machine
            .send_chat(now, unix_ms, text)
            .unwrap();
        std::iter::from_fn(|| self.node(peer).machine.poll_output())
            .find_map(|o| match o {
                Output::Send {
                    request: Request::Group { message, .. },
                    ..
                } => Some(message),
                _ => None,
            })
            .expect("the chat was sent")
    }

    fn chats(&self, peer: PeerId) -> Vec<String> {
        self.nodes[&peer]
            .events
            .iter()
            .filter_map(|e| match e {
                MeetingEvent::Chat { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn host_and_four_simultaneous_joiners_agree_on_one_epoch() {
    for seed in 0..3 {
        let mut sim = Sim::new();
        sim.seed = seed * 100;
        let host = sim.host();
        // Joiners arrive at the same moment and each only knows the host.
        let joiners: Vec<PeerId> = (0..4).map(|_| sim.joiner(1, host)).collect();
        let everyone: Vec<PeerId> = std::iter::once(host)
            .chain(joiners.iter().copied())
            .collect();
        let took = sim
            .run_until(Duration::from_secs(10), |s| s.agree(&everyone))
            .expect("everyone agrees");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        for peer in &everyone {
            assert_eq!(sim.nodes[peer].machine.phase(), Phase::Member);
            let joined: BTreeSet<PeerId> = sim.nodes[peer]
                .events
                .iter()
                .filter_map(|e| match e {
                    MeetingEvent::MemberJoined { peer_id, .. } => Some(*peer_id),
                    _ => None,
                })
                .collect();
            assert_eq!(joined.len(), 4, "each member announced once at {peer}");
        }
        assert_eq!(
            sim.providers.len(),
            5,
            "every member provides the rendezvous key"
        );
    }
}

#[test]
fn wrong_secret_is_refused_and_never_listed() {
    let mut sim = Sim::new();
    let host = sim.host();
    let friend = sim.joiner(1, host);
    let intruder = sim.joiner(9, host);
    sim.run_for(Duration::from_secs(4));
    assert_eq!(sim.nodes[&intruder].machine.phase(), Phase::Refused);
    assert!(
        sim.nodes[&intruder]
            .events
            .contains(&MeetingEvent::JoinRefused)
    );
    assert!(
        sim.members(intruder).is_empty(),
        "the intruder learns no member"
    );
    assert_eq!(sim.members(host), vec![friend]);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_bad_mac, 1);
    assert!(!sim.providers.contains(&intruder));
}

#[test]
fn an_impostor_key_package_is_refused() {
    let mut sim = Sim::new();
    let host = sim.host();
    let victim = Identity::generate();
    let impostor = Identity::generate();
    let peer = impostor.peer_id();
    let forged = MlsIdentity::with_credential_of(&impostor, &victim);
    sim.add_joiner(peer, forged, "x", 1, Some(host));
    sim.greet(peer, host);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.members(host).is_empty(), "the impostor was not added");
    assert_eq!(sim.epoch(host).map(|e| e.0), Some(0));
    assert!(sim.nodes[&peer].machine.epoch().is_none());
}

#[test]
fn replayed_and_stale_hellos_are_refused_and_counted() {
    let mut sim = Sim::new();
    let host = sim.host();
    let joiner = sim.joiner(1, host);
    sim.run_for(Duration::from_secs(1));
    let hello = sim.nodes[&joiner]
        .sent
        .iter()
        .find(|r| matches!(r, Request::Hello(_)))
        .cloned()
        .expect("a hello was sent");
    let unix_ms = sim.unix_ms();
    assert_eq!(sim.request(host, joiner, hello.clone()), Response::Refused);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_replayed, 1);
    // The same hello presented by another identity fails the MAC instead.
    assert_eq!(
        sim.request(host, PeerId::random(), hello),
        Response::Refused
    );
    assert_eq!(sim.nodes[&host].machine.stats().hellos_bad_mac, 1);
    let k = keys(1);
    let nonce = [4u8; NONCE_LEN];
    let old = unix_ms - 10 * 60 * 1000;
    let stranger = PeerId::random();
    let mac = k.hello_mac(&stranger, &host, &nonce, old);
    let stale = Request::Hello(Hello {
        meeting_id: k.meeting_id(),
        nonce,
        unix_ms: old,
        mac,
        name: "x".into(),
        addrs: vec![],
        key_package: vec![],
    });
    assert_eq!(sim.request(host, stranger, stale), Response::Refused);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_stale, 1);
    assert_eq!(
        sim.members(host),
        vec![joiner],
        "the member itself is unaffected"
    );
}

#[test]
fn strangers_get_not_member_for_group_requests() {
    let mut sim = Sim::new();
    let host = sim.host();
    let stranger = PeerId::random();
    let meeting_id = keys(1).meeting_id();
    for request in [
        Request::Heartbeat {
            meeting_id,
            members: vec![],
            epoch: None,
        },
        Request::Bye { meeting_id },
        Request::Commit {
            meeting_id,
            epoch: 0,
            commit: vec![1, 2, 3],
            removals: vec![],
        },
        group_message(vec![0; 10]),
    ] {
        let response = sim.request(host, stranger, request);
        assert_eq!(response, Response::NotMember);
    }
    assert_eq!(sim.epoch(host).map(|e| e.0), Some(0), "nothing changed");
}

#[test]
fn chat_arrives_exactly_once_in_order_at_every_member() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    for i in 0..5 {
        sim.node(a)
            .machine
            .send_chat(now, unix_ms, &format!("line {i}"))
            .unwrap();
    }
    sim.drain(a);
    sim.run_for(Duration::from_secs(1));
    let expected: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    assert_eq!(sim.chats(host), expected);
    assert_eq!(sim.chats(b), expected);
    assert!(sim.chats(a).is_empty(), "no echo to the sender");
}

#[test]
fn a_media_signal_that_cannot_be_delivered_is_retried_and_arrives_once() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    // The path to `a` is down when the offer is sent (the first attempts fail), and back
    // before the retries run out.
    sim.cut.insert((host, a));
    sim.node(host)
        .machine
        .send_signal(a, b"offer".to_vec())
        .unwrap();
    sim.drain(host);
    sim.run_for(Duration::from_millis(700));
    assert!(
        sim.node(a).signals.is_empty(),
        "nothing got through the cut"
    );
    sim.cut.clear();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.node(a).signals, vec![(host, b"offer".to_vec())]);
}

#[test]
fn a_vanished_member_is_removed_by_a_commit_everyone_agrees_on() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    sim.node(b).alive = false;
    let took = sim
        .run_until(Duration::from_secs(10), |s| s.agree(&[host, a]))
        .expect("the survivors agree");
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    let left = sim.nodes[&a].events.iter().any(|e| matches!(e, MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::TimedOut, .. } if *peer_id == b));
    assert!(left, "{:?}", sim.nodes[&a].events);
}

#[test]
fn when_the_committer_vanishes_the_next_leaf_takes_over_within_five_seconds() {
    for seed in 0..3 {
        let mut sim = Sim::new();
        sim.seed = seed * 50;
        let (host, others) = sim.form::<3>();
        let before = sim.epoch(others[0]).unwrap().0;
        sim.node(host).alive = false;
        let took = sim
            .run_until(Duration::from_secs(10), |s| s.agree(&others))
            .expect("the rest agree");
        assert!(took <= Duration::from_secs(5), "seed {seed}: took {took:?}");
        assert!(sim.epoch(others[0]).unwrap().0 > before);
        // Chat keeps working after the takeover.
        let (now, unix_ms) = (sim.now, sim.unix_ms());
        sim.node(others[2])
            .machine
            .send_chat(now, unix_ms, "still here")
            .unwrap();
        sim.drain(others[2]);
        sim.run_for(Duration::from_millis(500));
        assert_eq!(sim.chats(others[0]), vec!["still here".to_owned()]);
    }
}

#[test]
fn the_committer_vanishing_mid_commit_does_not_split_the_group() {
    let mut sim = Sim::new();
    let (host, others) = sim.form::<3>();
    // A new joiner makes the host commit; the host dies right after sending phase 1.
    let late = sim.joiner(1, host);
    for _ in 0..1000 {
        sim.step();
        if sim.nodes[&host]
            .sent
            .iter()
            .any(|r| matches!(r, Request::Commit { .. }))
        {
            break;
        }
    }
    sim.node(host).alive = false;
    let survivors: Vec<PeerId> = others.iter().copied().chain([late]).collect();
    sim.run_until(Duration::from_secs(20), |s| s.agree(&survivors))
        .expect("the survivors (with the late joiner) agree");
}

#[test]
fn two_members_who_both_believe_they_commit_converge() {
    for seed in 0..3 {
        let mut sim = Sim::new();
        sim.seed = seed * 10;
        let (host, [a, b, c]) = sim.form();
        let everyone = [host, a, b, c];
        // Partition: `a` can no longer hear the host, so `a` believes it commits (leaf 1),
        // while the host still commits for the others. Then the partition heals.
        sim.cut.insert((host, a));
        sim.run_for(Duration::from_secs(4));
        sim.cut.clear();
        // Whoever lost is removed and joins again: in the end all four agree.
        let converged = sim.run_until(Duration::from_secs(30), |s| s.agree(&everyone));
        assert!(
            converged.is_some(),
            "seed {seed}: no convergence; epochs {:?}",
            everyone.map(|p| sim.epoch(p))
        );
    }
}

/// Whether `peer` reported `event`.
fn reported(sim: &Sim, peer: PeerId, event: &MeetingEvent) -> bool {
    sim.nodes[&peer].events.contains(event)
}

#[test]
fn a_member_whose_network_drops_is_removed_and_rejoins_by_itself() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let (before, _) = sim.epoch(b).unwrap();
    sim.offline.insert(b);
    sim.run_until(Duration::from_secs(15), |s| s.agree(&[host, a]))
        .expect("the others removed the member that dropped");
    sim.run_for(Duration::from_secs(10));
    // Cut off, `b` removed nobody (no group of one) and says it is reconnecting.
    assert!(reported(&sim, b, &MeetingEvent::Reconnecting));
    assert_eq!(
        sim.epoch(b).unwrap().0,
        before,
        "the cut-off member committed"
    );
    assert!(
        !sim.nodes[&b]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::MemberLeft { .. })),
        "the cut-off member reported the others gone"
    );
    assert!(sim.nodes[&b].machine.is_reconnecting());
    // The network is back: `b` joins again by itself, same identity, within 5 s.
    sim.offline.remove(&b);
    let took = sim
        .run_until(Duration::from_secs(10), |s| s.agree(&[host, a, b]))
        .expect("rejoined");
    assert!(took <= Duration::from_secs(5), "rejoin took {took:?}");
    assert!(reported(&sim, b, &MeetingEvent::Reconnected));
    assert!(!sim.nodes[&b].machine.is_reconnecting());
}

#[test]
fn in_a_meeting_of_two_the_one_still_online_removes_the_one_that_dropped() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    sim.offline.insert(host);
    sim.run_until(Duration::from_secs(15), |s| s.members(a).is_empty())
        .expect("the member still online removed the host that dropped");
    assert!(sim.nodes[&a].events.iter().any(|e| matches!(
        e,
        MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::TimedOut, .. } if *peer_id == host
    )));
    sim.run_for(Duration::from_secs(5));
    assert!(reported(&sim, host, &MeetingEvent::Reconnecting));
    assert_eq!(sim.members(host), vec![a], "the host forked a group of one");
    sim.offline.remove(&host);
    let took = sim
        .run_until(Duration::from_secs(10), |s| s.agree(&[host, a]))
        .expect("the host is back in");
    assert!(took <= Duration::from_secs(5), "rejoin took {took:?}");
}

#[test]
fn a_drop_shorter_than_the_liveness_window_removes_nobody() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let before = sim.epoch(host).unwrap();
    sim.offline.insert(b);
    sim.run_for(Duration::from_millis(2500));
    sim.offline.remove(&b);
    sim.run_for(Duration::from_secs(10));
    for peer in [host, a, b] {
        assert_eq!(sim.epoch(peer), Some(before), "epoch changed at {peer}");
        assert!(!reported(&sim, peer, &MeetingEvent::Reconnecting));
    }
}

#[test]
fn a_cut_off_member_gives_up_reconnecting_once_the_network_is_back_without_them() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    sim.offline.insert(a);
    sim.run_for(Duration::from_secs(8));
    assert!(sim.nodes[&a].machine.is_reconnecting());
    // The host is gone for good by the time the network returns.
    sim.node(host).alive = false;
    sim.offline.remove(&a);
    sim.run_until(Duration::from_secs(10), |s| s.members(a).is_empty())
        .expect("the vanished host is removed once the network is back");
    assert!(reported(&sim, a, &MeetingEvent::Reconnected));
}

#[test]
fn a_pasted_document_arrives_whole_through_a_partition_and_the_sender_sees_it_delivered() {
    let mut sim = Sim::new();
    let (host, [a, b, c]) = sim.form();
    let lines: Vec<String> = (0..300).map(|i| format!("paragraph {i}")).collect();
    // `a` cannot be reached for two seconds while the paste goes out.
    sim.cut.insert((host, a));
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    for line in &lines {
        sim.node(host)
            .machine
            .send_chat(now, unix_ms, line)
            .unwrap();
    }
    sim.drain(host);
    sim.run_for(Duration::from_secs(2));
    sim.cut.clear();
    let last = lines.last().unwrap().clone();
    sim.run_until(Duration::from_secs(60), |s| {
        [a, b, c].iter().all(|p| s.chats(*p).last() == Some(&last))
    })
    .unwrap_or_else(|| {
        panic!(
            "stats {:?} counts {:?} pending {} events {:?}",
            sim.nodes[&a].machine.stats(),
            [a, b, c].map(|p| sim.chats(p).len()),
            sim.nodes[&host].machine.chat_pending(),
            sim.nodes[&host]
                .events
                .iter()
                .filter(|e| !matches!(
                    e,
                    MeetingEvent::ChatSent { .. } | MeetingEvent::ChatDelivered { .. }
                ))
                .collect::<Vec<_>>()
        )
    });
    for peer in [a, b, c] {
        assert_eq!(sim.chats(peer), lines, "{peer}: lost, doubled or reordered");
    }
    sim.run_for(Duration::from_secs(2)); // the last acknowledgements
    let events = &sim.nodes[&host].events;
    let delivered = events
        .iter()
        .filter(|e| matches!(e, MeetingEvent::ChatDelivered { .. }))
        .count();
    assert_eq!(delivered, lines.len());
    assert_eq!(sim.nodes[&host].machine.chat_pending(), 0);
    // One length limit, in bytes, refused whole at the sender.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    let err = sim
        .node(host)
        .machine
        .send_chat(now, unix_ms, &"é".repeat(2049))
        .unwrap_err();
    assert!(matches!(
        err,
        GroupError::ChatTooLong {
            len: 4098,
            max: 4096
        }
    ));
}

#[test]
fn a_kicked_member_cannot_read_what_follows() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    sim.kick(host, b);
    let took = sim
        .run_until(Duration::from_secs(5), |s| s.agree(&[host, a]))
        .expect("kick committed");
    assert!(
        took < Duration::from_secs(1),
        "kick to new epoch took {took:?}"
    );
    sim.run_for(Duration::from_millis(200));
    assert!(sim.nodes[&b].events.contains(&MeetingEvent::Removed {
        reason: LeaveReason::Kicked
    }));
    assert_eq!(sim.nodes[&b].machine.phase(), Phase::Removed);
    // Messages sent after the kick, fed to the kicked member, do not decrypt.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    let message = sim.chat_message(host, "after the kick");
    let kicked = sim.node(b);
    kicked.machine.phase = Phase::Member; // even a modified client that ignores its removal
    let response = kicked
        .machine
        .handle_request(now, unix_ms, host, group_message(message));
    assert!(!matches!(response, Response::Nack { .. }));
    assert!(
        sim.chats(b).is_empty(),
        "the kicked member read a message sent after its removal"
    );
    // A non-host member's kick is refused by policy while the host is present.
    let now = sim.now;
    assert!(
        sim.node(a).machine.kick(now, host).is_ok(),
        "sent to the committer"
    );
    sim.drain(a);
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.agree(&[host, a]),
        "the host was not removed by a non-host"
    );
}

#[test]
fn a_goodbye_removes_the_member_with_reason_left() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    sim.node(b).machine.leave();
    sim.drain(b);
    sim.run_until(Duration::from_secs(3), |s| s.agree(&[host, a]))
        .expect("removed");
    assert!(sim.nodes[&a].events.iter().any(|e| matches!(e, MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::Left, .. } if *peer_id == b)));
    assert!(!sim.providers.contains(&b));
}

#[test]
fn a_restarted_member_rejoins_with_a_new_leaf() {
    let mut sim = Sim::new();
    let host = sim.host();
    let identity = Identity::generate();
    let a = sim.joiner_with(&identity, 1, host, Some(host));
    let b = sim.joiner(1, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b]))
        .expect("group formed");
    // A line before the restart: the host's stream to `a` is under way.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    sim.node(host)
        .machine
        .send_chat(now, unix_ms, "before")
        .unwrap();
    sim.drain(host);
    sim.run_for(Duration::from_secs(1));
    // `a` restarts: same identity, fresh state, joins again before anyone timed it out.
    sim.forget(a);
    sim.joiner_with(&identity, 1, host, Some(host));
    sim.run_until(Duration::from_secs(10), |s| s.agree(&[host, a, b]))
        .expect("rejoined");
    // The host's stream to the new `a` starts over: its next line arrives at once.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    sim.node(host)
        .machine
        .send_chat(now, unix_ms, "after")
        .unwrap();
    sim.drain(host);
    sim.run_until(Duration::from_secs(2), |s| s.chats(a) == ["after"])
        .expect("the restarted member reads the host's next line at once");
    // The replacement is committed once: no commit storm afterwards (regression: the new
    // leaf can reuse the old leaf index).
    let settled = sim.epoch(host).unwrap().0;
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.epoch(host).unwrap().0,
        settled,
        "epochs kept changing after the rejoin"
    );
    assert!(sim.agree(&[host, a, b]));
}

#[test]
fn join_times_out_when_nobody_answers() {
    let mut sim = Sim::new();
    let ghost = PeerId::random();
    let joiner = sim.joiner(1, ghost);
    sim.run_for(Config::default().join_timeout + Duration::from_secs(1));
    assert_eq!(sim.nodes[&joiner].machine.phase(), Phase::TimedOut);
    assert!(
        sim.nodes[&joiner]
            .events
            .contains(&MeetingEvent::JoinTimedOut)
    );
}

#[test]
fn a_lobby_joiner_waits_learns_nothing_and_enters_when_the_host_approves() {
    let mut sim = Sim::new();
    let start = sim.now;
    let host = sim.lobby_host();
    let early = sim.joiner(1, host);
    sim.set_lobby(early);
    // Admit a first member so that there is a group to hide.
    sim.run_until(Duration::from_secs(3), |s| {
        s.nodes[&host]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::Knocking { .. }))
    })
    .expect("knock");
    sim.node(host).machine.approve(start, early).unwrap();
    sim.drain(host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, early]))
        .expect("first member in");

    let identity = Identity::generate();
    let late = sim.joiner_with(&identity, 1, early, Some(host));
    sim.set_lobby(late);
    sim.run_for(Duration::from_secs(5));
    assert!(sim.nodes[&late].events.contains(&MeetingEvent::Waiting));
    assert!(
        sim.nodes[&host]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::Knocking { peer_id, .. } if *peer_id == late))
    );
    assert!(
        sim.nodes[&late].machine.epoch().is_none(),
        "not in the group before approval"
    );
    // It was never told who is in the meeting beyond the peers it greeted itself.
    let told: Vec<PeerId> = sim.nodes[&late].machine.peers.keys().copied().collect();
    assert!(told.iter().all(|p| *p == host || *p == early), "{told:?}");
    assert!(
        sim.nodes[&late]
            .events
            .iter()
            .all(|e| !matches!(e, MeetingEvent::MemberJoined { .. }))
    );
    // Only the host approves.
    let now = sim.now;
    assert!(sim.node(early).machine.approve(now, late).is_err());
    sim.approve(host, late);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, early, late]))
        .expect("approved joiner in");
}

#[test]
fn a_tampered_group_message_is_rejected_counted_and_harmless() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    let message = sim.chat_message(host, "original");
    let mut tampered = message.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let response = sim.request(a, host, group_message(tampered));
    assert_eq!(response, Response::Ack, "dropped, not retried");
    assert_eq!(sim.nodes[&a].machine.stats().group_messages_rejected, 1);
    assert!(sim.chats(a).is_empty());
    // Garbage is rejected the same way, and the member carries on.
    let response = sim.request(a, host, group_message(vec![0xff; 40]));
    assert_eq!(response, Response::Ack);
    assert_eq!(sim.nodes[&a].machine.stats().group_messages_rejected, 2);
    sim.request(a, host, group_message(message));
    sim.drain(a);
    assert_eq!(sim.chats(a), vec!["original".to_owned()]);
}

#[test]
fn an_mls_welcome_from_a_peer_that_never_proved_the_secret_is_refused() {
    let mut sim = Sim::new();
    let host = sim.host();
    let joiner = sim.joiner(1, host);
    // A DHT node that saw the joiner's hello builds its own group and welcomes the joiner.
    let stranger = Identity::generate();
    let stranger_me = MlsIdentity::new(&stranger);
    let stranger_provider = Provider::default();
    let mut group =
        MeetingGroup::create(&stranger_provider, &stranger_me, keys(1).meeting_id()).unwrap();
    let hello = sim.nodes[&joiner].sent.iter().find_map(|r| match r {
        Request::Hello(h) => Some(h.key_package.clone()),
        _ => None,
    });
    let package =
        crate::group::mls::validate_key_package(&stranger_provider, &hello.unwrap(), joiner)
            .unwrap();
    let out = group
        .commit(&stranger_provider, &stranger_me, vec![package], vec![])
        .unwrap();
    let welcome = Request::Welcome {
        meeting_id: keys(1).meeting_id(),
        welcome: out.welcome.unwrap(),
    };
    let response = sim.request(joiner, stranger.peer_id(), welcome);
    assert_eq!(response, Response::Refused);
    assert!(
        sim.nodes[&joiner].machine.epoch().is_none(),
        "not tricked into a foreign group"
    );
    // The real meeting still takes it in.
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, joiner]))
        .expect("joined the real meeting");
}

#[test]
fn a_kicked_member_cannot_simply_say_hello_again() {
    let mut sim = Sim::new();
    let host = sim.host();
    let identity = Identity::generate();
    let victim = sim.joiner_with(&identity, 1, host, Some(host));
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, victim]))
        .expect("group formed");
    sim.kick(host, victim);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.members(host).is_empty());
    // The kicked client comes back with the invite.
    sim.nodes.remove(&victim);
    sim.joiner_with(&identity, 1, host, Some(host));
    sim.run_for(Duration::from_secs(6));
    assert!(
        sim.members(host).is_empty(),
        "a kicked member was let back in"
    );
}

#[test]
fn a_member_that_missed_a_confirmation_catches_up_by_joining_again() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    // A newcomer makes the host commit; the confirmation to `b` is lost on the way.
    let c = sim.joiner(1, host);
    let mut diverged = false;
    for _ in 0..5000 {
        sim.queue.retain(|(_, p)| !matches!(p, Packet::Request { to, request: Request::Confirm { .. }, .. } if *to == b));
        sim.step();
        let (theirs, ours) = (sim.epoch(host).map(|e| e.0), sim.epoch(b).map(|e| e.0));
        if theirs > ours && ours.is_some() {
            diverged = true;
            break;
        }
    }
    assert!(diverged, "b fell behind the host");
    sim.run_until(Duration::from_secs(20), |s| s.agree(&[host, a, b, c]))
        .expect("b caught up");
}

/// The `MemberMuted` events `peer` reported, in order.
fn muted_events(sim: &Sim, peer: PeerId) -> Vec<(PeerId, bool)> {
    sim.nodes[&peer]
        .events
        .iter()
        .filter_map(|e| match e {
            MeetingEvent::MemberMuted { peer_id, muted } => Some((*peer_id, *muted)),
            _ => None,
        })
        .collect()
}

/// Makes `peer` mute or unmute and returns the MLS messages it sent (not delivered).
fn state_messages(sim: &mut Sim, peer: PeerId, muted: bool) -> Vec<(PeerId, Vec<u8>)> {
    sim.node(peer).machine.set_muted(muted);
    std::iter::from_fn(|| sim.node(peer).machine.poll_output())
        .filter_map(|o| match o {
            Output::Send {
                to,
                request: Request::Group { message, .. },
                ..
            } => Some((to, message)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_members_mute_reaches_everyone_and_late_joiners_learn_it() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    sim.node(a).machine.set_muted(true);
    sim.drain(a);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(muted_events(&sim, host), vec![(a, true)]);
    assert!(sim.nodes[&host].machine.is_member_muted(&a));
    // Muting twice changes nothing and sends nothing.
    sim.node(a).machine.set_muted(true);
    assert!(sim.node(a).machine.poll_output().is_none());

    // A late joiner learns the state; the others are not told again.
    let b = sim.joiner(1, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b]))
        .expect("b joined");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(muted_events(&sim, b), vec![(a, true)]);
    assert_eq!(muted_events(&sim, host), vec![(a, true)], "no repeat");
    assert!(muted_events(&sim, a).is_empty(), "nobody else muted");

    // Unmuting reaches both.
    sim.node(a).machine.set_muted(false);
    sim.drain(a);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(muted_events(&sim, host), vec![(a, true), (a, false)]);
    assert_eq!(muted_events(&sim, b), vec![(a, true), (a, false)]);

    // Someone muted before entering the group is announced as soon as it is in.
    let identity = Identity::generate();
    let c = identity.peer_id();
    sim.add_joiner(c, MlsIdentity::new(&identity), "c", 1, Some(host));
    sim.node(c).machine.set_muted(true);
    sim.greet(c, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b, c]))
        .expect("c joined");
    sim.run_for(Duration::from_secs(1));
    for peer in [host, a, b] {
        assert!(
            muted_events(&sim, peer).contains(&(c, true)),
            "{peer} did not learn that c is muted"
        );
    }
}

#[test]
fn mute_announcements_from_non_members_or_forged_ones_are_ignored() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();

    // A member passing on another member's announcement as its own: refused (the MLS
    // sender must be the peer on the connection).
    let sent = state_messages(&mut sim, a, true);
    let copy = |to: PeerId| {
        sent.iter()
            .find(|(t, _)| *t == to)
            .map(|(_, m)| m.clone())
            .expect("a told every member")
    };
    let (to_host, to_b) = (copy(host), copy(b));
    let group = |message: Vec<u8>| group_message(message);
    let rejected = sim.nodes[&b].machine.stats().group_messages_rejected;
    sim.request(b, host, group(to_host));
    sim.drain(b);
    assert_eq!(
        sim.nodes[&b].machine.stats().group_messages_rejected,
        rejected + 1
    );
    // Tampered: refused too.
    let mut tampered = to_b.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    sim.request(b, a, group(tampered));
    sim.drain(b);
    assert_eq!(
        sim.nodes[&b].machine.stats().group_messages_rejected,
        rejected + 2
    );
    assert!(muted_events(&sim, b).is_empty(), "nothing forged counted");
    assert!(!sim.nodes[&b].machine.is_member_muted(&a));
    assert!(!sim.nodes[&b].machine.is_member_muted(&host));
    // The genuine one counts, once; a replay of it does not count again.
    for _ in 0..2 {
        sim.request(b, a, group(to_b.clone()));
        sim.drain(b);
    }
    assert_eq!(muted_events(&sim, b), vec![(a, true)]);

    // A member removed from the group is no longer heard, even with an announcement it
    // made while still a member: a unmutes (not delivered yet), is kicked, then its
    // announcement arrives.
    let unmute = state_messages(&mut sim, a, false);
    sim.kick(host, a);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, b]))
        .expect("kick committed");
    for (to, message) in unmute {
        let response = sim.request(to, a, group(message));
        assert_eq!(response, Response::NotMember);
        sim.drain(to);
    }
    assert_eq!(
        muted_events(&sim, b),
        vec![(a, true)],
        "a's unmute came too late"
    );
    // And a stranger's request is answered NotMember, reporting nothing.
    let response = sim.request(b, PeerId::random(), group_message(vec![0; 64]));
    assert_eq!(response, Response::NotMember);
}

/// A hello from `from` to `to` made with `secret` (no key package).
fn forged_hello(secret: u8, from: PeerId, to: PeerId, nonce: u64, unix_ms: u64) -> Request {
    let k = keys(secret);
    let mut bytes = [0u8; NONCE_LEN];
    bytes[..8].copy_from_slice(&nonce.to_be_bytes());
    Request::Hello(Hello {
        meeting_id: k.meeting_id(),
        nonce: bytes,
        unix_ms,
        mac: k.hello_mac(&from, &to, &bytes, unix_ms),
        name: format!("n{nonce}"),
        addrs: vec![],
        key_package: vec![],
    })
}

fn lobby_left(sim: &Sim, host: PeerId) -> Vec<PeerId> {
    sim.nodes[&host]
        .events
        .iter()
        .filter_map(|e| match e {
            MeetingEvent::LobbyLeft { peer_id, .. } => Some(*peer_id),
            _ => None,
        })
        .collect()
}

fn knocks(sim: &Sim, host: PeerId, peer: PeerId) -> usize {
    sim.nodes[&host]
        .events
        .iter()
        .filter(|e| matches!(e, MeetingEvent::Knocking { peer_id, .. } if *peer_id == peer))
        .count()
}

#[test]
fn a_lobby_joiner_that_goes_away_leaves_the_lobby_and_the_host_is_told() {
    let mut sim = Sim::new();
    let host = sim.lobby_host();
    let identity = Identity::generate();
    let joiner = sim.joiner_with(&identity, 1, host, Some(host));
    sim.set_lobby(joiner);
    // While it keeps asking, it stays listed, well past the expiry.
    let expiry = Config::default().lobby_expiry;
    sim.run_for(expiry * 2);
    assert!(sim.nodes[&joiner].events.contains(&MeetingEvent::Waiting));
    assert_eq!(knocks(&sim, host, joiner), 1);
    assert!(lobby_left(&sim, host).is_empty());
    assert!(sim.nodes[&host].machine.knocking.contains_key(&joiner));
    // It goes away without a word: within the expiry (plus a greeting interval) the
    // host is told, and can no longer let it in.
    sim.node(joiner).alive = false;
    let gone = sim
        .run_until(expiry + Duration::from_secs(6), |s| {
            !lobby_left(s, host).is_empty()
        })
        .expect("the host was told");
    assert!(
        gone >= expiry - Config::default().rehello_interval,
        "{gone:?}"
    );
    assert_eq!(lobby_left(&sim, host), vec![joiner]);
    assert_eq!(sim.nodes[&host].machine.stats().lobby_expired, 1);
    let now = sim.now;
    assert!(sim.node(host).machine.approve(now, joiner).is_err());
    assert!(sim.nodes[&host].machine.mls.queued_adds.is_empty());
    assert_eq!(sim.epoch(host).map(|e| e.0), Some(0), "nobody was added");
    // Coming back means knocking again, and approval still works then.
    sim.forget(joiner);
    sim.joiner_with(&identity, 1, host, Some(host));
    sim.set_lobby(joiner);
    sim.run_until(Duration::from_secs(3), |s| knocks(s, host, joiner) == 2)
        .expect("knocked again");
    sim.approve(host, joiner);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, joiner]))
        .expect("let in after coming back");
}

#[test]
fn the_lobby_is_bounded_and_makes_room_as_joiners_expire() {
    let mut sim = Sim::new();
    let host = sim.lobby_host();
    let max = Config::default().max_lobby;
    let unix_ms = sim.unix_ms();
    let joiners: Vec<PeerId> = (0..max).map(|_| PeerId::random()).collect();
    for (i, joiner) in joiners.iter().enumerate() {
        let hello = forged_hello(1, *joiner, host, i as u64, unix_ms);
        let response = sim.request(host, *joiner, hello);
        assert!(matches!(response, Response::Welcome { .. }), "{response:?}");
    }
    sim.drain(host);
    assert_eq!(sim.nodes[&host].machine.knocking.len(), max);
    // One more proves the secret too, but must come back later.
    let extra = PeerId::random();
    let response = sim.request(host, extra, forged_hello(1, extra, host, 999, unix_ms));
    assert_eq!(response, Response::NotMember);
    assert_eq!(sim.nodes[&host].machine.stats().lobby_full, 1);
    assert_eq!(knocks(&sim, host, extra), 0);
    // None of them greets again: they all expire, and the host hears of each once.
    let expiry = Config::default().lobby_expiry;
    let took = sim
        .run_until(expiry + Duration::from_secs(2), |s| {
            lobby_left(s, host).len() >= max
        })
        .expect("all expired");
    assert!(took >= expiry, "{took:?}");
    let mut left = lobby_left(&sim, host);
    left.sort();
    let mut expected = joiners.clone();
    expected.sort();
    assert_eq!(left, expected);
    assert!(sim.nodes[&host].machine.knocking.is_empty());
    let unix_ms = sim.unix_ms();
    let response = sim.request(host, extra, forged_hello(1, extra, host, 1000, unix_ms));
    assert!(matches!(response, Response::Welcome { .. }), "{response:?}");
    sim.drain(host);
    assert_eq!(knocks(&sim, host, extra), 1);
}

#[test]
fn a_flood_of_wrong_hellos_is_cheap_and_the_meeting_keeps_admitting() {
    use crate::admission::{GLOBAL_HELLO_BURST, PEER_HELLO_BURST};
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    let unix_ms = sim.unix_ms();
    // One peer floods with a wrong secret: only its burst is even checked.
    let flooder = PeerId::random();
    let mut refused = 0;
    for i in 0..1000 {
        let hello = forged_hello(9, flooder, host, i, unix_ms);
        match sim.request(host, flooder, hello) {
            Response::Refused => refused += 1,
            Response::NotMember => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let stats = sim.nodes[&host].machine.stats();
    assert_eq!(refused, PEER_HELLO_BURST);
    assert_eq!(stats.hellos_bad_mac, u64::from(PEER_HELLO_BURST));
    assert_eq!(
        stats.hellos_rate_limited,
        1000 - u64::from(PEER_HELLO_BURST)
    );
    // Many fresh identities flood together: the global budget caps what is checked.
    for i in 0..1000 {
        let stranger = PeerId::random();
        let hello = forged_hello(9, stranger, host, i, unix_ms);
        let response = sim.request(host, stranger, hello);
        assert!(matches!(response, Response::Refused | Response::NotMember));
    }
    let stats = sim.nodes[&host].machine.stats();
    // Both floods came from peers that never proved the secret, within one instant: all
    // the MACs checked fit in the one global burst (which the joins before used a little).
    assert!(
        stats.hellos_bad_mac <= u64::from(GLOBAL_HELLO_BURST),
        "{}",
        stats.hellos_bad_mac
    );
    assert!(stats.hellos_bad_mac > u64::from(PEER_HELLO_BURST));
    assert_eq!(stats.hellos_rate_limited, 2000 - stats.hellos_bad_mac);
    sim.drain(host);
    // The member's own traffic goes on, and a genuine joiner arriving right now is held
    // back only briefly (asked to try again, not refused) and gets in.
    let b = sim.joiner(1, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b]))
        .expect("a genuine joiner got in despite the flood");
    assert_eq!(sim.nodes[&b].machine.phase(), Phase::Member);
    assert!(
        sim.nodes[&host].machine.stats().hellos_rate_limited > stats.hellos_rate_limited,
        "the joiner's first hello met the exhausted budget"
    );
}

#[test]
fn a_lobby_joiner_that_says_goodbye_leaves_the_lobby_at_once() {
    let mut sim = Sim::new();
    let host = sim.lobby_host();
    let joiner = sim.joiner(1, host);
    sim.set_lobby(joiner);
    sim.run_until(Duration::from_secs(3), |s| {
        knocks(s, host, joiner) == 1 && s.nodes[&joiner].events.contains(&MeetingEvent::Waiting)
    })
    .expect("knocked and told to wait");
    sim.node(joiner).machine.leave();
    sim.drain(joiner);
    let took = sim
        .run_until(Duration::from_secs(1), |s| {
            lobby_left(s, host) == vec![joiner]
        })
        .expect("the host was told at once");
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert!(sim.nodes[&host].machine.knocking.is_empty());
    assert_eq!(
        sim.nodes[&host].machine.stats().lobby_expired,
        0,
        "not an expiry"
    );
    assert_eq!(sim.nodes[&host].machine.stats().requests_from_strangers, 0);
    let now = sim.now;
    assert!(sim.node(host).machine.approve(now, joiner).is_err());
}
