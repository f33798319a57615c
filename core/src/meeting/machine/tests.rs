//! Simulated-time tests of the meeting machine: N machines, a message queue with latency,
//! and a clock that jumps to the next deadline. No sockets, no sleeps.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::invite::MeetingSecret;

const LATENCY: Duration = Duration::from_millis(20);

enum Packet {
    Request {
        from: PeerId,
        to: PeerId,
        request: Request,
    },
    Response {
        from: PeerId,
        to: PeerId,
        response: Response,
    },
}

struct Node {
    machine: Machine<StdRng>,
    events: Vec<MeetingEvent>,
    alive: bool,
    sent: Vec<Request>,
}

struct Sim {
    start: Instant,
    now: Instant,
    nodes: BTreeMap<PeerId, Node>,
    queue: Vec<(Instant, Packet)>,
    providers: Vec<PeerId>,
}

fn keys(secret: u8) -> MeetingKeys {
    MeetingKeys::derive(MeetingId([3; 16]), &MeetingSecret::from_bytes([secret; 32]))
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
        }
    }

    fn unix_ms(&self) -> u64 {
        1_700_000_000_000 + (self.now - self.start).as_millis() as u64
    }

    fn add(&mut self, machine: Machine<StdRng>, peer: PeerId) {
        self.nodes.insert(
            peer,
            Node {
                machine,
                events: Vec::new(),
                alive: true,
                sent: Vec::new(),
            },
        );
        self.drain(peer);
    }

    fn host(&mut self, seed: u64) -> PeerId {
        let peer = PeerId::random();
        let machine = Machine::host(
            Config::default(),
            peer,
            format!("n{seed}"),
            keys(1),
            self.now,
            StdRng::seed_from_u64(seed),
        );
        self.add(machine, peer);
        peer
    }

    fn joiner(&mut self, seed: u64, secret: u8, via: PeerId) -> PeerId {
        let peer = PeerId::random();
        let machine = Machine::joiner(
            Config::default(),
            peer,
            format!("n{seed}"),
            keys(secret),
            self.now,
            StdRng::seed_from_u64(seed),
        );
        self.add(machine, peer);
        let unix_ms = self.unix_ms();
        let now = self.now;
        self.node(peer)
            .machine
            .handle_candidate(now, unix_ms, via, vec![]);
        self.drain(peer);
        peer
    }

    fn node(&mut self, peer: PeerId) -> &mut Node {
        self.nodes.get_mut(&peer).expect("node exists")
    }

    fn drain(&mut self, peer: PeerId) {
        let now = self.now;
        let node = self.nodes.get_mut(&peer).expect("node exists");
        while let Some(output) = node.machine.poll_output() {
            match output {
                Output::Send { to, request, .. } => {
                    node.sent.push(request.clone());
                    self.queue.push((
                        now + LATENCY,
                        Packet::Request {
                            from: peer,
                            to,
                            request,
                        },
                    ));
                }
                Output::StartProviding => self.providers.push(peer),
                Output::StopProviding => self.providers.retain(|p| *p != peer),
                Output::Event(event) => node.events.push(event),
            }
        }
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
        let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
            return;
        };
        self.now = self.now.max(next);
        let now = self.now;
        let unix_ms = self.unix_ms();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.queue = later;
        for (_, packet) in due {
            match packet {
                Packet::Request { from, to, request } => {
                    let alive = self.nodes.get(&to).is_some_and(|n| n.alive);
                    if alive {
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
                            },
                        ));
                    } else if self.nodes.get(&from).is_some_and(|n| n.alive) {
                        self.node(from).machine.handle_send_failed(to);
                        self.drain(from);
                    }
                }
                Packet::Response { from, to, response } => {
                    if self.nodes.get(&to).is_some_and(|n| n.alive) {
                        self.node(to)
                            .machine
                            .handle_response(now, unix_ms, from, response);
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
        for peer in peers {
            if self
                .node(peer)
                .machine
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.node(peer).machine.handle_timeout(now);
                self.drain(peer);
            }
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..100_000 {
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

    fn member_set(&self, peer: PeerId) -> Vec<PeerId> {
        self.nodes[&peer]
            .machine
            .members()
            .map(|(p, _)| *p)
            .collect()
    }

    fn joined_events(&self, peer: PeerId) -> Vec<PeerId> {
        self.nodes[&peer]
            .events
            .iter()
            .filter_map(|e| match e {
                MeetingEvent::MemberJoined { peer_id, .. } => Some(*peer_id),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn host_and_four_joiners_all_see_each_other() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    // Joiners arrive at the same moment and each only knows the host: gossip must do the rest.
    let joiners: Vec<PeerId> = (2..=5).map(|seed| sim.joiner(seed, 1, host)).collect();
    sim.run_for(Duration::from_secs(6));
    let everyone: Vec<PeerId> = std::iter::once(host)
        .chain(joiners.iter().copied())
        .collect();
    for peer in &everyone {
        let mut expected: Vec<PeerId> = everyone.iter().copied().filter(|p| p != peer).collect();
        expected.sort();
        let mut got = sim.member_set(*peer);
        got.sort();
        assert_eq!(got, expected, "member list of {peer}");
        let mut announced = sim.joined_events(*peer);
        announced.sort();
        assert_eq!(
            announced, expected,
            "each member announced exactly once at {peer}"
        );
        assert_eq!(sim.nodes[peer].machine.phase(), Phase::Member);
    }
    assert_eq!(
        sim.providers.len(),
        5,
        "every member provides the rendezvous key"
    );
}

#[test]
fn wrong_secret_is_refused_and_never_listed() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let friend = sim.joiner(2, 1, host);
    let intruder = sim.joiner(3, 9, host);
    sim.run_for(Duration::from_secs(4));
    assert_eq!(sim.nodes[&intruder].machine.phase(), Phase::Refused);
    assert!(
        sim.nodes[&intruder]
            .events
            .contains(&MeetingEvent::JoinRefused)
    );
    assert!(
        sim.member_set(intruder).is_empty(),
        "the intruder learns no member"
    );
    assert_eq!(sim.member_set(host), vec![friend]);
    assert!(!sim.joined_events(host).contains(&intruder));
    assert_eq!(sim.nodes[&host].machine.stats().hellos_bad_mac, 1);
    assert!(!sim.providers.contains(&intruder));
}

#[test]
fn replayed_hello_is_refused_and_counted() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let joiner = sim.joiner(2, 1, host);
    sim.run_for(Duration::from_secs(1));
    let hello = sim.nodes[&joiner]
        .sent
        .iter()
        .find(|r| matches!(r, Request::Hello(_)))
        .cloned()
        .expect("a hello was sent");
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    let response = sim
        .node(host)
        .machine
        .handle_request(now, unix_ms, joiner, hello.clone());
    assert_eq!(response, Response::Refused);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_replayed, 1);
    // The same hello presented by another identity fails the MAC instead.
    let response = sim
        .node(host)
        .machine
        .handle_request(now, unix_ms, PeerId::random(), hello);
    assert_eq!(response, Response::Refused);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_bad_mac, 1);
    assert_eq!(
        sim.member_set(host),
        vec![joiner],
        "the member itself is unaffected"
    );
}

#[test]
fn stale_hello_is_refused() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let joiner = PeerId::random();
    let k = keys(1);
    let nonce = [4u8; NONCE_LEN];
    let old = sim.unix_ms() - 10 * 60 * 1000;
    let mac = k.hello_mac(&joiner, &host, &nonce, old);
    let hello = Request::Hello(Hello {
        meeting_id: k.meeting_id(),
        nonce,
        unix_ms: old,
        mac,
        name: "x".into(),
        addrs: vec![],
    });
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    assert_eq!(
        sim.node(host)
            .machine
            .handle_request(now, unix_ms, joiner, hello),
        Response::Refused
    );
    assert_eq!(sim.nodes[&host].machine.stats().hellos_stale, 1);
}

#[test]
fn forged_welcome_does_not_admit() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let joiner = sim.joiner(2, 1, host);
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    // Before the real answer arrives, an impostor answers with a made-up MAC.
    sim.node(joiner).machine.handle_response(
        now,
        unix_ms,
        host,
        Response::Welcome {
            mac: [0; 32],
            members: vec![],
        },
    );
    assert!(sim.member_set(joiner).is_empty());
    assert_eq!(sim.nodes[&joiner].machine.stats().welcomes_rejected, 1);
}

#[test]
fn strangers_get_not_member_for_heartbeats_and_byes() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    let stranger = PeerId::random();
    let meeting_id = keys(1).meeting_id();
    assert_eq!(
        sim.node(host).machine.handle_request(
            now,
            unix_ms,
            stranger,
            Request::Heartbeat {
                meeting_id,
                members: vec![]
            }
        ),
        Response::NotMember
    );
    assert_eq!(
        sim.node(host)
            .machine
            .handle_request(now, unix_ms, stranger, Request::Bye { meeting_id }),
        Response::NotMember
    );
    assert_eq!(sim.nodes[&host].machine.stats().requests_from_strangers, 2);
}

#[test]
fn vanished_member_times_out_within_the_liveness_bound() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let a = sim.joiner(2, 1, host);
    let b = sim.joiner(3, 1, host);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.member_set(host).len(), 2);
    sim.node(b).alive = false;
    let killed_at = sim.now;
    let mut left_at = None;
    for _ in 0..10_000 {
        sim.step();
        let gone = sim.nodes[&host].events.iter().any(|e| matches!(e, MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::TimedOut, .. } if *peer_id == b));
        if gone
            && sim.nodes[&a]
                .events
                .iter()
                .any(|e| matches!(e, MeetingEvent::MemberLeft { peer_id, .. } if *peer_id == b))
        {
            left_at = Some(sim.now);
            break;
        }
    }
    let elapsed = left_at.expect("the vanished member is reported") - killed_at;
    assert!(
        elapsed <= Config::default().liveness_timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
    assert_eq!(sim.member_set(host), vec![a]);
}

#[test]
fn bye_removes_at_once() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let a = sim.joiner(2, 1, host);
    sim.run_for(Duration::from_secs(1));
    sim.node(a).machine.leave();
    sim.drain(a);
    assert!(sim.nodes[&a].events.contains(&MeetingEvent::Left));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.nodes[&host].events.iter().any(|e| matches!(
        e,
        MeetingEvent::MemberLeft {
            reason: LeaveReason::Left,
            ..
        }
    )));
    assert!(sim.member_set(host).is_empty());
    assert!(!sim.providers.contains(&a));
}

#[test]
fn join_times_out_when_nobody_answers() {
    let mut sim = Sim::new();
    let ghost = PeerId::random();
    let joiner = sim.joiner(2, 1, ghost);
    sim.run_for(Config::default().join_timeout + Duration::from_secs(1));
    assert_eq!(sim.nodes[&joiner].machine.phase(), Phase::TimedOut);
    assert!(
        sim.nodes[&joiner]
            .events
            .contains(&MeetingEvent::JoinTimedOut)
    );
}

#[test]
fn a_member_that_forgot_us_is_greeted_again() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let a = sim.joiner(2, 1, host);
    sim.run_for(Duration::from_secs(1));
    // The host restarts with the same identity and meeting, forgetting its roster.
    let restarted = Machine::host(
        Config::default(),
        host,
        "n1".into(),
        keys(1),
        sim.now,
        StdRng::seed_from_u64(11),
    );
    sim.nodes.remove(&host);
    sim.add(restarted, host);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.member_set(host), vec![a]);
    assert_eq!(sim.member_set(a), vec![host]);
}

#[test]
fn a_failed_hello_does_not_delay_the_next_attempt() {
    let mut sim = Sim::new();
    let host = sim.host(1);
    let joiner = PeerId::random();
    let machine = Machine::joiner(
        Config::default(),
        joiner,
        "j".into(),
        keys(1),
        sim.now,
        StdRng::seed_from_u64(2),
    );
    sim.add(machine, joiner);
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    sim.node(joiner)
        .machine
        .handle_candidate(now, unix_ms, host, vec![]);
    sim.drain(joiner);
    // The first hello could not be delivered (no address yet).
    sim.queue.clear();
    sim.node(joiner).machine.handle_send_failed(host);
    // The DHT supplies the host again a moment later: greeted at once, not after the retry delay.
    sim.node(joiner).machine.handle_candidate(
        now + Duration::from_millis(100),
        unix_ms + 100,
        host,
        vec![],
    );
    sim.drain(joiner);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.member_set(joiner), vec![host]);
}
