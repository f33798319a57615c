//! The sans-IO meeting state machine: admission, presence, and the group protocol.
//!
//! Admission and presence (control plane, `docs/protocol.md` §5):
//! - A *candidate* (DHT provider, invite host hint, peer named in someone's list) that is
//!   neither us, nor a known peer, nor recently greeted gets a `Hello` (with our MLS key
//!   package while we are joining).
//! - A valid `Hello` (MAC, freshness, no replay) makes the sender a known peer; its key
//!   package, if any, is checked (credential = sender's key, else refused as an impostor)
//!   and queued for the committer. The answer is an admission `Welcome` with our peer list.
//! - Hellos are rate limited per peer and, for peers that have not proved the secret,
//!   globally ([`HelloLimiter`]); one over the limit is answered `NotMember` (try later)
//!   without being checked.
//! - In a lobby meeting a joiner that proved the secret waits in a bounded lobby
//!   ([`Config::max_lobby`]) until the host approves it; one that stops greeting us for
//!   [`Config::lobby_expiry`], or says goodbye, is dropped from it
//!   ([`MeetingEvent::LobbyLeft`] at the host).
//! - Peers send each other a `Heartbeat` every [`Config::heartbeat_interval`]; a peer not
//!   heard from for [`Config::liveness_timeout`], or whose heartbeats failed twice, or that
//!   said `Bye`, counts as gone.
//!
//! Group protocol (`docs/protocol.md` §6), over the MLS group in [`crate::group`]:
//! - The committer is the lowest-leaf online member ([`crate::group::committer`]). It
//!   commits queued adds, kicks, goodbyes and timeouts in one commit.
//! - Phase 1: `Commit` to every other member, who stage it and answer `Ack` (or `Nack`:
//!   other epoch, or another commit already staged). Phase 2: when every online member
//!   acknowledged, the committer merges, sends `Confirm` (members merge) and the MLS
//!   welcome to the joiners. A `Nack` aborts (`Abort` to those who staged) and the
//!   committer backs off; a commit from a lower leaf beats our own pending one.
//! - Chat travels as MLS application messages with a per-sender sequence number: delivered
//!   once, in order; failed deliveries are re-encrypted and retried a bounded number of
//!   times.
//! - Each member's muted state travels the same way ([`Machine::set_muted`]), re-sent to
//!   everyone after every epoch change so that joiners learn it; only members' announcements
//!   count, and only changes are reported ([`MeetingEvent::MemberMuted`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::{CryptoRng, RngCore};
use tracing::{debug, info, warn};

use super::{LeaveReason, MeetingEvent};
use crate::admission::{AdmissionError, HelloLimiter, MeetingKeys, NONCE_LEN, ReplayGuard};
use crate::group::mls::validate_key_package;
use crate::group::{GroupError, MediaKeys, MeetingGroup, MlsIdentity, Provider, StorageDelta};
use crate::invite::MeetingId;
use crate::proto::control::{
    Hello, MAX_ADDRS, MAX_MEMBERS, MemberInfo, Removal, RemovalReason, Request, Response,
};

mod chat;
mod group_ops;
mod reconnect;

/// Most peers whose round-trip time is remembered.
const MAX_TRACKED_RTTS: usize = 1024;

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
    /// member silent too, we count ourselves as the one cut off (see [`reconnect`]).
    pub network_silence: Duration,
    /// How long the network may be back without any member answering before we stop
    /// reconnecting and count them as gone.
    pub reconnect_grace: Duration,
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

    /// How long a member keeps a commit staged when its committer is `rtt` away: past the
    /// committer's own wait, with two more round trips for the confirmation to arrive.
    pub fn staged_timeout_for(&self, rtt: Duration) -> Duration {
        self.staged_timeout
            .max(self.commit_timeout_for(rtt) + rtt * 2)
    }
}

/// Where we stand in the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking for members, proving the secret, waiting for the MLS welcome.
    Joining {
        /// When the join is abandoned.
        deadline: Instant,
    },
    /// In the meeting's group.
    Member,
    /// A member refused our proof of the secret.
    Refused,
    /// Nobody let us in in time.
    TimedOut,
    /// We left.
    Left,
    /// The group removed us.
    Removed,
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
    /// Hellos over the per-peer or global rate limit (answered without being checked).
    pub hellos_rate_limited: u64,
    /// Lobby joiners turned away because the lobby was full.
    pub lobby_full: u64,
    /// Lobby joiners dropped because they stopped greeting us.
    pub lobby_expired: u64,
    /// Key packages whose credential is not the sender's key (impostors).
    pub impostors: u64,
    /// Welcomes that did not prove the secret, or that nobody asked for.
    pub welcomes_rejected: u64,
    /// Requests from peers that are not members.
    pub requests_from_strangers: u64,
    /// Group messages that did not decrypt or verify (including replays).
    pub group_messages_rejected: u64,
    /// Commits aborted because a competing commit won.
    pub commits_aborted: u64,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a control request to `to`, dialing `addrs` if not connected. The answer (or
    /// failure) must come back with the same `tag`.
    Send {
        /// Recipient.
        to: PeerId,
        /// Known addresses of the recipient.
        addrs: Vec<Multiaddr>,
        /// The request.
        request: Request,
        /// Correlates the answer with the request.
        tag: u64,
    },
    /// Announce ourselves as a provider of the rendezvous key on the DHT.
    StartProviding,
    /// Withdraw the provider announcement.
    StopProviding,
    /// Apply these MLS storage writes to the durable store, atomically.
    Persist(StorageDelta),
    /// Tell the media plane.
    Media(crate::media::MediaCommand),
    /// Tell the application.
    Event(MeetingEvent),
}

#[derive(Debug)]
struct Peer {
    name: String,
    addrs: Vec<Multiaddr>,
    last_heard: Instant,
    failures: u8,
    said_bye: bool,
}

/// A joiner waiting in the lobby.
#[derive(Debug)]
struct Knock {
    name: String,
    addrs: Vec<Multiaddr>,
    /// Its latest valid hello: the entry expires [`Config::lobby_expiry`] after it.
    last_hello: Instant,
}

#[derive(Debug)]
struct PendingHello {
    nonce: [u8; NONCE_LEN],
    sent_at: Instant,
}

/// What an in-flight request was, so its answer can be routed.
#[derive(Debug, Clone)]
enum Inflight {
    Hello,
    Heartbeat,
    Commit {
        epoch: u64,
    },
    /// An application payload (a chat line or a media signal), delivered with retries.
    Application {
        payload: Vec<u8>,
        attempt: u32,
    },
    /// Our state announcement (re-sent with the state current at the retry).
    State {
        attempt: u32,
    },
    /// Our chat line number `wire` in the recipient's stream `stream` (the line stays in
    /// the chat outbox).
    Chat {
        stream: u64,
        wire: u64,
    },
    Other,
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
    peers: BTreeMap<PeerId, Peer>,
    pending: HashMap<PeerId, PendingHello>,
    replay: ReplayGuard,
    limiter: HelloLimiter,
    next_heartbeat: Instant,
    next_rehello: Instant,
    outputs: VecDeque<Output>,
    stats: Stats,
    rng: R,
    next_tag: u64,
    inflight: HashMap<u64, (PeerId, Inflight)>,
    /// The meeting's host (creator): its kicks are honoured.
    host: Option<PeerId>,
    /// Lobby meeting: the host lets each joiner in.
    lobby: bool,
    /// Joiners the host let in.
    approved: BTreeSet<PeerId>,
    /// Joiners waiting in the lobby.
    knocking: BTreeMap<PeerId, Knock>,
    /// Members removed by the host: their hellos are refused for the rest of the meeting.
    banned: BTreeSet<PeerId>,
    /// Measured round-trip time per peer (from the driver): the timers that wait for a
    /// peer scale with it.
    rtts: HashMap<PeerId, Duration>,
    /// The last sign of life from the network (any answered ping), from the driver.
    network_heard: Option<Instant>,
    /// Set while we are cut off from every member and trying to reach them again.
    reconnect: Option<reconnect::Reconnect>,
    /// Our chat lines until every member acknowledged them.
    chat_outbox: chat::ChatOutbox,
    mls: group_ops::GroupState,
}

impl<R: RngCore + CryptoRng> Machine<R> {
    /// A new meeting created by us: we are its host and first member.
    pub fn host(
        config: Config,
        me: MlsIdentity,
        provider: Provider,
        name: String,
        keys: MeetingKeys,
        now: Instant,
        rng: R,
    ) -> Result<Self, GroupError> {
        let local = me.peer_id();
        let group = MeetingGroup::create(&provider, &me, keys.meeting_id())?;
        let mut machine = Self::new(config, me, provider, name, keys, Phase::Member, now, rng);
        machine.host = Some(local);
        info!(meeting = %machine.keys.meeting_id().short(), "meeting created");
        machine.outputs.push_back(Output::StartProviding);
        machine.install_group(now, group);
        Ok(machine)
    }

    /// Joining an existing meeting: feed candidates with [`Machine::handle_candidate`].
    /// `host` is the invite's host hint, whose kicks will be honoured.
    #[allow(clippy::too_many_arguments)]
    pub fn joiner(
        config: Config,
        me: MlsIdentity,
        provider: Provider,
        name: String,
        keys: MeetingKeys,
        host: Option<PeerId>,
        now: Instant,
        rng: R,
    ) -> Self {
        let deadline = now + config.join_timeout;
        // A group left over from an earlier session is stale: we join afresh.
        if let Err(err) = MeetingGroup::delete_stored(&provider, keys.meeting_id()) {
            warn!(error = %err, "cannot delete a stale group");
        }
        let mut machine = Self::new(
            config,
            me,
            provider,
            name,
            keys,
            Phase::Joining { deadline },
            now,
            rng,
        );
        machine.persist_now();
        machine.host = host;
        machine
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        config: Config,
        me: MlsIdentity,
        provider: Provider,
        name: String,
        keys: MeetingKeys,
        phase: Phase,
        now: Instant,
        rng: R,
    ) -> Self {
        Self {
            next_heartbeat: now + config.heartbeat_interval,
            next_rehello: now + config.rehello_interval,
            local: me.peer_id(),
            mls: group_ops::GroupState::new(me, provider),
            config,
            name,
            keys,
            phase,
            local_addrs: Vec::new(),
            peers: BTreeMap::new(),
            pending: HashMap::new(),
            replay: ReplayGuard::default(),
            limiter: HelloLimiter::default(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            rng,
            next_tag: 0,
            inflight: HashMap::new(),
            host: None,
            lobby: false,
            approved: BTreeSet::new(),
            knocking: BTreeMap::new(),
            banned: BTreeSet::new(),
            rtts: HashMap::new(),
            network_heard: None,
            reconnect: None,
            chat_outbox: chat::ChatOutbox::default(),
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

    /// Members of the MLS group other than us, with their names.
    pub fn members(&self) -> Vec<(PeerId, String)> {
        self.mls
            .group
            .as_ref()
            .map(|g| g.members())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, peer)| *peer != self.local)
            .map(|(_, peer)| (peer, self.peer_name(&peer)))
            .collect()
    }

    /// The group's epoch and security code, once we are in it.
    pub fn epoch(&self) -> Option<(u64, crate::group::SecurityCode)> {
        self.mls
            .group
            .as_ref()
            .map(|g| (g.epoch(), g.security_code()))
    }

    /// Media keys of the current and previous epoch.
    pub fn media_keys(&self) -> &MediaKeys {
        &self.mls.media
    }

    /// Whether the machine has finished (left, removed, refused or timed out).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.phase,
            Phase::Left | Phase::Refused | Phase::TimedOut | Phase::Removed
        )
    }

    /// Makes this a lobby meeting (from the invite, or the host's choice): joiners wait
    /// for the host's approval and learn nothing about the group before it.
    pub fn set_lobby(&mut self, now: Instant, lobby: bool) {
        self.lobby = lobby;
        if let Phase::Joining { deadline } = &mut self.phase
            && lobby
        {
            *deadline = now + self.config.lobby_timeout;
        }
    }

    /// The host lets `peer` in (lobby meetings).
    pub fn approve(&mut self, now: Instant, peer: PeerId) -> Result<(), GroupError> {
        if self.host != Some(self.local) {
            return Err(GroupError::Mls("only the host admits joiners".into()));
        }
        if !self.knocking.contains_key(&peer) {
            return Err(GroupError::Mls(format!(
                "{peer} is not waiting in the lobby"
            )));
        }
        self.approved.insert(peer);
        let members: Vec<PeerId> = self.members().into_iter().map(|(p, _)| p).collect();
        for member in members {
            let request = Request::Approve {
                meeting_id: self.keys.meeting_id(),
                peer_id: peer,
            };
            self.send(member, request, Inflight::Other);
        }
        self.maybe_commit(now);
        Ok(())
    }

    /// Whether a queued joiner may be added now.
    fn may_add(&self, peer: &PeerId) -> bool {
        let member = self
            .mls
            .group
            .as_ref()
            .is_some_and(|g| g.leaf_of(peer).is_some());
        !self.lobby || member || self.approved.contains(peer)
    }

    /// Our reachable addresses, shared with other members.
    pub fn set_local_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.local_addrs = addrs.into_iter().take(MAX_ADDRS).collect();
    }

    fn peer_name(&self, peer: &PeerId) -> String {
        if *peer == self.local {
            return self.name.clone();
        }
        self.peers
            .get(peer)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    fn send(&mut self, to: PeerId, request: Request, kind: Inflight) {
        let tag = self.next_tag;
        self.next_tag += 1;
        let addrs = self
            .peers
            .get(&to)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        self.inflight.insert(tag, (to, kind));
        self.outputs.push_back(Output::Send {
            to,
            addrs,
            request,
            tag,
        });
    }

    /// A peer that may be a member (DHT provider, invite hint, gossip): greet it.
    pub fn handle_candidate(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) {
        if self.is_finished() || peer == self.local {
            return;
        }
        if let Some(known) = self.peers.get_mut(&peer) {
            if known.addrs.is_empty() {
                known.addrs = addrs;
            }
            return;
        }
        if self
            .pending
            .get(&peer)
            .is_some_and(|p| now < p.sent_at + self.config.hello_retry)
        {
            return;
        }
        self.send_hello(now, unix_ms, peer, addrs);
    }

    /// Greets every known peer again with a fresh key package (the committer may have
    /// changed, missed our package, or we lost our group).
    fn greet_everyone_afresh(&mut self, now: Instant, unix_ms: u64) {
        self.next_rehello = now + self.config.rehello_interval;
        self.mls.key_package = None;
        let known: Vec<(PeerId, Vec<Multiaddr>)> = self
            .peers
            .iter()
            .map(|(p, i)| (*p, i.addrs.clone()))
            .collect();
        for (peer, addrs) in known {
            self.send_hello(now, unix_ms, peer, addrs);
        }
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
        let key_package = self.joining_key_package();
        debug!(peer = %peer, with_key_package = !key_package.is_empty(), "sending hello");
        let hello = Request::Hello(Hello {
            meeting_id: self.keys.meeting_id(),
            nonce,
            unix_ms,
            mac,
            name: self.name.clone(),
            addrs: self.local_addrs.clone(),
            key_package,
        });
        let tag = self.next_tag;
        self.next_tag += 1;
        self.inflight.insert(tag, (peer, Inflight::Hello));
        self.outputs.push_back(Output::Send {
            to: peer,
            addrs,
            request: hello,
            tag,
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
        let response = match request {
            Request::Hello(hello) => return self.on_hello(now, unix_ms, from, hello),
            other if !self.is_for_us(&other) => {
                self.stats.requests_from_strangers += 1;
                return Response::NotMember;
            }
            Request::Heartbeat { members, epoch, .. } => {
                // A member we removed (it was cut off) learns it from the answer, and joins
                // again.
                if self.peers.get(&from).is_none_or(|p| p.said_bye) {
                    self.stats.requests_from_strangers += 1;
                    return Response::NotMember;
                }
                self.heard_from(now, from);
                // Only members in the group send heartbeats: a key package still queued for
                // this peer is stale (a late hello) and must not replace its leaf.
                self.forget_queued_package(&from);
                self.check_epoch_of(now, unix_ms, from, epoch);
                for info in members {
                    if info.peer_id == from {
                        if let Some(peer) = self.peers.get_mut(&from) {
                            peer.addrs = info.addrs;
                            if peer.name.is_empty() {
                                peer.name = info.name;
                            }
                        }
                    } else {
                        self.handle_candidate(now, unix_ms, info.peer_id, info.addrs);
                    }
                }
                Response::Ack
            }
            Request::Bye { .. } => {
                let knocked = self.leave_lobby(from);
                if knocked {
                    info!(peer = %from, "lobby joiner said goodbye");
                }
                match self.peers.get_mut(&from) {
                    Some(peer) => {
                        info!(peer = %from, "peer said goodbye");
                        peer.said_bye = true;
                        Response::Ack
                    }
                    None if knocked => Response::Ack,
                    None => {
                        self.stats.requests_from_strangers += 1;
                        return Response::NotMember;
                    }
                }
            }
            Request::Commit {
                epoch,
                commit,
                removals,
                ..
            } => self.on_commit(now, unix_ms, from, epoch, &commit, removals),
            Request::Confirm { epoch, .. } => self.on_confirm(now, from, epoch),
            Request::Abort { epoch, .. } => self.on_abort(from, epoch),
            Request::Welcome { welcome, .. } => self.on_mls_welcome(now, from, &welcome),
            Request::Group { message, .. } => self.on_group_message(now, unix_ms, from, &message),
            Request::Kick { peer_id, .. } => self.on_kick_request(from, peer_id),
            Request::Approve { peer_id, .. } => {
                if self.host == Some(from) {
                    self.approved.insert(peer_id);
                    Response::Ack
                } else {
                    Response::Refused
                }
            }
        };
        self.maybe_commit(now);
        response
    }

    fn is_for_us(&self, request: &Request) -> bool {
        let id = match request {
            Request::Hello(hello) => hello.meeting_id,
            Request::Heartbeat { meeting_id, .. }
            | Request::Bye { meeting_id }
            | Request::Commit { meeting_id, .. }
            | Request::Confirm { meeting_id, .. }
            | Request::Abort { meeting_id, .. }
            | Request::Welcome { meeting_id, .. }
            | Request::Group { meeting_id, .. }
            | Request::Kick { meeting_id, .. }
            | Request::Approve { meeting_id, .. } => *meeting_id,
        };
        id == self.keys.meeting_id()
    }

    fn on_hello(&mut self, now: Instant, unix_ms: u64, from: PeerId, hello: Hello) -> Response {
        // Checked before anything else, so that a flood costs one look-up per hello. The
        // answer is not `Refused`: a refusal from the host ends a join, and a joiner held
        // back by the limit must try again later instead.
        let known = self.peers.contains_key(&from) || self.knocking.contains_key(&from);
        if let Err(limit) = self.limiter.check(now, from, known) {
            self.stats.hellos_rate_limited += 1;
            debug!(peer = %from, %limit, "hello over the rate limit, not checked");
            return Response::NotMember;
        }
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
        if let Err(err) = verdict {
            match err {
                AdmissionError::BadMac => self.stats.hellos_bad_mac += 1,
                AdmissionError::Stale { .. } => self.stats.hellos_stale += 1,
                AdmissionError::Replayed => self.stats.hellos_replayed += 1,
            }
            warn!(peer = %from, error = %err, "hello refused");
            return Response::Refused;
        }
        if self.banned.contains(&from) {
            warn!(peer = %from, "hello from a removed member refused");
            return Response::Refused;
        }
        // Validate the key package first (an impostor is refused outright) but queue it
        // only once the lobby and the size limit let the sender in.
        let package = if !hello.key_package.is_empty() && self.mls.group.is_some() {
            match validate_key_package(&self.mls.provider, &hello.key_package, from) {
                Ok(package) => Some(package),
                Err(GroupError::Impostor { .. }) => {
                    self.stats.impostors += 1;
                    warn!(peer = %from, "key package credential is not the sender's: impostor refused");
                    return Response::Refused;
                }
                Err(err) => {
                    warn!(peer = %from, error = %err, "invalid key package refused");
                    return Response::Refused;
                }
            }
        } else {
            None
        };
        let is_member = self
            .mls
            .group
            .as_ref()
            .is_some_and(|g| g.leaf_of(&from).is_some());
        if self.lobby && self.mls.group.is_some() && !is_member && !self.approved.contains(&from) {
            // Lobby: the joiner proved the secret but learns nothing more until the host
            // lets it in; only the host is told someone is waiting.
            if let Some(knock) = self.knocking.get_mut(&from) {
                knock.last_hello = now;
            } else if self.knocking.len() >= self.config.max_lobby {
                self.stats.lobby_full += 1;
                warn!(peer = %from, "lobby full, joiner asked to try again later");
                return Response::NotMember;
            } else {
                self.knocking.insert(
                    from,
                    Knock {
                        name: hello.name.clone(),
                        addrs: hello.addrs.clone(),
                        last_hello: now,
                    },
                );
                if self.host == Some(self.local) {
                    self.emit(MeetingEvent::Knocking {
                        peer_id: from,
                        name: hello.name.clone(),
                    });
                }
            }
            if let Some(package) = package {
                self.queue_add(from, &hello.key_package, package);
            }
            return Response::Welcome {
                mac: self.keys.welcome_mac(&self.local, &from, &hello.nonce),
                members: vec![MemberInfo {
                    peer_id: self.local,
                    name: self.name.clone(),
                    addrs: self.local_addrs.clone(),
                }],
            };
        }
        if !self.peers.contains_key(&from) && self.peers.len() + 1 >= self.config.max_members {
            warn!(peer = %from, "meeting full, hello refused");
            return Response::Refused;
        }
        if let Some(package) = package {
            self.queue_add(from, &hello.key_package, package);
        }
        self.add_peer(now, from, hello.name, hello.addrs);
        let response = Response::Welcome {
            mac: self.keys.welcome_mac(&self.local, &from, &hello.nonce),
            members: self.peer_list(),
        };
        self.maybe_commit(now);
        response
    }

    /// The answer to the request `tag`, sent to `from`, arrived.
    pub fn handle_response(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        tag: u64,
        response: Response,
    ) {
        let Some((to, kind)) = self.inflight.remove(&tag) else {
            return;
        };
        if self.is_finished() || to != from {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.failures = 0;
        }
        match (kind, response) {
            (Inflight::Hello, response) => self.on_hello_answer(now, unix_ms, from, response),
            (Inflight::Commit { epoch }, Response::Ack) => {
                self.heard_from(now, from);
                self.commit_acked(now, from, epoch);
            }
            (Inflight::Commit { epoch }, Response::Nack { epoch: theirs }) => {
                self.heard_from(now, from);
                self.abort_outgoing(now, epoch);
                if theirs > epoch {
                    // The group moved on without us (we were cut off and removed, or lost
                    // a race while partitioned): join it again.
                    self.rejoin(now, unix_ms);
                }
            }
            (Inflight::Commit { epoch }, Response::NotMember) => {
                // The recipient's group no longer has us: we were removed while cut off.
                self.heard_from(now, from);
                self.abort_outgoing(now, epoch);
                self.rejoin(now, unix_ms);
            }
            (Inflight::Heartbeat, Response::Ack) => {
                // A member still has us: if we were cut off, we are back.
                self.heard_from(now, from);
                self.end_reconnect(now);
            }
            (Inflight::Chat { stream, wire }, Response::Ack) => {
                self.heard_from(now, from);
                self.chat_acked(from, stream, wire);
            }
            (Inflight::Chat { stream, wire }, Response::Nack { .. } | Response::NotMember) => {
                // Behind us by an epoch, or a joiner still on its way in: later.
                self.heard_from(now, from);
                self.chat_failed(now, from, stream, wire);
            }
            (
                Inflight::Application { payload, attempt },
                Response::Nack { .. } | Response::NotMember,
            ) => {
                // Behind us by an epoch, or a joiner still on its way in (it cannot read a
                // message of the epoch that added it before its Welcome): try again soon.
                self.heard_from(now, from);
                let delay = self.retry_delay(attempt);
                self.mls
                    .schedule_application_retry(now + delay, from, payload, attempt + 1);
            }
            (Inflight::State { attempt }, Response::Nack { .. } | Response::NotMember) => {
                // Behind us by an epoch, or a joiner still on its way in: try again soon.
                self.heard_from(now, from);
                self.mls
                    .schedule_state_retry(now + self.config.chat_retry, from, attempt + 1);
            }
            (_, Response::NotMember) if self.reconnect.is_some() => {
                // We were cut off and the group removed us meanwhile: join it again.
                self.heard_from(now, from);
                info!(peer = %from, "a member no longer has us: joining again");
                self.rejoin(now, unix_ms);
            }
            (_, Response::NotMember) => {
                // It forgot us (restart, or it timed us out): greet it again. It is alive.
                self.heard_from(now, from);
                let addrs = self
                    .peers
                    .get(&from)
                    .map(|p| p.addrs.clone())
                    .unwrap_or_default();
                self.send_hello(now, unix_ms, from, addrs);
            }
            _ => self.heard_from(now, from),
        }
        self.maybe_commit(now);
    }

    fn on_hello_answer(&mut self, now: Instant, unix_ms: u64, from: PeerId, response: Response) {
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
                if self.lobby
                    && matches!(self.phase, Phase::Joining { .. })
                    && self.peers.is_empty()
                {
                    self.emit(MeetingEvent::Waiting);
                }
                let own = members.iter().find(|m| m.peer_id == from);
                let name = own.map(|m| m.name.clone()).unwrap_or_default();
                let addrs = own.map(|m| m.addrs.clone()).unwrap_or_default();
                self.add_peer(now, from, name, addrs);
                if let Some((sender, welcome)) = self.mls.deferred_welcome.take() {
                    if sender == from {
                        self.on_mls_welcome(now, from, &welcome);
                    } else {
                        self.mls.deferred_welcome = Some((sender, welcome));
                    }
                }
                for info in members {
                    if info.peer_id != from {
                        self.handle_candidate(now, unix_ms, info.peer_id, info.addrs);
                    }
                }
            }
            Response::Refused => {
                self.pending.remove(&from);
                // A refusal proves nothing (it carries no MAC): only the invite's host can end
                // a join with it; anyone else's is counted and the join goes on.
                let authoritative = self.host.is_none_or(|host| host == from);
                if matches!(self.phase, Phase::Joining { .. })
                    && self.peers.is_empty()
                    && authoritative
                {
                    info!(peer = %from, "join refused: the invite's secret is not this meeting's");
                    self.phase = Phase::Refused;
                    self.outputs.push_back(Output::StopProviding);
                    self.emit(MeetingEvent::JoinRefused);
                } else {
                    warn!(peer = %from, "a peer refused our hello");
                }
            }
            _ => {
                self.pending.remove(&from);
            }
        }
    }

    /// The request `tag` to `peer` could not be delivered (dial failure, timeout, stream
    /// error).
    pub fn handle_send_failed(&mut self, now: Instant, peer: PeerId, tag: u64) {
        let Some((_, kind)) = self.inflight.remove(&tag) else {
            return;
        };
        debug!(peer = %peer, ?kind, "request failed");
        match kind {
            // A hello that never arrived must not hold back the next attempt (typically the
            // first try had no address yet and the DHT is about to supply one).
            Inflight::Hello => {
                self.pending.remove(&peer);
            }
            // Silence decides liveness, not failed heartbeats: a network that drops for a
            // moment makes sends fail at once (no route, a closed connection) and must not
            // remove anyone (docs/protocol.md §5).
            Inflight::Heartbeat => {}
            Inflight::Commit { epoch } => {
                if let Some(known) = self.peers.get_mut(&peer) {
                    known.failures = known.failures.saturating_add(2);
                }
                self.commit_unreachable(now, peer, epoch);
            }
            Inflight::Application { payload, attempt } => {
                let delay = self.retry_delay(attempt);
                self.mls
                    .schedule_application_retry(now + delay, peer, payload, attempt + 1);
            }
            Inflight::State { attempt } => {
                self.mls
                    .schedule_state_retry(now + self.config.chat_retry, peer, attempt + 1);
            }
            Inflight::Chat { stream, wire } => self.chat_failed(now, peer, stream, wire),
            Inflight::Other => {}
        }
        self.maybe_commit(now);
    }

    /// Time passed: heartbeats, liveness, re-greetings, commits, retries, deadlines.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        match self.phase {
            Phase::Joining { deadline } if now >= deadline => {
                info!("nobody let us in before the join deadline");
                self.phase = Phase::TimedOut;
                self.emit(MeetingEvent::JoinTimedOut);
                return;
            }
            Phase::Joining { .. } if now >= self.next_rehello => {
                // The committer may have changed or missed our key package: greet everyone
                // again with a fresh one.
                self.greet_everyone_afresh(now, unix_ms);
            }
            Phase::Joining { .. } | Phase::Member => {}
            _ => return,
        }
        // Only members greet: a joiner (possibly waiting in a lobby) keeps quiet.
        let heartbeat_due = now >= self.next_heartbeat;
        if heartbeat_due {
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        if heartbeat_due && self.phase == Phase::Member {
            let list = self.peer_list();
            let recipients: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| !p.said_bye)
                .map(|(id, _)| *id)
                .collect();
            let epoch = self.mls.group.as_ref().map(MeetingGroup::epoch);
            for peer in recipients {
                let request = Request::Heartbeat {
                    meeting_id: self.keys.meeting_id(),
                    members: list.clone(),
                    epoch,
                };
                self.send(peer, request, Inflight::Heartbeat);
            }
        }
        self.forget_silent_strangers(now);
        self.expire_lobby(now);
        self.limiter.forget_idle(now);
        let retry = self.config.hello_retry;
        self.pending.retain(|_, p| now < p.sent_at + retry * 4);
        self.group_timeouts(now);
        self.update_connectivity(now);
        self.maybe_commit(now);
    }

    /// Peers that never made it into the group and went silent are forgotten.
    fn forget_silent_strangers(&mut self, now: Instant) {
        let members: BTreeSet<PeerId> = self
            .mls
            .group
            .as_ref()
            .map(|g| g.members().into_iter().map(|(_, p)| p).collect())
            .unwrap_or_default();
        let timeout = self.config.liveness_timeout * 3;
        self.peers.retain(|peer, info| {
            members.contains(peer) || (!info.said_bye && now < info.last_heard + timeout)
        });
    }

    /// Lobby joiners that stopped greeting us are gone: they leave the lobby, their key
    /// package and any approval with them (coming back means knocking again).
    fn expire_lobby(&mut self, now: Instant) {
        let expiry = self.config.lobby_expiry;
        let gone: Vec<PeerId> = self
            .knocking
            .iter()
            .filter(|(_, knock)| now >= knock.last_hello + expiry)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in gone {
            info!(peer = %peer, "lobby joiner went silent and left the lobby");
            self.stats.lobby_expired += 1;
            self.leave_lobby(peer);
        }
    }

    /// `peer` is no longer waiting in the lobby (silent, or said goodbye): its entry, key
    /// package and any approval go, and the host is told. Whether it was waiting.
    fn leave_lobby(&mut self, peer: PeerId) -> bool {
        let Some(knock) = self.knocking.remove(&peer) else {
            return false;
        };
        self.mls.queued_adds.remove(&peer);
        self.approved.remove(&peer);
        if self.host == Some(self.local) {
            self.emit(MeetingEvent::LobbyLeft {
                peer_id: peer,
                name: knock.name,
            });
        }
        true
    }

    /// We leave: say goodbye to every peer.
    pub fn leave(&mut self) {
        if self.is_finished() {
            return;
        }
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            let request = Request::Bye {
                meeting_id: self.keys.meeting_id(),
            };
            self.send(peer, request, Inflight::Other);
        }
        self.phase = Phase::Left;
        self.outputs.push_back(Output::StopProviding);
        self.outputs
            .push_back(Output::Media(crate::media::MediaCommand::Stop));
        self.emit(MeetingEvent::Left);
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Machine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = match self.phase {
            Phase::Joining { deadline } => deadline.min(self.next_rehello).min(self.next_heartbeat),
            Phase::Member => self.next_heartbeat,
            _ => return None,
        };
        if let Some(t) = self.mls.next_deadline() {
            next = next.min(t);
        }
        if let Some(t) = self.chat_outbox.next_deadline() {
            next = next.min(t);
        }
        Some(next)
    }

    /// The measured round-trip time to `peer`, as last reported by the driver (its
    /// connections' pings); the timers that wait for that peer scale with it.
    pub fn set_rtt(&mut self, peer: PeerId, rtt: Duration) {
        if self.rtts.len() < MAX_TRACKED_RTTS || self.rtts.contains_key(&peer) {
            self.rtts.insert(peer, rtt);
        }
    }

    /// The round-trip time to `peer` (zero until measured: the configured floors apply).
    fn rtt_of(&self, peer: &PeerId) -> Duration {
        self.rtts.get(peer).copied().unwrap_or_default()
    }

    /// The longest round-trip time to any member.
    fn slowest_rtt(&self) -> Duration {
        self.peers
            .keys()
            .map(|p| self.rtt_of(p))
            .max()
            .unwrap_or_default()
    }

    /// The pause before retry `attempt + 1` of a media signal: [`Config::chat_retry`]
    /// doubled per attempt up to 4 s, plus up to half again of random jitter (members that
    /// failed together do not retry together).
    fn retry_delay(&mut self, attempt: u32) -> Duration {
        let jitter = f64::from(self.rng.next_u32()) / f64::from(u32::MAX);
        chat::retry_delay(self.config.chat_retry, attempt, jitter)
    }

    fn is_alive(&self, now: Instant, peer: &PeerId) -> bool {
        let window = self.config.liveness_for(self.rtt_of(peer));
        self.peers
            .get(peer)
            .is_some_and(|p| !p.said_bye && p.failures < 2 && now < p.last_heard + window)
    }

    fn heard_from(&mut self, now: Instant, peer: PeerId) {
        if let Some(known) = self.peers.get_mut(&peer) {
            known.last_heard = now;
        }
    }

    fn add_peer(&mut self, now: Instant, peer: PeerId, name: String, addrs: Vec<Multiaddr>) {
        self.pending.remove(&peer);
        let entry = self.peers.entry(peer).or_insert_with(|| Peer {
            name: String::new(),
            addrs: Vec::new(),
            last_heard: now,
            failures: 0,
            said_bye: false,
        });
        entry.last_heard = now;
        entry.failures = 0;
        entry.said_bye = false;
        if !name.is_empty() {
            entry.name = name;
        }
        if !addrs.is_empty() {
            entry.addrs = addrs;
        }
    }

    fn peer_list(&self) -> Vec<MemberInfo> {
        std::iter::once(MemberInfo {
            peer_id: self.local,
            name: self.name.clone(),
            addrs: self.local_addrs.clone(),
        })
        .chain(
            self.peers
                .iter()
                .filter(|(_, p)| !p.said_bye)
                .map(|(peer, p)| MemberInfo {
                    peer_id: *peer,
                    name: p.name.clone(),
                    addrs: p.addrs.clone(),
                }),
        )
        .take(MAX_MEMBERS)
        .collect()
    }

    fn persist_now(&mut self) {
        let delta = self.mls.provider.take_delta();
        if !delta.is_empty() {
            self.outputs.push_back(Output::Persist(delta));
        }
    }

    fn emit(&mut self, event: MeetingEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

/// Why a member left, from the removal list of a commit.
fn reason_of(removals: &[Removal], peer: &PeerId) -> LeaveReason {
    removals
        .iter()
        .find(|r| r.peer_id == *peer)
        .map_or(LeaveReason::TimedOut, |r| r.reason.into())
}

/// The removal reason the committer states.
fn removal(peer: PeerId, reason: RemovalReason) -> Removal {
    Removal {
        peer_id: peer,
        reason,
    }
}

#[cfg(test)]
mod tests;
