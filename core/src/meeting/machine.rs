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
//!
//! Where each part lives (one `impl Machine` block per concern):
//! - this file: the types, construction, accessors, and the dispatch of each input
//!   (request, answer, failed send, timer) to the part that handles it;
//! - [`config`]: timers and bounds, and how they scale with the round-trip time;
//! - [`admission`]: greeting candidates and the hello pipeline (rate limit → proof of the
//!   secret → lobby → admit), and the answers to our own hellos;
//! - [`lobby`]: joiners waiting for the host's approval;
//! - [`liveness`]: known peers, heartbeats, round-trip times, who counts as alive;
//! - [`reconnect`]: telling "they are gone" from "we are cut off", and joining again;
//! - [`epoch_evidence`]: epoch proofs in heartbeats: fork alerts, and the evidence needed
//!   before joining again;
//! - [`commit`]: the two-phase commit, kicks, and applying a new epoch;
//! - [`commit_rules`]: what a member's commit must satisfy before we stage it (who may
//!   commit, why each member is removed, who may be added);
//! - [`welcome`]: our key package, joiners' key packages, entering the group;
//! - [`application`]: chat, media signals and the muted state over MLS application
//!   messages, with [`chat`] (the sender's outbox) and [`group_state`] (the MLS-side state).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::{CryptoRng, RngCore};
use tracing::{debug, info, warn};

use super::{AlertKind, LeaveReason, MeetingEvent};
use crate::admission::{HelloLimiter, MeetingKeys, NONCE_LEN, ReplayGuard};
use crate::backoff::Backoff;
use crate::group::statements::Statement;
use crate::group::{GroupError, MediaKeys, MeetingGroup, MlsIdentity, Provider, StorageDelta};
use crate::invite::MeetingId;
use crate::proto::control::{
    Evidence, MAX_ADDRS, Removal, RemovalReason, Request, Response, StatementSignature,
};

mod admission;
mod application;
mod chat;
mod commit;
mod commit_rules;
mod config;
mod epoch_evidence;
mod group_state;
mod liveness;
mod lobby;
mod reconnect;
mod welcome;

pub(crate) use application::AppMessage;

pub use config::Config;

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
    /// Members' heartbeats without an epoch proof (older peers): ignored for fork checks
    /// and as evidence of a later epoch.
    pub epoch_proofs_missing: u64,
    /// Members' heartbeats whose epoch proof does not verify under the sender's leaf key.
    pub epoch_proofs_invalid: u64,
    /// Forks detected (a verified proof of another group at our epoch).
    pub forks_detected: u64,
    /// Signs of a later epoch (a commit, a group message, a `Nack`, a heartbeat) that the
    /// verified epoch proofs did not back: we kept our group.
    pub epoch_claims_unproven: u64,
    /// Rejoins put off by the rate limit ([`Config::rejoin_interval`]).
    pub rejoins_deferred: u64,
    /// Members' commits refused by the commit rules ([`commit_rules`]).
    pub commits_rejected: u64,
    /// Kick or approval requests whose signed statement is missing, invalid, or not the
    /// requester's to make.
    pub statements_refused: u64,
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
    /// A kick rotated the meeting secret (and with it the rendezvous key): withdraw the
    /// announcement under `previous_dht_key`, announce under the new key, and give the
    /// application (and the store) the invite with `secret`. Every invite out there with
    /// the previous secret stops working.
    Rekeyed {
        /// The new meeting secret (learnt through MLS by every remaining member).
        secret: crate::invite::MeetingSecret,
        /// The DHT key we provided until now.
        previous_dht_key: Vec<u8>,
    },
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
    /// Its signed "I leave", from its goodbye: the evidence the commit removing it carries.
    leave: Option<StatementSignature>,
    /// When its goodbye arrived (from then on its removal is due).
    bye_at: Option<Instant>,
    /// When it last answered a request of ours (so it heard us then).
    answered_us: Option<Instant>,
    /// Its latest verified epoch proof ([`epoch_evidence`]).
    claim: Option<epoch_evidence::Claim>,
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
    /// A hello, with its nonce: the answer's MAC must prove the secret over it (an answer
    /// to an earlier hello can arrive after a newer one went out).
    Hello {
        nonce: [u8; NONCE_LEN],
    },
    Heartbeat,
    Commit {
        epoch: u64,
    },
    /// An application payload (a chat line or a media signal), delivered with retries.
    Application {
        payload: Vec<u8>,
        attempt: u32,
        /// The pause before the next attempt, should this one not be taken.
        backoff: Backoff,
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

/// The meeting state machine. See the [module docs](crate::meeting).
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
    /// Joiners the host let in, with the host's signed approval (which the commit adding
    /// them carries).
    approved: BTreeMap<PeerId, StatementSignature>,
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
    /// The chat lines taken from each member lately (by identity).
    seen_lines: chat::SeenLines,
    mls: group_state::GroupState,
    /// (kind, peer, epoch) already reported as an alert.
    alerted: BTreeSet<(AlertKind, PeerId, u64)>,
    /// When we last dropped our group to join again (rate limit).
    last_rejoin: Option<Instant>,
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
        machine.persist();
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
            mls: group_state::GroupState::new(me, provider),
            chat_outbox: chat::ChatOutbox::new(config.chat_retry),
            seen_lines: chat::SeenLines::default(),
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
            approved: BTreeMap::new(),
            knocking: BTreeMap::new(),
            banned: BTreeSet::new(),
            rtts: HashMap::new(),
            network_heard: None,
            reconnect: None,
            alerted: BTreeSet::new(),
            last_rejoin: None,
        }
    }

    /// The meeting's id.
    pub fn meeting_id(&self) -> MeetingId {
        self.keys.meeting_id()
    }

    /// The DHT key members provide and joiners look up (changes when a kick rotates the
    /// meeting secret).
    pub fn dht_key(&self) -> Vec<u8> {
        self.keys.dht_key()
    }

    /// Refuses `peers` for the rest of the meeting, as if we had seen their kick (the ban
    /// list the store kept across a restart).
    pub fn ban(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.banned.extend(peers);
    }

    /// The members refused for the rest of the meeting (kicked, or named as kicked in the
    /// welcome that let us in).
    pub fn banned(&self) -> impl Iterator<Item = &PeerId> {
        self.banned.iter()
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

    /// Our reachable addresses, shared with other members.
    pub fn set_local_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.local_addrs = addrs.into_iter().take(MAX_ADDRS).collect();
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
            other if !self.is_for_us(&other) => return self.stranger(),
            Request::Heartbeat {
                members,
                epoch,
                proof,
                ..
            } => {
                if !self.on_heartbeat(now, unix_ms, from, members, epoch, proof) {
                    return self.stranger();
                }
                Response::Ack
            }
            Request::Bye { leave, .. } => {
                if !self.on_bye(now, from, leave) {
                    return self.stranger();
                }
                Response::Ack
            }
            Request::Commit { epoch, commit, .. } => {
                self.on_commit(now, unix_ms, from, epoch, &commit)
            }
            Request::Confirm { epoch, .. } => self.on_confirm(now, from, epoch),
            Request::Abort { epoch, .. } => self.on_abort(from, epoch),
            Request::Welcome {
                welcome, banned, ..
            } => self.on_mls_welcome(now, from, &welcome, banned),
            Request::Group { message, .. } => self.on_group_message(now, unix_ms, from, &message),
            Request::Kick {
                peer_id, signature, ..
            } => self.on_kick_request(now, from, peer_id, signature),
            Request::Approve {
                peer_id, signature, ..
            } => self.on_approve(from, peer_id, signature),
        };
        self.maybe_commit(now);
        response
    }

    /// A request from a peer that is not one of ours: counted, answered `NotMember`.
    fn stranger(&mut self) -> Response {
        self.stats.requests_from_strangers += 1;
        Response::NotMember
    }

    fn is_for_us(&self, request: &Request) -> bool {
        let id = match request {
            Request::Hello(hello) => hello.meeting_id,
            Request::Heartbeat { meeting_id, .. }
            | Request::Bye { meeting_id, .. }
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
            peer.answered_us = Some(now);
        }
        match (kind, response) {
            (Inflight::Hello { nonce }, response) => {
                self.on_hello_answer(now, unix_ms, from, &nonce, response);
            }
            (
                Inflight::Commit { epoch },
                response @ (Response::Ack | Response::Nack { .. } | Response::NotMember),
            ) => self.on_commit_answer(now, unix_ms, from, epoch, response),
            (Inflight::Heartbeat, Response::Ack) => self.heartbeat_acked(now, from),
            (Inflight::Chat { stream, wire }, Response::Ack) => {
                self.heard_from(now, from);
                self.chat_acked(from, stream, wire);
            }
            (
                kind @ (Inflight::Chat { .. }
                | Inflight::Application { .. }
                | Inflight::State { .. }),
                Response::Nack { .. } | Response::NotMember,
            ) => self.application_not_taken(now, from, kind),
            (_, Response::NotMember) => self.answered_not_member(now, unix_ms, from),
            _ => self.heard_from(now, from),
        }
        self.maybe_commit(now);
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
            Inflight::Hello { nonce } => {
                if self.pending.get(&peer).is_some_and(|p| p.nonce == nonce) {
                    self.pending.remove(&peer);
                }
            }
            // Silence decides liveness, not failed heartbeats: a network that drops for a
            // moment makes sends fail at once (no route, a closed connection) and must not
            // remove anyone (docs/protocol.md §5).
            Inflight::Heartbeat | Inflight::Other => {}
            Inflight::Commit { epoch } => self.commit_send_failed(now, peer, epoch),
            kind @ (Inflight::Application { .. }
            | Inflight::State { .. }
            | Inflight::Chat { .. }) => {
                self.application_failed(now, peer, kind);
            }
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
        self.send_heartbeats(now);
        self.forget_silent_strangers(now);
        self.expire_lobby(now);
        self.limiter.forget_idle(now);
        self.forget_unanswered_hellos(now);
        self.commit_timeouts(now);
        self.application_timeouts(now);
        self.update_connectivity(now);
        self.maybe_commit(now);
    }

    /// We leave: say goodbye to every peer.
    pub fn leave(&mut self) {
        if self.is_finished() {
            return;
        }
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        // Our signed "I leave", bound to our leaf: the commit that removes us carries it,
        // so every member can check that we left.
        let meeting_id = self.keys.meeting_id();
        let leave = self.mls.group.as_ref().and_then(|group| {
            let binding = group.leaf_binding(&self.local)?;
            let signature =
                self.mls
                    .me
                    .sign_statement(Statement::Leave, meeting_id, &self.local, &binding);
            Some(StatementSignature(signature))
        });
        for peer in peers {
            let request = Request::Bye { meeting_id, leave };
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

    /// Sends `request` to `to` (at the addresses we know) and remembers what it was.
    fn send(&mut self, to: PeerId, request: Request, kind: Inflight) {
        let addrs = self
            .peers
            .get(&to)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        self.send_to(to, addrs, request, kind);
    }

    /// Sends `request` to `to`, dialing `addrs` if need be, and remembers what it was.
    fn send_to(&mut self, to: PeerId, addrs: Vec<Multiaddr>, request: Request, kind: Inflight) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.inflight.insert(tag, (to, kind));
        self.outputs.push_back(Output::Send {
            to,
            addrs,
            request,
            tag,
        });
    }

    /// The MLS storage writes of the last operations, for the durable store.
    fn persist(&mut self) {
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

/// A removal as the committer states it, with the signed statement behind it, if any.
fn removal(peer: PeerId, reason: RemovalReason, evidence: Option<Evidence>) -> Removal {
    Removal {
        peer_id: peer,
        reason,
        evidence,
    }
}

#[cfg(test)]
mod tests;
