//! The two-phase commit (`docs/protocol.md` §6), kicks, and applying a new epoch.
//!
//! - The committer is the lowest-leaf online member ([`committer`]). It commits queued
//!   adds (approved ones, in a lobby meeting), kicks, goodbyes, timeouts and replaced leaves
//!   in one commit — never while every other member is silent and it is not yet known
//!   whether we are the one cut off ([`super::reconnect`]).
//! - Phase 1: `Commit` to every other member, who stage it and answer `Ack` (or `Nack`:
//!   other epoch, or another commit already staged). Phase 2: when every online member
//!   acknowledged, the committer merges, sends `Confirm` (members merge; removed members
//!   learn they are out) and the MLS welcome to the joiners.
//! - A `Nack`, or silence past the commit timeout, aborts (`Abort` to those who staged)
//!   and the committer backs off for [`Config::commit_backoff`](super::Config::commit_backoff)
//!   plus up to 300 ms; a commit from a lower leaf beats our own pending one. A member drops
//!   a staged commit not confirmed within the staged timeout.
//! - Kicks: the host's are honoured; once the host has left, any member's. The requester
//!   signs "remove this member" for the member's leaf and sends it to every member; whoever
//!   commits next carries it (a kicked member is never the committer, so kicking the
//!   committer works too). A member kicked is banned for the rest of the meeting.
//! - Every commit carries its reasons (who is removed why, the host's approvals of the
//!   joiners) as its authenticated data; a member stages it only if it follows the commit
//!   rules ([`super::commit_rules`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use tracing::{debug, info, warn};

use super::group_state::PendingKick;
use super::reconnect::Silence;
use super::{Inflight, LeaveReason, Machine, MeetingEvent, Output, Phase, reason_of, removal};
use crate::admission::MeetingKeys;
use crate::group::GroupError;
use crate::group::mls::{GroupChanges, JoinerPackage, Received};
use crate::group::statements::Statement;
use crate::media::MediaCommand;
use crate::meeting::CommitViolation;
use crate::proto::control::{
    Approval, CommitReasons, Evidence, MAX_MEMBERS, Removal, RemovalReason, Request, Response,
    StatementSignature,
};

/// A member's commit we staged, waiting for its confirmation.
pub(super) struct Incoming {
    pub(super) from: PeerId,
    pub(super) epoch: u64,
    pub(super) staged: Box<openmls::prelude::StagedCommit>,
    pub(super) removals: Vec<Removal>,
    pub(super) expires: Instant,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("from", &self.from)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Our commit, waiting for the members' acknowledgements.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) epoch: u64,
    pub(super) awaiting: BTreeSet<PeerId>,
    pub(super) acked: BTreeSet<PeerId>,
    pub(super) welcome: Option<Vec<u8>>,
    pub(super) joiners: Vec<PeerId>,
    pub(super) removals: Vec<Removal>,
    pub(super) deadline: Instant,
}

/// What a commit of ours changes: the joiners' packages, and the leaves removed with why.
#[derive(Debug, Default)]
struct Proposal {
    adds: Vec<JoinerPackage>,
    leaves: Vec<u32>,
    removals: Vec<Removal>,
}

impl<R: RngCore + CryptoRng> Machine<R> {
    /// If we are the committer and something is to be committed, start a commit.
    pub(super) fn maybe_commit(&mut self, now: Instant) {
        if !self.may_commit_now(now) {
            return;
        }
        let Some(group) = &self.mls.group else { return };
        let members = group.members();
        if self.current_committer(now) != Some(self.local) {
            return;
        }
        let proposal = self.proposal(now, &members);
        if proposal.adds.is_empty() && proposal.leaves.is_empty() {
            return;
        }
        self.start_commit(now, &members, proposal);
    }

    /// Whether nothing holds a commit of ours back: no back-off, no commit in flight
    /// either way, and not (possibly) cut off.
    fn may_commit_now(&mut self, now: Instant) -> bool {
        if self.mls.backoff_until.is_some_and(|until| now < until) {
            return false;
        }
        self.mls.backoff_until = None;
        if self.phase != Phase::Member
            || self.mls.outgoing.is_some()
            || self.mls.incoming.is_some()
            || self.reconnect.is_some()
        {
            return false;
        }
        // Everyone else is silent: first tell whether it is us who is cut off.
        !matches!(self.silence(now), Silence::Undecided | Silence::CutOff)
    }

    /// What is to be committed now: members to remove (kicked, gone, timed out, a
    /// withholding committer, or asking to join again with a new leaf), each with the
    /// signed statement behind it, and joiners that may be added.
    fn proposal(&self, now: Instant, members: &[(u32, PeerId)]) -> Proposal {
        let mut proposal = Proposal::default();
        let withholding = self.withholding(now);
        for (leaf, peer) in members.iter().filter(|(_, p)| *p != self.local) {
            let goodbye = self.peers.get(peer).filter(|p| p.said_bye);
            let removal = if let Some(kick) = self.mls.kicks.get(peer) {
                Some(removal(*peer, RemovalReason::Kicked, Some(kick.evidence)))
            } else if let Some(known) = goodbye {
                let evidence = known.leave.map(|signature| Evidence {
                    signer: *peer,
                    signature,
                });
                Some(removal(*peer, RemovalReason::Left, evidence))
            } else if !self.is_alive(now, peer) {
                Some(removal(*peer, RemovalReason::TimedOut, None))
            } else if withholding == Some(*peer) {
                Some(removal(*peer, RemovalReason::Withheld, None))
            } else if self.mls.queued_adds.contains_key(peer) && self.may_add(peer) {
                Some(removal(*peer, RemovalReason::Replaced, None))
            } else {
                None
            };
            if let Some(removal) = removal {
                proposal.leaves.push(*leaf);
                proposal.removals.push(removal);
            }
        }
        proposal.adds = self
            .mls
            .queued_adds
            .iter()
            .filter(|(peer, _)| self.may_add(peer))
            .map(|(_, package)| package.clone())
            .collect();
        proposal
    }

    /// Phase 1: commits `proposal` to our copy of the group (pending) and sends it to
    /// every other member; the live ones not leaving with it must acknowledge it.
    fn start_commit(&mut self, now: Instant, members: &[(u32, PeerId)], proposal: Proposal) {
        let Proposal {
            adds,
            leaves,
            removals,
        } = proposal;
        let joiners: Vec<PeerId> = adds.iter().map(|a| a.peer).collect();
        // The reasons every receiver checks, signed with the commit.
        let reasons = CommitReasons {
            removals: removals.clone(),
            approvals: joiners
                .iter()
                .filter_map(|joiner| {
                    self.approved.get(joiner).map(|signature| Approval {
                        joiner: *joiner,
                        signature: *signature,
                    })
                })
                .collect(),
        };
        let Some(group) = self.mls.group.as_mut() else {
            return;
        };
        let aad = reasons.to_aad();
        let out = match group.commit(&self.mls.provider, &self.mls.me, adds, leaves, aad) {
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

    /// A member answered our commit of `epoch`.
    pub(super) fn on_commit_answer(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        epoch: u64,
        response: Response,
    ) {
        self.heard_from(now, from);
        match response {
            Response::Ack => self.commit_acked(now, from, epoch),
            Response::Nack { epoch: theirs } => {
                self.abort_outgoing(now, epoch);
                self.commit_refused(now, unix_ms, epoch, Some(theirs));
            }
            // A member that said goodbye has left the group on its side: nothing to learn.
            Response::NotMember if self.peers.get(&from).is_some_and(|p| p.said_bye) => {
                self.abort_outgoing(now, epoch);
            }
            Response::NotMember => {
                self.abort_outgoing(now, epoch);
                self.commit_refused(now, unix_ms, epoch, None);
            }
            Response::Welcome { .. } | Response::Refused => {}
        }
    }

    fn commit_acked(&mut self, now: Instant, from: PeerId, epoch: u64) {
        if let Some(out) = self.mls.outgoing.as_mut().filter(|o| o.epoch == epoch) {
            out.awaiting.remove(&from);
            out.acked.insert(from);
        }
        self.try_finish_commit(now);
    }

    /// Our commit of `epoch` could not be delivered to `peer`: it counts as two failures
    /// (it is soon gone, if it stays unreachable) and is no longer waited for.
    pub(super) fn commit_send_failed(&mut self, now: Instant, peer: PeerId, epoch: u64) {
        if let Some(known) = self.peers.get_mut(&peer) {
            known.failures = known.failures.saturating_add(2);
        }
        if let Some(out) = self.mls.outgoing.as_mut().filter(|o| o.epoch == epoch) {
            out.awaiting.remove(&peer);
        }
        self.try_finish_commit(now);
    }

    /// Phase 2, once nobody is awaited: merge our commit, confirm it to those who staged it
    /// (and to the removed), welcome the joiners, apply the changes.
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
        let mut changes = match group.merge_pending(&self.mls.provider) {
            Ok(changes) => changes,
            Err(err) => {
                warn!(error = %err, "cannot apply our own commit");
                return;
            }
        };
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
                    banned: self.banned.iter().take(MAX_MEMBERS).copied().collect(),
                };
                self.send(*joiner, request, Inflight::Other);
            }
        }
        self.apply_changes(now, changes, &out.removals);
    }

    /// Whether `peer` takes part in the group right now: alive, and not asking to join
    /// again (a member that sends us a key package has dropped its leaf).
    pub(super) fn is_online_member(&self, now: Instant, peer: &PeerId) -> bool {
        self.is_alive(now, peer) && !self.mls.queued_adds.contains_key(peer)
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
            Some(now + self.config.commit_backoff + Duration::from_millis(jitter));
    }

    /// A staged commit not confirmed in time is dropped; our own commit not acknowledged
    /// in time is aborted.
    pub(super) fn commit_timeouts(&mut self, now: Instant) {
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
    }

    /// Phase 1 at a member: stage `from`'s commit of `epoch` if it follows the commit
    /// rules ([`super::commit_rules`]) and nothing else is staged (a lower leaf's commit
    /// beats our own pending one).
    pub(super) fn on_commit(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        epoch: u64,
        commit: &[u8],
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
        // A commit of a later epoch: the group may be past ours (we missed a confirmation),
        // or the number is made up. Only verified epoch proofs decide.
        if epoch > current {
            self.consider_catching_up(now, unix_ms);
        }
        if epoch != current {
            return Response::Nack { epoch: current };
        }
        if self.mls.incoming.as_ref().is_some_and(|i| i.from != from) {
            return Response::Nack { epoch: current };
        }
        if self.mls.outgoing.is_some() && their_leaf > own_leaf {
            return Response::Nack { epoch: current };
        }
        let Some(group) = self.mls.group.as_mut() else {
            return Response::NotMember;
        };
        match group.receive(&self.mls.provider, commit, from) {
            Ok(Received::Commit { staged, aad, .. }) => {
                let contents = group.contents(&staged);
                let verdict = CommitReasons::from_aad(&aad)
                    .map_err(|_| CommitViolation::ReasonsMismatch)
                    .and_then(|reasons| {
                        self.check_commit(now, from, &contents, &reasons)
                            .map(|()| reasons)
                    });
                let reasons = match verdict {
                    Ok(reasons) => reasons,
                    Err(violation) => {
                        self.commit_broke_rules(from, epoch, violation);
                        return Response::Nack { epoch: current };
                    }
                };
                // A valid commit from a lower leaf beats our own pending one.
                if self.mls.outgoing.is_some() {
                    self.abort_outgoing(now, epoch);
                }
                self.mls.incoming = Some(Incoming {
                    from,
                    epoch,
                    staged,
                    removals: reasons.removals,
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

    /// Phase 2 at a member: the committer confirmed the commit we staged.
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

    /// The committer aborted the commit we staged.
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

    /// A new epoch, merged: members added and removed, media keys, and what the
    /// application hears.
    fn apply_changes(&mut self, now: Instant, changes: GroupChanges, removals: &[Removal]) {
        for (_, peer) in &changes.added {
            self.member_added(now, *peer);
        }
        for (_, peer) in &changes.removed {
            let replaced = changes.added.iter().any(|(_, p)| p == peer);
            self.member_removed(*peer, replaced, removals);
        }
        let replaced: Vec<PeerId> = changes
            .added
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| changes.removed.iter().any(|(_, r)| r == p))
            .collect();
        self.refresh_media_keys(now, replaced);
        self.persist();
        let kicked = removals
            .iter()
            .any(|r| r.reason == RemovalReason::Kicked && r.peer_id != self.local);
        if kicked && !changes.self_removed {
            self.lock_the_door();
        }
        if changes.self_removed {
            let replaced_by_us = removals
                .iter()
                .any(|r| r.peer_id == self.local && r.reason == RemovalReason::Replaced)
                && changes.added.iter().any(|(_, p)| *p == self.local);
            if replaced_by_us {
                // A hello of ours from the same join, sent before its welcome reached us
                // and delivered after: the committer put that key package's leaf in place
                // of ours. Its welcome follows; we wait for it (greeting afresh now would
                // only replace that leaf in turn).
                info!("a later key package of ours replaced our leaf: waiting for its welcome");
                self.drop_group_to_join_again(now);
                self.next_rehello = now + self.config.rehello_interval;
                return;
            }
            let reason = reason_of(removals, &self.local);
            if reason == LeaveReason::TimedOut {
                // Timed out while nobody could hear us (a network drop): we did not leave
                // and nobody kicked us, so we join again, as when a member answers
                // `NotMember` to a cut-off member.
                info!("the group timed us out: joining again");
                self.drop_group_to_join_again(now);
                self.next_rehello = now;
                return;
            }
            info!(reason = reason.as_str(), "removed from the meeting");
            self.phase = Phase::Removed;
            self.outputs.push_back(Output::StopProviding);
            self.outputs.push_back(Output::Media(MediaCommand::Stop));
            self.emit(MeetingEvent::Removed { reason });
            return;
        }
        if let Some(epoch) = self.mls.group.as_ref().map(|g| g.epoch()) {
            self.forget_alerts_before(epoch);
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

    /// A member was kicked: the meeting secret and the rendezvous key rotate to a secret
    /// exported from the new epoch, which the kicked member does not have. Its invite (and
    /// every invite sent before) no longer finds the meeting nor proves the secret.
    fn lock_the_door(&mut self) {
        let Some(group) = &self.mls.group else { return };
        let meeting_id = self.keys.meeting_id();
        let secret = match group.rotated_meeting_secret(&self.mls.provider, meeting_id) {
            Ok(secret) => secret,
            Err(err) => {
                warn!(error = %err, "cannot rotate the meeting secret after a kick");
                return;
            }
        };
        let previous_dht_key = self.keys.dht_key();
        self.keys = MeetingKeys::derive(meeting_id, &secret);
        info!(
            epoch = group.epoch(),
            "a kick rotated the meeting secret: earlier invites no longer work"
        );
        self.outputs.push_back(Output::Rekeyed {
            secret,
            previous_dht_key,
        });
    }

    /// `peer` is in the group now (a joiner from the lobby brings its name and addresses).
    fn member_added(&mut self, now: Instant, peer: PeerId) {
        self.mls.queued_adds.remove(&peer);
        if peer == self.local {
            return;
        }
        let (name, addrs) = self
            .knocking
            .remove(&peer)
            .map(|knock| (knock.name, knock.addrs))
            .unwrap_or_default();
        self.add_peer(now, peer, name, addrs);
        let name = self.peer_name(&peer);
        self.emit(MeetingEvent::MemberJoined {
            peer_id: peer,
            name,
        });
    }

    /// `peer`'s leaf left the group. `replaced`: the same person came back with a new leaf
    /// (a rejoin after a restart): only its chat stream starts over. Otherwise it is gone:
    /// our chat no longer waits for it, what we kept about it goes, a kick bans it.
    fn member_removed(&mut self, peer: PeerId, replaced: bool, removals: &[Removal]) {
        self.mls.kicks.remove(&peer);
        if peer == self.local {
            return;
        }
        if replaced {
            let stream = self.rng.next_u64();
            self.chat_outbox.restart_stream(peer, stream);
            return;
        }
        for settled in self.chat_outbox.member_gone(peer) {
            self.report_chat(settled);
        }
        let name = self.peer_name(&peer);
        self.member_left(&peer); // no more heartbeats to a removed member
        self.mls.inboxes.retain(|(sender, _), _| *sender != peer);
        self.mls.states.remove(&peer);
        let reason = reason_of(removals, &peer);
        if reason == LeaveReason::Kicked {
            self.banned.insert(peer);
            self.approved.remove(&peer);
        }
        self.emit(MeetingEvent::MemberLeft {
            peer_id: peer,
            name,
            reason,
        });
    }

    /// Asks for `peer` to be removed (the host, or any member once the host is gone): our
    /// signed statement goes to every member, and whoever commits next — us, if we are
    /// the committer — removes it. Kicking the committer works too: a kicked member is
    /// not the committer.
    pub fn kick(&mut self, now: Instant, peer: PeerId) -> Result<(), GroupError> {
        let Some(group) = &self.mls.group else {
            return Err(GroupError::NotMember);
        };
        if peer == self.local {
            return Err(GroupError::Mls("leave the meeting instead".into()));
        }
        let Some(binding) = group.leaf_binding(&peer) else {
            return Err(GroupError::Mls(format!("{peer} is not a member")));
        };
        let members = group.members();
        if !self.may_kick(&members, self.local) {
            return Err(GroupError::Mls("only the host may remove members".into()));
        }
        let meeting_id = self.keys.meeting_id();
        let signature = StatementSignature(self.mls.me.sign_statement(
            Statement::Kick,
            meeting_id,
            &peer,
            &binding,
        ));
        let evidence = Evidence {
            signer: self.local,
            signature,
        };
        self.mls.kicks.insert(
            peer,
            PendingKick {
                evidence,
                since: now,
            },
        );
        for (_, member) in members {
            if member != self.local && member != peer {
                let request = Request::Kick {
                    meeting_id,
                    peer_id: peer,
                    signature: Some(signature),
                };
                self.send(member, request, Inflight::Other);
            }
        }
        self.maybe_commit(now);
        Ok(())
    }

    /// Kick policy: the host's kicks are honoured; once the host has left, any member's.
    pub(super) fn may_kick(&self, members: &[(u32, PeerId)], requester: PeerId) -> bool {
        match self.host {
            Some(host) if members.iter().any(|(_, p)| *p == host) => requester == host,
            _ => true,
        }
    }

    /// A member's signed request to remove `peer`: kept (whoever commits next carries
    /// it) if the requester may kick and the statement verifies for `peer`'s leaf.
    pub(super) fn on_kick_request(
        &mut self,
        now: Instant,
        from: PeerId,
        peer: PeerId,
        signature: Option<StatementSignature>,
    ) -> Response {
        let Some(group) = &self.mls.group else {
            return Response::NotMember;
        };
        let members = group.members();
        if !members.iter().any(|(_, p)| *p == from) {
            return Response::NotMember;
        }
        let valid = signature.is_some_and(|signature| {
            self.may_kick(&members, from)
                && self.leaf_statement_holds(&from, Statement::Kick, &peer, &signature)
        });
        let Some(signature) = signature.filter(|_| valid) else {
            self.stats.statements_refused += 1;
            info!(requester = %from, "kick refused: not the requester's to make, or not signed for this member");
            return Response::Refused;
        };
        self.mls.kicks.entry(peer).or_insert(PendingKick {
            evidence: Evidence {
                signer: from,
                signature,
            },
            since: now,
        });
        Response::Ack
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
