//! The group half of the meeting machine: commits (two-phase), welcomes, chat, and the
//! members' announced state (muted or not).
//!
//! State announcements: a member sends `AppMessage::State` (its muted flag with a
//! per-session sequence number) to every member when it changes, and again to everyone
//! after every epoch change and when it enters the group, so that joiners learn the
//! current state. Receivers keep the newest state per member and report a change only.
//! Failed deliveries are retried (with the state current at the retry) a bounded number of
//! times.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::chat::Settled;
use super::reconnect::Silence;
use super::{Inflight, Machine, Output, Phase, reason_of, removal};
use crate::group::committer::committer;
use crate::group::mls::{GroupChanges, JoinerPackage, Received};
use crate::group::{GroupError, MediaKeys, MeetingGroup, MlsIdentity, Provider};
use crate::media::{EpochSecret, MediaCommand};
use crate::meeting::{LeaveReason, MeetingEvent};
use crate::proto::control::{Removal, RemovalReason, Request, Response};
use crate::proto::to_cbor;

/// Most key-package digests remembered (each package is committed at most once).
const MAX_SEEN_PACKAGES: usize = 256;
/// Most application messages (chat lines, media signals) waiting for a retry.
const MAX_APP_RETRIES_QUEUED: usize = 1024;
/// Most out-of-order chat messages buffered per sender.
const MAX_REORDER: usize = 64;
/// Longest chat text, in bytes.
pub(crate) const MAX_CHAT_LEN: usize = 4096;

/// Application payloads inside MLS application messages.
#[derive(Debug, Serialize, Deserialize)]
enum AppMessage {
    /// Media signalling (SDP) for one member: `to` is its peer id (bytes).
    Signal { to: Vec<u8>, payload: Vec<u8> },
    /// A chat line: `session` is the sender's random stream id for this recipient, `seq`
    /// counts from 1 within it without gaps.
    Chat {
        session: u64,
        seq: u64,
        unix_ms: u64,
        text: String,
    },
    /// The sender's state: `seq` counts from 1 within `session`; newer replaces older.
    State { session: u64, seq: u64, muted: bool },
}

struct Incoming {
    from: PeerId,
    epoch: u64,
    staged: Box<openmls::prelude::StagedCommit>,
    removals: Vec<Removal>,
    expires: Instant,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("from", &self.from)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Outgoing {
    epoch: u64,
    awaiting: BTreeSet<PeerId>,
    acked: BTreeSet<PeerId>,
    welcome: Option<Vec<u8>>,
    joiners: Vec<PeerId>,
    removals: Vec<Removal>,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Inbox {
    delivered: u64,
    buffer: BTreeMap<u64, (u64, String)>,
    gap_since: Option<Instant>,
}

/// MLS-related state of the machine.
#[derive(Debug)]
pub(super) struct GroupState {
    pub(super) me: MlsIdentity,
    pub(super) provider: Provider,
    pub(super) group: Option<MeetingGroup>,
    pub(super) media: MediaKeys,
    pub(super) key_package: Option<Vec<u8>>,
    pub(super) queued_adds: BTreeMap<PeerId, JoinerPackage>,
    seen_packages: VecDeque<[u8; 32]>,
    /// An MLS welcome that arrived before its sender was admitted.
    pub(super) deferred_welcome: Option<(PeerId, Vec<u8>)>,
    kicks: BTreeSet<PeerId>,
    outgoing: Option<Outgoing>,
    incoming: Option<Incoming>,
    backoff_until: Option<Instant>,
    chat_session: Option<u64>,
    chat_seq: u64,
    app_retries: VecDeque<(Instant, PeerId, Vec<u8>, u32)>,
    inboxes: HashMap<(PeerId, u64), Inbox>,
    /// Our announced state.
    muted: bool,
    state_seq: u64,
    /// State deliveries to retry: when, to whom, which attempt comes next.
    state_retries: VecDeque<(Instant, PeerId, u32)>,
    /// The newest state heard from each member: (session, seq, muted).
    states: HashMap<PeerId, (u64, u64, bool)>,
}

impl GroupState {
    pub(super) fn new(me: MlsIdentity, provider: Provider) -> Self {
        Self {
            me,
            provider,
            group: None,
            media: MediaKeys::default(),
            key_package: None,
            queued_adds: BTreeMap::new(),
            seen_packages: VecDeque::new(),
            deferred_welcome: None,
            kicks: BTreeSet::new(),
            outgoing: None,
            incoming: None,
            backoff_until: None,
            chat_session: None,
            chat_seq: 0,
            app_retries: VecDeque::new(),
            inboxes: HashMap::new(),
            muted: false,
            state_seq: 0,
            state_retries: VecDeque::new(),
            states: HashMap::new(),
        }
    }

    pub(super) fn schedule_state_retry(&mut self, at: Instant, to: PeerId, attempt: u32) {
        // One retry per member is enough: it sends whatever the state is by then.
        if self.state_retries.len() < MAX_APP_RETRIES_QUEUED
            && !self.state_retries.iter().any(|(_, p, _)| *p == to)
        {
            self.state_retries.push_back((at, to, attempt));
        }
    }

    pub(super) fn schedule_application_retry(
        &mut self,
        at: Instant,
        to: PeerId,
        payload: Vec<u8>,
        attempt: u32,
    ) {
        if self.app_retries.len() < MAX_APP_RETRIES_QUEUED {
            self.app_retries.push_back((at, to, payload, attempt));
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [
            self.outgoing.as_ref().map(|o| o.deadline),
            self.incoming.as_ref().map(|i| i.expires),
            self.app_retries.iter().map(|(at, ..)| *at).min(),
            self.state_retries.iter().map(|(at, ..)| *at).min(),
            self.inboxes.values().filter_map(|i| i.gap_since).min(),
            // Only a pending back-off is a deadline: otherwise commits follow inputs and the
            // heartbeat tick, and a past deadline here would ask to be woken forever.
            self.backoff_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl<R: RngCore + CryptoRng> Machine<R> {
    fn persist(&mut self) {
        let delta = self.mls.provider.take_delta();
        if !delta.is_empty() {
            self.outputs.push_back(Output::Persist(delta));
        }
    }

    /// Our key package while joining (created once per join attempt), empty otherwise.
    pub(super) fn joining_key_package(&mut self) -> Vec<u8> {
        if !matches!(self.phase, Phase::Joining { .. }) {
            return Vec::new();
        }
        if self.mls.key_package.is_none() {
            match self.mls.me.key_package(&self.mls.provider) {
                Ok(kp) => self.mls.key_package = Some(kp),
                Err(err) => warn!(error = %err, "cannot create a key package"),
            }
            self.persist();
        }
        self.mls.key_package.clone().unwrap_or_default()
    }

    /// A member told us its epoch: if it is ahead of ours and nothing we staged would take us
    /// there, we missed a confirmation and stay behind for good unless we join again.
    pub(super) fn check_epoch_of(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        theirs: Option<u64>,
    ) {
        let Some(group) = &self.mls.group else { return };
        let (Some(theirs), true) = (theirs, group.leaf_of(&from).is_some()) else {
            return;
        };
        if theirs > group.epoch()
            && self.mls.incoming.is_none()
            && self.mls.outgoing.is_none()
            && self.phase == Phase::Member
        {
            info!(ours = group.epoch(), theirs, peer = %from, "a member is at a later epoch");
            self.rejoin(now, unix_ms);
        }
    }

    /// Drops a key package queued for `peer` (it is a live member after all).
    pub(super) fn forget_queued_package(&mut self, peer: &PeerId) {
        if self
            .mls
            .group
            .as_ref()
            .is_some_and(|g| g.leaf_of(peer).is_some())
        {
            self.mls.queued_adds.remove(peer);
        }
    }

    /// Queues a joiner's key package for the committer, once per distinct package.
    pub(super) fn queue_add(&mut self, peer: PeerId, raw: &[u8], package: JoinerPackage) {
        if !self.mls.queued_adds.contains_key(&peer)
            && self.mls.queued_adds.len() >= self.config.max_members
        {
            warn!(peer = %peer, "too many joiners waiting; key package dropped");
            return;
        }
        let digest: [u8; 32] = Sha256::digest(raw).into();
        if self.mls.seen_packages.contains(&digest) {
            return;
        }
        if self.mls.seen_packages.len() >= MAX_SEEN_PACKAGES {
            self.mls.seen_packages.pop_front();
        }
        self.mls.seen_packages.push_back(digest);
        debug!(peer = %peer, "key package queued for the committer");
        self.mls.queued_adds.insert(peer, package);
    }

    /// We are in the group: record it, announce it, install media keys.
    pub(super) fn install_group(&mut self, now: Instant, group: MeetingGroup) {
        let epoch = group.epoch();
        let security_code = group.security_code();
        let members = group.members();
        self.mls.group = Some(group);
        self.refresh_media_keys(now, Vec::new());
        self.persist();
        info!(epoch, %security_code, "in the meeting's group");
        self.emit(MeetingEvent::Joined {
            meeting_id: self.keys.meeting_id(),
            epoch,
            security_code,
        });
        let local = self.local;
        for (_, peer) in members.iter().filter(|(_, p)| *p != local) {
            self.add_peer(now, *peer, String::new(), Vec::new());
            let name = self.peer_name(peer);
            self.emit(MeetingEvent::MemberJoined {
                peer_id: *peer,
                name,
            });
        }
        let members: Vec<PeerId> = members.into_iter().map(|(_, p)| p).collect();
        self.mls.states.retain(|peer, _| members.contains(peer));
        self.announce_state();
        self.end_reconnect(now);
    }

    fn refresh_media_keys(&mut self, now: Instant, replaced: Vec<PeerId>) {
        let Some(group) = &self.mls.group else { return };
        match group.media_epoch_secret(&self.mls.provider) {
            Ok(secret) => {
                self.mls.media.install(now, group.epoch(), secret);
                self.outputs.push_back(Output::Media(MediaCommand::Epoch {
                    epoch: group.epoch(),
                    secret: EpochSecret(secret),
                    own_leaf: group.own_leaf(),
                    members: group.members(),
                    replaced,
                }));
            }
            Err(err) => debug!(error = %err, "no media keys for this epoch"),
        }
    }

    /// Sends an opaque media signalling payload (SDP) to `to`, inside the MLS group.
    pub fn send_signal(&mut self, to: PeerId, payload: Vec<u8>) -> Result<(), GroupError> {
        let Some(group) = self.mls.group.as_ref() else {
            return Err(GroupError::NotMember);
        };
        if group.leaf_of(&to).is_none() {
            return Err(GroupError::Mls(format!("{to} is not a member")));
        }
        let data = to_cbor(&AppMessage::Signal {
            to: to.to_bytes(),
            payload,
        });
        // Retried like chat: the first offer to a joiner often arrives before its Welcome.
        let request = self.group_request(&data)?;
        self.send(
            to,
            request,
            Inflight::Application {
                payload: data,
                attempt: 1,
            },
        );
        Ok(())
    }

    /// Encrypts `payload` as an MLS application message of the group (persisting the
    /// ratchet step) and wraps it in a `Group` request.
    fn group_request(&mut self, payload: &[u8]) -> Result<Request, GroupError> {
        let group = self.mls.group.as_mut().ok_or(GroupError::NotMember)?;
        let message = group.encrypt(&self.mls.provider, &self.mls.me, payload)?;
        self.persist();
        Ok(Request::Group {
            meeting_id: self.keys.meeting_id(),
            message,
        })
    }

    fn apply_changes(&mut self, now: Instant, changes: GroupChanges, removals: &[Removal]) {
        for (_, peer) in &changes.added {
            self.mls.queued_adds.remove(peer);
            if *peer == self.local {
                continue;
            }
            let (name, addrs) = self
                .knocking
                .remove(peer)
                .map(|knock| (knock.name, knock.addrs))
                .unwrap_or_default();
            self.add_peer(now, *peer, name, addrs);
            let name = self.peer_name(peer);
            self.emit(MeetingEvent::MemberJoined {
                peer_id: *peer,
                name,
            });
        }
        for (_, peer) in &changes.removed {
            self.mls.kicks.remove(peer);
            if *peer == self.local {
                continue;
            }
            let replaced = changes.added.iter().any(|(_, p)| p == peer);
            if replaced {
                let stream = self.rng.next_u64();
                self.chat_outbox.restart_stream(*peer, stream);
            } else {
                for settled in self.chat_outbox.member_gone(*peer) {
                    self.report_chat(settled);
                }
            }
            if replaced {
                continue; // same person, new leaf (rejoin after restart)
            }
            let name = self.peer_name(peer);
            if let Some(known) = self.peers.get_mut(peer) {
                known.said_bye = true; // no more heartbeats to a removed member
            }
            self.mls.inboxes.retain(|(sender, _), _| sender != peer);
            self.mls.states.remove(peer);
            if reason_of(removals, peer) == LeaveReason::Kicked {
                self.banned.insert(*peer);
                self.approved.remove(peer);
            }
            self.emit(MeetingEvent::MemberLeft {
                peer_id: *peer,
                name,
                reason: reason_of(removals, peer),
            });
        }
        let replaced: Vec<PeerId> = changes
            .added
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| changes.removed.iter().any(|(_, r)| r == p))
            .collect();
        self.refresh_media_keys(now, replaced);
        self.persist();
        if changes.self_removed {
            let reason = reason_of(removals, &self.local);
            info!(reason = reason.as_str(), "removed from the meeting");
            self.phase = Phase::Removed;
            self.outputs.push_back(Output::StopProviding);
            self.outputs.push_back(Output::Media(MediaCommand::Stop));
            self.emit(MeetingEvent::Removed { reason });
            return;
        }
        if let Some(group) = &self.mls.group {
            let (epoch, security_code) = (group.epoch(), group.security_code());
            let members = group.members().into_iter().map(|(_, p)| p).collect();
            info!(epoch, %security_code, "new epoch");
            self.emit(MeetingEvent::Epoch {
                epoch,
                security_code,
                members,
            });
            // Joiners (and members who rejoined with a new leaf) learn our state.
            self.announce_state();
        }
    }

    /// If we are the committer and something is to be committed, start a commit.
    pub(super) fn maybe_commit(&mut self, now: Instant) {
        if self.mls.backoff_until.is_some_and(|until| now < until) {
            return;
        }
        self.mls.backoff_until = None;
        if self.phase != Phase::Member
            || self.mls.outgoing.is_some()
            || self.mls.incoming.is_some()
            || self.reconnect.is_some()
        {
            return;
        }
        if matches!(self.silence(now), Silence::Undecided | Silence::CutOff) {
            return; // everyone else is silent: first tell whether it is us who is cut off
        }
        let Some(group) = &self.mls.group else { return };
        let members = group.members();
        if committer(&members, self.local, |p| self.is_online_member(now, p)) != Some(self.local) {
            return;
        }
        let host_present = self
            .host
            .is_some_and(|h| members.iter().any(|(_, p)| *p == h));
        let mut removals = Vec::new();
        let mut leaves = Vec::new();
        for (leaf, peer) in members.iter().filter(|(_, p)| *p != self.local) {
            let reason = if self.mls.kicks.contains(peer) {
                Some(RemovalReason::Kicked)
            } else if self.peers.get(peer).is_some_and(|p| p.said_bye) {
                Some(RemovalReason::Left)
            } else if !self.is_alive(now, peer) {
                Some(RemovalReason::TimedOut)
            } else if self.mls.queued_adds.contains_key(peer) && self.may_add(peer) {
                Some(RemovalReason::Replaced)
            } else {
                None
            };
            if let Some(reason) = reason {
                leaves.push(*leaf);
                removals.push(removal(*peer, reason));
            }
        }
        let _ = host_present;
        let adds: Vec<JoinerPackage> = self
            .mls
            .queued_adds
            .iter()
            .filter(|(peer, _)| self.may_add(peer))
            .map(|(_, package)| package.clone())
            .collect();
        if adds.is_empty() && leaves.is_empty() {
            return;
        }
        let joiners: Vec<PeerId> = adds.iter().map(|a| a.peer).collect();
        let Some(group) = self.mls.group.as_mut() else {
            return;
        };
        let out = match group.commit(&self.mls.provider, &self.mls.me, adds, leaves) {
            Ok(out) => out,
            Err(err) => {
                warn!(error = %err, "commit failed; dropping the queued key packages");
                self.mls.queued_adds.clear();
                self.mls.backoff_until = Some(now + self.config.commit_backoff);
                return;
            }
        };
        self.persist();
        let epoch = out.from_epoch;
        let recipients: Vec<PeerId> = members
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| *p != self.local)
            .collect();
        // Members leaving with this commit need not agree to it; everyone else must.
        let awaiting: BTreeSet<PeerId> = recipients
            .iter()
            .copied()
            .filter(|p| self.is_alive(now, p) && !removals.iter().any(|r| r.peer_id == *p))
            .collect();
        info!(
            epoch,
            adds = joiners.len(),
            removals = removals.len(),
            awaiting = awaiting.len(),
            "committing"
        );
        for peer in &recipients {
            let request = Request::Commit {
                meeting_id: self.keys.meeting_id(),
                epoch,
                commit: out.commit.clone(),
                removals: removals.clone(),
            };
            let kind = if awaiting.contains(peer) {
                Inflight::Commit { epoch }
            } else {
                Inflight::Other
            };
            self.send(*peer, request, kind);
        }
        self.mls.outgoing = Some(Outgoing {
            epoch,
            awaiting,
            acked: BTreeSet::new(),
            welcome: out.welcome,
            joiners,
            removals,
            deadline: now + self.config.commit_timeout_for(self.slowest_rtt()),
        });
        self.try_finish_commit(now);
    }

    pub(super) fn commit_acked(&mut self, now: Instant, from: PeerId, epoch: u64) {
        if let Some(out) = self.mls.outgoing.as_mut().filter(|o| o.epoch == epoch) {
            out.awaiting.remove(&from);
            out.acked.insert(from);
        }
        self.try_finish_commit(now);
    }

    pub(super) fn commit_unreachable(&mut self, now: Instant, peer: PeerId, epoch: u64) {
        if let Some(out) = self.mls.outgoing.as_mut().filter(|o| o.epoch == epoch) {
            out.awaiting.remove(&peer);
        }
        self.try_finish_commit(now);
    }

    fn try_finish_commit(&mut self, now: Instant) {
        if !self
            .mls
            .outgoing
            .as_ref()
            .is_some_and(|o| o.awaiting.is_empty())
        {
            return;
        }
        let Some(out) = self.mls.outgoing.take() else {
            return;
        };
        let Some(group) = self.mls.group.as_mut() else {
            return;
        };
        let changes = match group.merge_pending(&self.mls.provider) {
            Ok(mut changes) => {
                // We know exactly whom we added, whatever openmls reports for own commits.
                for joiner in &out.joiners {
                    self.mls.queued_adds.remove(joiner);
                    if !changes.added.iter().any(|(_, p)| p == joiner)
                        && let Some(leaf) = group.leaf_of(joiner)
                    {
                        changes.added.push((leaf, *joiner));
                    }
                }
                for removal in &out.removals {
                    if !changes.removed.iter().any(|(_, p)| *p == removal.peer_id) {
                        changes.removed.push((u32::MAX, removal.peer_id));
                    }
                }
                changes
            }
            Err(err) => {
                warn!(error = %err, "cannot apply our own commit");
                return;
            }
        };
        // Those who staged it apply it; removed members are told too (they were not
        // waited for, but learn that they are out).
        let removed = out.removals.iter().map(|r| r.peer_id);
        let confirm_to: BTreeSet<PeerId> = out.acked.iter().copied().chain(removed).collect();
        for peer in &confirm_to {
            let request = Request::Confirm {
                meeting_id: self.keys.meeting_id(),
                epoch: out.epoch,
            };
            self.send(*peer, request, Inflight::Other);
        }
        if let Some(welcome) = &out.welcome {
            for joiner in &out.joiners {
                let request = Request::Welcome {
                    meeting_id: self.keys.meeting_id(),
                    welcome: welcome.clone(),
                };
                self.send(*joiner, request, Inflight::Other);
            }
        }
        self.apply_changes(now, changes, &out.removals);
    }

    /// Whether `peer` takes part in the group right now: alive, and not asking to join
    /// again (a member that sends us a key package has dropped its leaf).
    fn is_online_member(&self, now: Instant, peer: &PeerId) -> bool {
        self.is_alive(now, peer) && !self.mls.queued_adds.contains_key(peer)
    }

    /// The group went on without us: drop our copy and join again with a fresh key package.
    pub(super) fn rejoin(&mut self, now: Instant, unix_ms: u64) {
        if self.phase != Phase::Member {
            return;
        }
        warn!("the group moved on without us; joining again");
        self.outputs.push_back(Output::Media(MediaCommand::Reset));
        if let Some(group) = self.mls.group.take() {
            if let Err(err) = group.delete(&self.mls.provider) {
                warn!(error = %err, "cannot delete the stale group state");
            }
            self.persist();
        }
        self.mls.outgoing = None;
        self.mls.incoming = None;
        let rng = &mut self.rng;
        self.chat_outbox.restart_streams(|| rng.next_u64());
        self.phase = Phase::Joining {
            deadline: now + self.config.join_timeout,
        };
        self.greet_everyone_afresh(now, unix_ms);
    }

    /// Our pending commit lost: drop it, tell those who staged it, back off.
    pub(super) fn abort_outgoing(&mut self, now: Instant, epoch: u64) {
        let Some(out) = self.mls.outgoing.take_if(|o| o.epoch == epoch) else {
            return;
        };
        self.stats.commits_aborted += 1;
        info!(epoch, "commit aborted: a competing commit won");
        if let Some(group) = self.mls.group.as_mut()
            && let Err(err) = group.clear_pending(&self.mls.provider)
        {
            warn!(error = %err, "cannot drop our pending commit");
        }
        self.persist();
        for peer in out.acked {
            let request = Request::Abort {
                meeting_id: self.keys.meeting_id(),
                epoch,
            };
            self.send(peer, request, Inflight::Other);
        }
        let jitter = u64::from(self.rng.next_u32() % 300);
        self.mls.backoff_until =
            Some(now + self.config.commit_backoff + std::time::Duration::from_millis(jitter));
    }

    pub(super) fn on_commit(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        epoch: u64,
        commit: &[u8],
        removals: Vec<Removal>,
    ) -> Response {
        let Some(group) = &self.mls.group else {
            // We have no group (restarted, or joining again): we cannot take part, but that
            // says nothing about the committer's membership — do not answer NotMember.
            return Response::Nack { epoch: 0 };
        };
        let current = group.epoch();
        let (Some(their_leaf), own_leaf) = (group.leaf_of(&from), group.own_leaf()) else {
            self.stats.requests_from_strangers += 1;
            return Response::NotMember;
        };
        self.heard_from(now, from);
        if epoch > current && self.mls.incoming.is_none() {
            // The group is already past our epoch: we missed a confirmation. Join again.
            self.rejoin(now, unix_ms);
            return Response::Nack { epoch: current };
        }
        if epoch != current {
            return Response::Nack { epoch: current };
        }
        if self.mls.incoming.as_ref().is_some_and(|i| i.from != from) {
            return Response::Nack { epoch: current };
        }
        if self.mls.outgoing.is_some() {
            if their_leaf < own_leaf {
                self.abort_outgoing(now, epoch);
            } else {
                return Response::Nack { epoch: current };
            }
        }
        let Some(group) = self.mls.group.as_mut() else {
            return Response::NotMember;
        };
        match group.receive(&self.mls.provider, commit, from) {
            Ok(Received::Commit { staged, .. }) => {
                self.mls.incoming = Some(Incoming {
                    from,
                    epoch,
                    staged,
                    removals,
                    expires: now + self.config.staged_timeout_for(self.rtt_of(&from)),
                });
                self.persist();
                Response::Ack
            }
            Ok(Received::Application { .. }) => Response::Nack { epoch: current },
            Err(err) => {
                self.stats.group_messages_rejected += 1;
                warn!(peer = %from, error = %err, "commit rejected");
                Response::Nack { epoch: current }
            }
        }
    }

    pub(super) fn on_confirm(&mut self, now: Instant, from: PeerId, epoch: u64) -> Response {
        let Some(incoming) = self
            .mls
            .incoming
            .take_if(|i| i.from == from && i.epoch == epoch)
        else {
            return Response::Ack;
        };
        let Some(group) = self.mls.group.as_mut() else {
            return Response::NotMember;
        };
        match group.merge_staged(&self.mls.provider, *incoming.staged) {
            Ok(changes) => self.apply_changes(now, changes, &incoming.removals),
            Err(err) => warn!(error = %err, "cannot apply a confirmed commit"),
        }
        Response::Ack
    }

    pub(super) fn on_abort(&mut self, from: PeerId, epoch: u64) -> Response {
        if self
            .mls
            .incoming
            .take_if(|i| i.from == from && i.epoch == epoch)
            .is_some()
        {
            debug!(peer = %from, epoch, "staged commit aborted by its committer");
        }
        Response::Ack
    }

    pub(super) fn on_mls_welcome(
        &mut self,
        now: Instant,
        from: PeerId,
        welcome: &[u8],
    ) -> Response {
        if self.mls.group.is_some() || !matches!(self.phase, Phase::Joining { .. }) {
            return Response::Ack;
        }
        // Only a peer that proved the meeting secret (admission) may bring us in: anyone who
        // saw our hello on the DHT could otherwise welcome us into a group of its own.
        if !self.peers.contains_key(&from) {
            if self.pending.contains_key(&from) {
                // It may overtake the answer to our hello: keep it until that answer proves
                // the sender knows the secret.
                self.mls.deferred_welcome = Some((from, welcome.to_vec()));
                return Response::Ack;
            }
            self.stats.welcomes_rejected += 1;
            warn!(peer = %from, "MLS welcome from a peer that never proved the secret");
            return Response::Refused;
        }
        let meeting_id = self.keys.meeting_id();
        match MeetingGroup::join(&self.mls.provider, welcome) {
            Ok(group)
                if group.is_meeting(meeting_id)
                    && group.leaf_of(&from).is_some()
                    && group.leaf_of(&self.local).is_some() =>
            {
                self.phase = Phase::Member;
                self.next_heartbeat = now;
                self.outputs.push_back(Output::StartProviding);
                self.install_group(now, group);
                Response::Ack
            }
            Ok(group) => {
                self.stats.group_messages_rejected += 1;
                warn!(peer = %from, "welcome for another group, or from a peer outside it");
                if let Err(err) = group.delete(&self.mls.provider) {
                    warn!(error = %err, "cannot delete the refused group");
                }
                self.mls.key_package = None;
                self.persist();
                Response::Refused
            }
            Err(err) => {
                self.stats.group_messages_rejected += 1;
                warn!(peer = %from, error = %err, "welcome rejected");
                // Greet again with a fresh key package (this one may be consumed), and drop
                // anything the failed join may have stored under our meeting's group id.
                self.mls.key_package = None;
                if let Err(err) = MeetingGroup::delete_stored(&self.mls.provider, meeting_id) {
                    warn!(error = %err, "cannot delete a half-joined group");
                }
                self.persist();
                Response::Refused
            }
        }
    }

    pub(super) fn on_group_message(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        message: &[u8],
    ) -> Response {
        let Some(group) = self.mls.group.as_mut() else {
            return Response::NotMember;
        };
        if group.leaf_of(&from).is_none() {
            self.stats.requests_from_strangers += 1;
            return Response::NotMember;
        }
        let received = group.receive(&self.mls.provider, message, from);
        self.persist();
        match received {
            Ok(Received::Application { data, .. }) => {
                self.heard_from(now, from);
                match ciborium::from_reader::<AppMessage, _>(data.as_slice()) {
                    Ok(AppMessage::Chat {
                        session,
                        seq,
                        unix_ms,
                        text,
                    }) if text.len() <= MAX_CHAT_LEN => {
                        self.receive_chat(now, from, session, seq, unix_ms, text);
                    }
                    Ok(AppMessage::State {
                        session,
                        seq,
                        muted,
                    }) => self.receive_state(from, session, seq, muted),
                    Ok(AppMessage::Signal { to, payload }) if to == self.local.to_bytes() => {
                        self.outputs
                            .push_back(Output::Media(MediaCommand::Signal { from, payload }));
                    }
                    _ => {
                        self.stats.group_messages_rejected += 1;
                        warn!(peer = %from, "malformed application payload dropped");
                    }
                }
                Response::Ack
            }
            Ok(Received::Commit { .. }) => Response::Nack {
                epoch: self.mls.group.as_ref().map_or(0, |g| g.epoch()),
            },
            Err(GroupError::WrongEpoch { current, .. }) => {
                if self.mls.incoming.is_none() {
                    // Nothing staged that would take us there: we missed a confirmation.
                    self.rejoin(now, unix_ms);
                }
                Response::Nack { epoch: current }
            }
            Err(GroupError::OutOfOrder) => {
                // Not read, so not acknowledged: the sender encrypts it again.
                debug!(peer = %from, "group message outside the ratchet window; asked again");
                Response::Nack {
                    epoch: self.mls.group.as_ref().map_or(0, |g| g.epoch()),
                }
            }
            Err(err) => {
                self.stats.group_messages_rejected += 1;
                debug!(peer = %from, error = %err, "group message rejected");
                Response::Ack
            }
        }
    }

    /// A member's state announcement: newer than what we know (or from a new session)
    /// replaces it; a change of the muted flag is reported.
    fn receive_state(&mut self, from: PeerId, session: u64, seq: u64, muted: bool) {
        let was = match self.mls.states.get(&from) {
            Some(&(known_session, known_seq, _))
                if known_session == session && seq <= known_seq =>
            {
                return; // a duplicate or an older announcement
            }
            Some(&(_, _, was)) => was,
            None => false,
        };
        self.mls.states.insert(from, (session, seq, muted));
        if muted != was {
            debug!(peer = %from, muted, "member state");
            self.emit(MeetingEvent::MemberMuted {
                peer_id: from,
                muted,
            });
        }
    }

    /// Whether a member muted itself, as it last announced (unmuted until told).
    pub fn is_member_muted(&self, peer: &PeerId) -> bool {
        self.mls
            .states
            .get(peer)
            .is_some_and(|&(_, _, muted)| muted)
    }

    /// Mutes or unmutes us: every member is told (now if we are in the group, otherwise
    /// once we enter it).
    pub fn set_muted(&mut self, muted: bool) {
        if muted == self.mls.muted {
            return;
        }
        self.mls.muted = muted;
        self.mls.state_seq += 1;
        self.announce_state();
    }

    /// Sends our current state to every other member.
    fn announce_state(&mut self) {
        if self.phase != Phase::Member {
            return;
        }
        let recipients: Vec<PeerId> = self.members().into_iter().map(|(p, _)| p).collect();
        for peer in recipients {
            self.send_state_to(peer, 1);
        }
    }

    /// Sends our current state to `peer` (attempt `attempt` of the bounded retries).
    pub(super) fn send_state_to(&mut self, peer: PeerId, attempt: u32) {
        if attempt > self.config.chat_attempts || self.phase != Phase::Member {
            return;
        }
        let session = self.sender_session();
        let message = AppMessage::State {
            session,
            seq: self.mls.state_seq,
            muted: self.mls.muted,
        };
        let Some(group) = self.mls.group.as_ref() else {
            return;
        };
        if group.leaf_of(&peer).is_none() {
            return;
        }
        let payload = to_cbor(&message);
        match self.group_request(&payload) {
            Ok(request) => self.send(peer, request, Inflight::State { attempt }),
            Err(err) => warn!(error = %err, "cannot encrypt our state"),
        }
    }

    /// Our random id for this session of sending (chat and state sequence numbers).
    fn sender_session(&mut self) -> u64 {
        match self.mls.chat_session {
            Some(session) => session,
            None => {
                let session = self.rng.next_u64();
                self.mls.chat_session = Some(session);
                session
            }
        }
    }

    fn receive_chat(
        &mut self,
        now: Instant,
        from: PeerId,
        session: u64,
        seq: u64,
        unix_ms: u64,
        text: String,
    ) {
        if seq == u64::MAX {
            return;
        }
        // One live session per sender: a new session replaces the old one.
        if !self.mls.inboxes.contains_key(&(from, session)) {
            self.mls.inboxes.retain(|(peer, _), _| *peer != from);
        }
        let inbox = self.mls.inboxes.entry((from, session)).or_default();
        if seq <= inbox.delivered || inbox.buffer.contains_key(&seq) {
            return; // duplicate
        }
        if inbox.buffer.len() >= MAX_REORDER && seq != inbox.delivered + 1 {
            return;
        }
        inbox.buffer.insert(seq, (unix_ms, text));
        self.deliver_chat(now, from, session, false);
    }

    fn deliver_chat(&mut self, now: Instant, from: PeerId, session: u64, skip_gap: bool) {
        let name = self.peer_name(&from);
        let Some(inbox) = self.mls.inboxes.get_mut(&(from, session)) else {
            return;
        };
        let mut ready = Vec::new();
        loop {
            let next = inbox.delivered + 1;
            if let Some((unix_ms, text)) = inbox.buffer.remove(&next) {
                inbox.delivered = next;
                ready.push((unix_ms, text));
            } else if skip_gap && !inbox.buffer.is_empty() {
                let (&first, _) = inbox.buffer.iter().next().expect("not empty");
                inbox.delivered = first.saturating_sub(1);
            } else {
                break;
            }
        }
        inbox.gap_since = if inbox.buffer.is_empty() {
            None
        } else {
            Some(inbox.gap_since.unwrap_or(now + self.config.chat_give_up))
        };
        for (unix_ms, text) in ready {
            self.emit(MeetingEvent::Chat {
                from,
                name: name.clone(),
                text,
                unix_ms,
            });
        }
    }

    /// Sends a chat line to every member: it is reported at once
    /// ([`MeetingEvent::ChatSent`]), then retried to each member until acknowledged (see
    /// [`super::chat`]). Returns its number. A line over [`MAX_CHAT_LEN`] bytes is refused
    /// whole, never cut.
    pub fn send_chat(&mut self, now: Instant, unix_ms: u64, text: &str) -> Result<u64, GroupError> {
        if self.phase != Phase::Member || self.mls.group.is_none() {
            return Err(GroupError::NotMember);
        }
        if text.len() > MAX_CHAT_LEN {
            return Err(GroupError::ChatTooLong {
                len: text.len(),
                max: MAX_CHAT_LEN,
            });
        }
        if !self.chat_outbox.has_room() {
            return Err(GroupError::ChatBacklog(self.chat_outbox.pending()));
        }
        self.mls.chat_seq += 1;
        let seq = self.mls.chat_seq;
        let recipients: Vec<PeerId> = self.members().into_iter().map(|(p, _)| p).collect();
        self.emit(MeetingEvent::ChatSent {
            seq,
            text: text.to_owned(),
            unix_ms,
        });
        let rng = &mut self.rng;
        let settled = self
            .chat_outbox
            .push(seq, text.to_owned(), unix_ms, recipients, || rng.next_u64());
        if let Some(settled) = settled {
            self.report_chat(settled);
        }
        self.flush_chat(now);
        Ok(seq)
    }

    /// Sends our failed line `seq` again to the members it failed for.
    pub fn resend_chat(&mut self, now: Instant, seq: u64) -> Result<(), GroupError> {
        let members: BTreeSet<PeerId> = self.members().into_iter().map(|(p, _)| p).collect();
        let rng = &mut self.rng;
        if !self.chat_outbox.resend(seq, &members, || rng.next_u64()) {
            return Err(GroupError::Mls(format!(
                "line {seq} has nobody left to send it to"
            )));
        }
        self.flush_chat(now);
        Ok(())
    }

    /// Our chat lines not yet acknowledged by every member.
    pub fn chat_pending(&self) -> usize {
        self.chat_outbox.pending()
    }

    /// Sends what the chat outbox has due: new lines within each member's window, retries.
    pub(super) fn flush_chat(&mut self, now: Instant) {
        for send in self.chat_outbox.due(now) {
            let peer = send.peer;
            let member = self
                .mls
                .group
                .as_ref()
                .is_some_and(|g| g.leaf_of(&peer).is_some());
            if self.phase == Phase::Member && !member {
                for settled in self.chat_outbox.member_gone(peer) {
                    self.report_chat(settled);
                }
                continue;
            }
            let message = AppMessage::Chat {
                session: send.stream,
                seq: send.wire,
                unix_ms: send.unix_ms,
                text: send.text,
            };
            let payload = to_cbor(&message);
            let (stream, wire) = (send.stream, send.wire);
            match self.group_request(&payload) {
                Ok(request) => {
                    debug!(peer = %peer, line = send.line, wire, attempt = send.attempt, "chat line sent");
                    self.send(peer, request, Inflight::Chat { stream, wire });
                }
                Err(err) => {
                    // Not in a group right now (joining again): try later.
                    debug!(error = %err, line = send.line, "cannot encrypt a chat line yet");
                    self.chat_failed(now, peer, stream, wire);
                }
            }
        }
    }

    pub(super) fn chat_acked(&mut self, peer: PeerId, stream: u64, wire: u64) {
        if let Some(settled) = self.chat_outbox.acked(peer, stream, wire) {
            self.report_chat(settled);
        }
    }

    pub(super) fn chat_failed(&mut self, now: Instant, peer: PeerId, stream: u64, wire: u64) {
        let jitter = f64::from(self.rng.next_u32()) / f64::from(u32::MAX);
        let settled = self.chat_outbox.failed(
            now,
            peer,
            stream,
            wire,
            self.config.chat_retry,
            self.config.chat_give_up,
            jitter,
        );
        if let Some(settled) = settled {
            self.report_chat(settled);
        }
    }

    fn report_chat(&mut self, settled: Settled) {
        match settled {
            Settled::Delivered { seq } => self.emit(MeetingEvent::ChatDelivered { seq }),
            Settled::Failed { seq, peers } => {
                warn!(
                    seq,
                    failed_for = peers.len(),
                    "a chat line did not reach everyone"
                );
                self.emit(MeetingEvent::ChatFailed { seq, peers });
            }
        }
    }

    fn send_application_to(&mut self, _now: Instant, peer: PeerId, payload: Vec<u8>, attempt: u32) {
        if attempt > self.config.chat_attempts
            || self
                .mls
                .group
                .as_ref()
                .and_then(|g| g.leaf_of(&peer))
                .is_none()
        {
            return;
        }
        match self.group_request(&payload) {
            Ok(request) => self.send(peer, request, Inflight::Application { payload, attempt }),
            Err(err) => warn!(error = %err, "cannot encrypt an application message"),
        }
    }

    /// Asks for `peer` to be removed: committed at once if we are the committer and
    /// the host (or the host is gone), otherwise sent to the committer.
    pub fn kick(&mut self, now: Instant, peer: PeerId) -> Result<(), GroupError> {
        let Some(group) = &self.mls.group else {
            return Err(GroupError::NotMember);
        };
        if group.leaf_of(&peer).is_none() {
            return Err(GroupError::Mls(format!("{peer} is not a member")));
        }
        let members = group.members();
        match committer(&members, self.local, |p| self.is_online_member(now, p)) {
            Some(c) if c == self.local => {
                if self.may_kick(&members, self.local) {
                    self.mls.kicks.insert(peer);
                    self.maybe_commit(now);
                } else {
                    return Err(GroupError::Mls("only the host may remove members".into()));
                }
            }
            Some(c) => {
                let request = Request::Kick {
                    meeting_id: self.keys.meeting_id(),
                    peer_id: peer,
                };
                self.send(c, request, Inflight::Other);
            }
            None => return Err(GroupError::NotMember),
        }
        Ok(())
    }

    /// Kick policy: the host's kicks are honoured; once the host has left, any member's.
    fn may_kick(&self, members: &[(u32, PeerId)], requester: PeerId) -> bool {
        match self.host {
            Some(host) if members.iter().any(|(_, p)| *p == host) => requester == host,
            _ => true,
        }
    }

    pub(super) fn on_kick_request(&mut self, from: PeerId, peer: PeerId) -> Response {
        let Some(group) = &self.mls.group else {
            return Response::NotMember;
        };
        let members = group.members();
        if !members.iter().any(|(_, p)| *p == from) {
            return Response::NotMember;
        }
        if !self.may_kick(&members, from) || !members.iter().any(|(_, p)| *p == peer) {
            info!(requester = %from, "kick refused by policy");
            return Response::Refused;
        }
        self.mls.kicks.insert(peer);
        Response::Ack
    }

    pub(super) fn group_timeouts(&mut self, now: Instant) {
        if self.mls.incoming.as_ref().is_some_and(|i| now >= i.expires) {
            debug!("staged commit expired without confirmation");
            self.mls.incoming = None;
        }
        if let Some(out) = self.mls.outgoing.as_ref().filter(|o| now >= o.deadline) {
            // Silence is not consent: abort, count a failure against the silent members
            // (if they are really gone, liveness removes them in the next commit).
            let (epoch, silent) = (out.epoch, out.awaiting.clone());
            for peer in silent {
                if let Some(known) = self.peers.get_mut(&peer) {
                    known.failures = known.failures.saturating_add(1);
                }
            }
            self.abort_outgoing(now, epoch);
        }
        let due: Vec<(Instant, PeerId, Vec<u8>, u32)> = {
            let (due, later): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut self.mls.app_retries)
                    .into_iter()
                    .partition(|(at, ..)| *at <= now);
            self.mls.app_retries = later;
            due.into_iter().collect()
        };
        for (_, peer, payload, attempt) in due {
            self.send_application_to(now, peer, payload, attempt);
        }
        let (due, later): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.mls.state_retries)
            .into_iter()
            .partition(|(at, ..)| *at <= now);
        self.mls.state_retries = later;
        for (_, peer, attempt) in due {
            self.send_state_to(peer, attempt);
        }
        let gaps: Vec<(PeerId, u64)> = self
            .mls
            .inboxes
            .iter()
            .filter(|(_, inbox)| inbox.gap_since.is_some_and(|t| now >= t))
            .map(|(key, _)| *key)
            .collect();
        for (peer, session) in gaps {
            self.deliver_chat(now, peer, session, true);
        }
        self.flush_chat(now);
    }
}

impl From<LeaveReason> for RemovalReason {
    fn from(reason: LeaveReason) -> Self {
        match reason {
            LeaveReason::Left => RemovalReason::Left,
            LeaveReason::Kicked => RemovalReason::Kicked,
            LeaveReason::TimedOut => RemovalReason::TimedOut,
        }
    }
}
