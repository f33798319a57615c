//! The sans-IO meeting state machine: admission, roster, presence and goodbye.
//!
//! Rules (also in `docs/protocol.md`):
//! - A *candidate* (a DHT provider, the invite's host hint, or a member named in someone's
//!   list) that is neither us, nor a member, nor recently greeted gets a `Hello`.
//! - A valid `Hello` (MAC, freshness, no replay) makes the sender a member; the answer is
//!   `Welcome` with our member list. Anything else gets a bare `Refused`.
//! - A `Welcome` whose MAC matches the nonce of our hello makes the responder a member; the
//!   members it lists become candidates. A `Refused` while joining ends the join.
//! - Members send each other a `Heartbeat` every [`Config::heartbeat_interval`]; a member
//!   not heard from (request or answer) for [`Config::liveness_timeout`] is removed with
//!   [`LeaveReason::TimedOut`]. `Bye` removes the sender at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::{CryptoRng, RngCore};
use tracing::{debug, info, warn};

use super::{LeaveReason, MeetingEvent};
use crate::admission::{AdmissionError, MeetingKeys, NONCE_LEN, ReplayGuard};
use crate::invite::MeetingId;
use crate::net::wire::{Hello, MAX_ADDRS, MAX_MEMBERS, MemberInfo, Request, Response};

/// Timers and bounds of a meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often members greet each other.
    pub heartbeat_interval: Duration,
    /// Silence after which a member counts as gone. Must exceed the heartbeat interval.
    pub liveness_timeout: Duration,
    /// Least time between two hellos to the same candidate.
    pub hello_retry: Duration,
    /// How long a join may take before it is abandoned.
    pub join_timeout: Duration,
    /// Most members (including us).
    pub max_members: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            liveness_timeout: Duration::from_secs(7),
            hello_retry: Duration::from_secs(3),
            join_timeout: Duration::from_secs(30),
            max_members: MAX_MEMBERS,
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
}

/// Where we stand in the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking for members and proving the secret.
    Joining {
        /// When the join is abandoned.
        deadline: Instant,
    },
    /// In the meeting.
    Member,
    /// A member refused our proof of the secret.
    Refused,
    /// Nobody answered in time.
    TimedOut,
    /// We left.
    Left,
}

/// Counters of refused or ignored input, for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Hellos whose MAC did not verify.
    pub hellos_bad_mac: u64,
    /// Hellos outside the clock-skew window.
    pub hellos_stale: u64,
    /// Hellos seen before.
    pub hellos_replayed: u64,
    /// Hellos for another meeting.
    pub hellos_wrong_meeting: u64,
    /// Welcomes that did not prove the secret, or that nobody asked for.
    pub welcomes_rejected: u64,
    /// Requests from peers that are not members.
    pub requests_from_strangers: u64,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a control request to `to`, dialing `addrs` if not connected.
    Send {
        /// Recipient.
        to: PeerId,
        /// Known addresses of the recipient.
        addrs: Vec<Multiaddr>,
        /// The request.
        request: Request,
    },
    /// Announce ourselves as a provider of the rendezvous key on the DHT.
    StartProviding,
    /// Withdraw the provider announcement.
    StopProviding,
    /// Tell the application.
    Event(MeetingEvent),
}

#[derive(Debug)]
struct Member {
    name: String,
    addrs: Vec<Multiaddr>,
    last_heard: Instant,
}

#[derive(Debug)]
struct PendingHello {
    nonce: [u8; NONCE_LEN],
    sent_at: Instant,
}

/// The meeting state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Machine<R> {
    config: Config,
    local: PeerId,
    name: String,
    keys: MeetingKeys,
    phase: Phase,
    local_addrs: Vec<Multiaddr>,
    members: BTreeMap<PeerId, Member>,
    pending: HashMap<PeerId, PendingHello>,
    replay: ReplayGuard,
    next_heartbeat: Instant,
    outputs: VecDeque<Output>,
    stats: Stats,
    rng: R,
}

impl<R: RngCore + CryptoRng> Machine<R> {
    /// A new meeting created by us: we are its first member.
    pub fn host(
        config: Config,
        local: PeerId,
        name: String,
        keys: MeetingKeys,
        now: Instant,
        rng: R,
    ) -> Self {
        let mut machine = Self::new(config, local, name, keys, Phase::Member, now, rng);
        info!(meeting = %machine.keys.meeting_id().short(), "meeting created");
        machine.outputs.push_back(Output::StartProviding);
        machine.emit(MeetingEvent::Joined {
            meeting_id: machine.keys.meeting_id(),
        });
        machine
    }

    /// Joining an existing meeting: feed candidates with [`Machine::handle_candidate`].
    pub fn joiner(
        config: Config,
        local: PeerId,
        name: String,
        keys: MeetingKeys,
        now: Instant,
        rng: R,
    ) -> Self {
        let deadline = now + config.join_timeout;
        Self::new(
            config,
            local,
            name,
            keys,
            Phase::Joining { deadline },
            now,
            rng,
        )
    }

    fn new(
        config: Config,
        local: PeerId,
        name: String,
        keys: MeetingKeys,
        phase: Phase,
        now: Instant,
        rng: R,
    ) -> Self {
        Self {
            next_heartbeat: now + config.heartbeat_interval,
            config,
            local,
            name,
            keys,
            phase,
            local_addrs: Vec::new(),
            members: BTreeMap::new(),
            pending: HashMap::new(),
            replay: ReplayGuard::default(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            rng,
        }
    }

    /// The meeting's id.
    pub fn meeting_id(&self) -> MeetingId {
        self.keys.meeting_id()
    }

    /// The DHT rendezvous key.
    pub fn rendezvous_key(&self) -> [u8; 32] {
        self.keys.rendezvous_key()
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Counters of refused input.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Current members other than us, with their names.
    pub fn members(&self) -> impl Iterator<Item = (&PeerId, &str)> {
        self.members.iter().map(|(peer, m)| (peer, m.name.as_str()))
    }

    /// Whether the machine has finished (left, refused or timed out).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Left | Phase::Refused | Phase::TimedOut)
    }

    /// Our reachable addresses, shared with other members.
    pub fn set_local_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.local_addrs = addrs.into_iter().take(MAX_ADDRS).collect();
    }

    /// A peer that may be a member (DHT provider, invite hint, gossip): greet it.
    pub fn handle_candidate(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) {
        if self.is_finished() || peer == self.local || self.members.contains_key(&peer) {
            return;
        }
        if let Some(pending) = self.pending.get(&peer)
            && now < pending.sent_at + self.config.hello_retry
        {
            return;
        }
        self.send_hello(now, unix_ms, peer, addrs);
    }

    fn send_hello(&mut self, now: Instant, unix_ms: u64, peer: PeerId, addrs: Vec<Multiaddr>) {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let mac = self.keys.hello_mac(&self.local, &peer, &nonce, unix_ms);
        self.pending.insert(
            peer,
            PendingHello {
                nonce,
                sent_at: now,
            },
        );
        debug!(peer = %peer, "sending hello");
        self.outputs.push_back(Output::Send {
            to: peer,
            addrs,
            request: Request::Hello(Hello {
                meeting_id: self.keys.meeting_id(),
                nonce,
                unix_ms,
                mac,
                name: self.name.clone(),
                addrs: self.local_addrs.clone(),
            }),
        });
    }

    /// A control request arrived from `from` (authenticated by the connection); returns
    /// the answer to send back.
    pub fn handle_request(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        request: Request,
    ) -> Response {
        if self.is_finished() {
            return Response::NotMember;
        }
        match request {
            Request::Hello(hello) => self.on_hello(now, unix_ms, from, hello),
            Request::Heartbeat {
                meeting_id,
                members,
            } => {
                if meeting_id != self.keys.meeting_id() || !self.members.contains_key(&from) {
                    self.stats.requests_from_strangers += 1;
                    return Response::NotMember;
                }
                self.heard_from(now, from);
                for info in members {
                    if info.peer_id == from {
                        if let Some(member) = self.members.get_mut(&from) {
                            member.addrs = info.addrs;
                        }
                    } else {
                        self.handle_candidate(now, unix_ms, info.peer_id, info.addrs);
                    }
                }
                Response::Ack
            }
            Request::Bye { meeting_id } => {
                if meeting_id != self.keys.meeting_id() || !self.members.contains_key(&from) {
                    self.stats.requests_from_strangers += 1;
                    return Response::NotMember;
                }
                self.remove_member(from, LeaveReason::Left);
                Response::Ack
            }
        }
    }

    fn on_hello(&mut self, now: Instant, unix_ms: u64, from: PeerId, hello: Hello) -> Response {
        if hello.meeting_id != self.keys.meeting_id() {
            self.stats.hellos_wrong_meeting += 1;
            debug!(peer = %from, "hello for another meeting refused");
            return Response::Refused;
        }
        let verdict = self
            .keys
            .verify_hello(
                &from,
                &self.local,
                &hello.nonce,
                hello.unix_ms,
                &hello.mac,
                unix_ms,
            )
            .and_then(|()| {
                self.replay
                    .check_and_record(from, hello.nonce, hello.unix_ms, unix_ms)
            });
        match verdict {
            Ok(()) => {}
            Err(err) => {
                match err {
                    AdmissionError::BadMac => self.stats.hellos_bad_mac += 1,
                    AdmissionError::Stale { .. } => self.stats.hellos_stale += 1,
                    AdmissionError::Replayed => self.stats.hellos_replayed += 1,
                }
                warn!(peer = %from, error = %err, "hello refused");
                return Response::Refused;
            }
        }
        if !self.members.contains_key(&from) && self.members.len() + 1 >= self.config.max_members {
            warn!(peer = %from, "meeting full, hello refused");
            return Response::Refused;
        }
        self.add_member(now, from, hello.name, hello.addrs);
        Response::Welcome {
            mac: self.keys.welcome_mac(&self.local, &from, &hello.nonce),
            members: self.member_list(),
        }
    }

    /// The answer to a request we sent to `from` arrived.
    pub fn handle_response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        response: Response,
    ) {
        if self.is_finished() {
            return;
        }
        match response {
            Response::Welcome { mac, members } => {
                let Some(pending) = self.pending.remove(&from) else {
                    self.stats.welcomes_rejected += 1;
                    debug!(peer = %from, "unsolicited welcome ignored");
                    return;
                };
                if self
                    .keys
                    .verify_welcome(&from, &self.local, &pending.nonce, &mac)
                    .is_err()
                {
                    self.stats.welcomes_rejected += 1;
                    warn!(peer = %from, "welcome without proof of the secret ignored");
                    return;
                }
                let own = members.iter().find(|m| m.peer_id == from);
                let name = own.map(|m| m.name.clone()).unwrap_or_default();
                let addrs = own.map(|m| m.addrs.clone()).unwrap_or_default();
                self.add_member(now, from, name, addrs);
                for info in members {
                    if info.peer_id != from {
                        self.handle_candidate(now, unix_ms, info.peer_id, info.addrs);
                    }
                }
            }
            Response::Refused => {
                self.pending.remove(&from);
                if matches!(self.phase, Phase::Joining { .. }) {
                    info!(peer = %from, "join refused: the invite's secret is not this meeting's");
                    self.phase = Phase::Refused;
                    self.outputs.push_back(Output::StopProviding);
                    self.emit(MeetingEvent::JoinRefused);
                } else {
                    warn!(peer = %from, "a peer refused our hello");
                }
            }
            Response::Ack => self.heard_from(now, from),
            Response::NotMember => {
                // It forgot us (restart, or it timed us out): greet it again.
                self.heard_from(now, from);
                let addrs = self
                    .members
                    .get(&from)
                    .map(|m| m.addrs.clone())
                    .unwrap_or_default();
                self.send_hello(now, unix_ms, from, addrs);
            }
        }
    }

    /// A request to `peer` could not be delivered (dial failure, timeout, stream error).
    pub fn handle_send_failed(&mut self, peer: PeerId) {
        debug!(peer = %peer, "request failed");
        // A hello that never arrived must not hold back the next attempt (typically the
        // first try had no address yet and the DHT is about to supply one). Candidates
        // arrive at most once per lookup interval, so this cannot turn into a storm.
        self.pending.remove(&peer);
    }

    /// Time passed: heartbeats, liveness and the join deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Joining { deadline } if now >= deadline => {
                info!("nobody answered before the join deadline");
                self.phase = Phase::TimedOut;
                self.emit(MeetingEvent::JoinTimedOut);
                return;
            }
            Phase::Member => {}
            _ => return,
        }
        let expired: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| now >= m.last_heard + self.config.liveness_timeout)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.remove_member(peer, LeaveReason::TimedOut);
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.config.heartbeat_interval;
            let members = self.member_list();
            for (peer, member) in &self.members {
                self.outputs.push_back(Output::Send {
                    to: *peer,
                    addrs: member.addrs.clone(),
                    request: Request::Heartbeat {
                        meeting_id: self.keys.meeting_id(),
                        members: members.clone(),
                    },
                });
            }
        }
        let retry = self.config.hello_retry;
        self.pending.retain(|_, p| now < p.sent_at + retry * 4);
    }

    /// We leave: say goodbye to every member.
    pub fn leave(&mut self) {
        if self.is_finished() {
            return;
        }
        for (peer, member) in &self.members {
            self.outputs.push_back(Output::Send {
                to: *peer,
                addrs: member.addrs.clone(),
                request: Request::Bye {
                    meeting_id: self.keys.meeting_id(),
                },
            });
        }
        self.phase = Phase::Left;
        self.outputs.push_back(Output::StopProviding);
        self.emit(MeetingEvent::Left);
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Machine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Joining { deadline } => Some(deadline),
            Phase::Member => {
                let liveness = self
                    .members
                    .values()
                    .map(|m| m.last_heard + self.config.liveness_timeout)
                    .min();
                Some(liveness.map_or(self.next_heartbeat, |l| l.min(self.next_heartbeat)))
            }
            _ => None,
        }
    }

    fn heard_from(&mut self, now: Instant, peer: PeerId) {
        if let Some(member) = self.members.get_mut(&peer) {
            member.last_heard = now;
        }
    }

    fn add_member(&mut self, now: Instant, peer: PeerId, name: String, addrs: Vec<Multiaddr>) {
        self.pending.remove(&peer);
        if let Some(member) = self.members.get_mut(&peer) {
            member.last_heard = now;
            if !addrs.is_empty() {
                member.addrs = addrs;
            }
            return;
        }
        info!(peer = %peer, "member joined");
        self.members.insert(
            peer,
            Member {
                name: name.clone(),
                addrs,
                last_heard: now,
            },
        );
        if let Phase::Joining { .. } = self.phase {
            self.phase = Phase::Member;
            self.next_heartbeat = now + self.config.heartbeat_interval;
            self.outputs.push_back(Output::StartProviding);
            self.emit(MeetingEvent::Joined {
                meeting_id: self.keys.meeting_id(),
            });
        }
        self.emit(MeetingEvent::MemberJoined {
            peer_id: peer,
            name,
        });
    }

    fn remove_member(&mut self, peer: PeerId, reason: LeaveReason) {
        if let Some(member) = self.members.remove(&peer) {
            info!(peer = %peer, reason = reason.as_str(), "member left");
            self.emit(MeetingEvent::MemberLeft {
                peer_id: peer,
                name: member.name,
                reason,
            });
        }
    }

    fn member_list(&self) -> Vec<MemberInfo> {
        std::iter::once(MemberInfo {
            peer_id: self.local,
            name: self.name.clone(),
            addrs: self.local_addrs.clone(),
        })
        .chain(self.members.iter().map(|(peer, m)| MemberInfo {
            peer_id: *peer,
            name: m.name.clone(),
            addrs: m.addrs.clone(),
        }))
        .take(MAX_MEMBERS)
        .collect()
    }

    fn emit(&mut self, event: MeetingEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

#[cfg(test)]
mod tests;
