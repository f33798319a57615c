//! Simulated-time tests of the meeting machine with real MLS (openmls, in memory): N
//! machines, a message queue with latency and optional partitions, and a clock that jumps
//! to the next deadline. No sockets, no sleeps.
//!
//! This file holds the simulation ([`Sim`]); the scenarios live by topic in `tests/`:
//! admission, lobby, commit (the group and its epochs), liveness (and reconnection),
//! application (chat, signals, muted state).

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::identity::Identity;
use crate::invite::MeetingSecret;
use crate::media::MediaCommand;
use crate::meeting::AlertKind;
use crate::proto::control::Hello;

mod admission;
mod application;
mod commit;
mod insider;
mod liveness;
mod lobby;

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
    /// The meeting secrets a kick rotated in, in order.
    rekeyed: Vec<MeetingSecret>,
}

struct Sim {
    start: Instant,
    now: Instant,
    nodes: BTreeMap<PeerId, Node>,
    queue: Vec<(Instant, Packet)>,
    providers: Vec<PeerId>,
    /// Pairs that cannot reach each other (both directions).
    cut: BTreeSet<(PeerId, PeerId)>,
    /// (from, to): what `from` sends `to`, requests and answers, is lost (one direction:
    /// `to` still reaches `from`).
    silenced: BTreeSet<(PeerId, PeerId)>,
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
            silenced: BTreeSet::new(),
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
                rekeyed: Vec::new(),
            },
        );
        self.drain(peer);
    }

    fn host(&mut self) -> PeerId {
        self.host_with(&Identity::generate())
    }

    fn host_with(&mut self, identity: &Identity) -> PeerId {
        let peer = identity.peer_id();
        let rng = self.rng();
        let machine = Machine::host(
            Config::default(),
            MlsIdentity::new(identity),
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

    /// A host, a joiner `a` whose identity is returned (so that it can restart as the same
    /// person) and a joiner `b`, that formed the group.
    fn form_with_restartable(&mut self) -> (PeerId, PeerId, Identity, PeerId) {
        let host = self.host();
        let identity = Identity::generate();
        let a = self.joiner_with(&identity, 1, host, Some(host));
        let b = self.joiner(1, host);
        self.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b]))
            .expect("group formed");
        (host, a, identity, b)
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

    /// Takes the last hello `from` sent on its way to `to` out of the network (to be
    /// delivered later, or never).
    fn hold_hello(&mut self, from: PeerId, to: PeerId) -> (Request, u64) {
        let index = self
            .queue
            .iter()
            .rposition(|(_, p)| {
                matches!(p, Packet::Request { from: f, to: t, request: Request::Hello(_), .. }
                    if *f == from && *t == to)
            })
            .expect("a hello on its way");
        match self.queue.remove(index).1 {
            Packet::Request { request, tag, .. } => (request, tag),
            Packet::Response { .. } => unreachable!("a request was found"),
        }
    }

    /// Puts a held request back on the network, to arrive now.
    fn release(&mut self, from: PeerId, to: PeerId, (request, tag): (Request, u64)) {
        let now = self.now;
        self.queue.push((
            now,
            Packet::Request {
                from,
                to,
                request,
                tag,
            },
        ));
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
                Output::Rekeyed { secret, .. } => node.rekeyed.push(secret),
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
                    if self.reachable(from, to) && !self.silenced.contains(&(from, to)) {
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
                        if self.reachable(to, from) && !self.silenced.contains(&(from, to)) {
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
