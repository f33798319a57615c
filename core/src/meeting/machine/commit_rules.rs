//! The commit rules (`docs/protocol.md` §6, "Commit rules"): what every receiver checks
//! before it stages a member's commit, so that one dishonest member cannot remove, hide or
//! add anyone on its own word.
//!
//! A commit states its reasons in its MLS authenticated data ([`CommitReasons`], signed
//! with the commit). The receiver checks them against its own copy of the tree and its own
//! view of the meeting:
//!
//! 1. Only adds and removals (no updates, pre-shared keys or extensions).
//! 2. Every added leaf has a well-formed Conclave credential (else it would be a member
//!    nobody sees in the roster), is not banned, is not already a member (unless its old
//!    leaf is replaced in the same commit) and, in a lobby meeting whose host is in the
//!    group, carries the host's signed approval (unless the host commits it).
//! 3. The reasons name exactly the members removed, each once, and each is justified:
//!    - `Left`: the member's signed "I leave" for that very leaf, or its goodbye reached
//!      us;
//!    - `Kicked`: a signed "remove this member" for that leaf, by the host (or by any
//!      member once the host is gone);
//!    - `Replaced`: the same commit adds the same person with a new leaf;
//!    - `TimedOut`: we have not heard from the member within the last heartbeat interval
//!      and round trip (a live member is heard at least that often; an honest committer
//!      waited its whole liveness window, ≥ 3 s, and views differ by up to a heartbeat
//!      interval and the latency between members);
//!    - `Withheld`: we too see a change overdue for at least half the takeover window (see
//!      below).
//!
//!    A removal of ourselves as `TimedOut` is accepted (we may be the one cut off, and then
//!    we join again) unless the committer answered one of our requests within that window:
//!    then it heard us.
//! 4. Its sender is the committer: every member with a lower leaf is removed by this very
//!    commit (the takeover rule: a lower leaf that is gone, kicked, or withholding is
//!    replaced by the next one, which must remove it).
//!
//! **Withholding.** A change is *due* from the moment we know it: a kick we hold, a
//! goodbye, a member we count as gone. When the oldest due change has waited for
//! [`Config::takeover_after_for`](super::Config::takeover_after_for) and the committer is
//! another member that is still alive, that committer is withholding: we no longer count it
//! as committer, and if that makes us the committer we remove it (`Withheld`) together with
//! what it withheld.

use std::collections::BTreeSet;
use std::time::Instant;

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use tracing::warn;

use super::Machine;
use crate::group::CommitContents;
use crate::group::committer::committer;
use crate::group::statements::{self, Statement};
use crate::meeting::{AlertKind, CommitViolation};
use crate::proto::control::{CommitReasons, Removal, RemovalReason, StatementSignature};

impl<R: RngCore + CryptoRng> Machine<R> {
    /// Whether `from`'s commit, which changes `contents` for `reasons`, follows the rules
    /// (checked against our group before the commit).
    pub(super) fn check_commit(
        &self,
        now: Instant,
        from: PeerId,
        contents: &CommitContents,
        reasons: &CommitReasons,
    ) -> Result<(), CommitViolation> {
        let Some(group) = &self.mls.group else {
            return Err(CommitViolation::NotCommitter);
        };
        if contents.other_proposals > 0 {
            return Err(CommitViolation::UnexpectedProposal);
        }
        let mut added = BTreeSet::new();
        for peer in &contents.added {
            let Some(peer) = peer else {
                return Err(CommitViolation::MalformedCredential);
            };
            if !added.insert(*peer) {
                return Err(CommitViolation::UnjustifiedAdd);
            }
        }
        // The reasons name exactly the members removed, each once.
        let removed: BTreeSet<PeerId> = contents.removed.iter().filter_map(|r| r.peer).collect();
        let named: BTreeSet<PeerId> = reasons.removals.iter().map(|r| r.peer_id).collect();
        if named.len() != reasons.removals.len() || named != removed {
            return Err(CommitViolation::ReasonsMismatch);
        }
        for removal in &reasons.removals {
            if !self.removal_justified(now, from, removal, &added) {
                return Err(CommitViolation::UnjustifiedRemoval);
            }
        }
        for peer in &added {
            if !self.add_justified(from, peer, &named, reasons) {
                return Err(CommitViolation::UnjustifiedAdd);
            }
        }
        // The committer: nobody with a lower leaf stays.
        let sender_leaf = group.leaf_of(&from).ok_or(CommitViolation::NotCommitter)?;
        let lower_stays = group
            .members()
            .iter()
            .any(|(leaf, peer)| *leaf < sender_leaf && !named.contains(peer));
        if lower_stays {
            return Err(CommitViolation::NotCommitter);
        }
        Ok(())
    }

    /// Whether `signature` is `signer`'s `statement` about `subject`'s current leaf in our
    /// group ([`statements`]).
    pub(super) fn leaf_statement_holds(
        &self,
        signer: &PeerId,
        statement: Statement,
        subject: &PeerId,
        signature: &StatementSignature,
    ) -> bool {
        self.mls
            .group
            .as_ref()
            .and_then(|group| group.leaf_binding(subject))
            .is_some_and(|binding| {
                statements::verify(
                    signer,
                    statement,
                    self.keys.meeting_id(),
                    subject,
                    &binding,
                    &signature.0,
                )
            })
    }

    /// Whether we can justify `removal` (of a leaf in our group, before the commit) in
    /// `committer`'s commit that adds `added`.
    fn removal_justified(
        &self,
        now: Instant,
        committer: PeerId,
        removal: &Removal,
        added: &BTreeSet<PeerId>,
    ) -> bool {
        let peer = removal.peer_id;
        let signed = |statement: Statement, may_sign: &dyn Fn(&PeerId) -> bool| {
            removal.evidence.is_some_and(|evidence| {
                may_sign(&evidence.signer)
                    && self.leaf_statement_holds(
                        &evidence.signer,
                        statement,
                        &peer,
                        &evidence.signature,
                    )
            })
        };
        match removal.reason {
            RemovalReason::Left => {
                signed(Statement::Leave, &|signer| *signer == peer)
                    || (peer != self.local && self.peers.get(&peer).is_some_and(|p| p.said_bye))
            }
            RemovalReason::Kicked => {
                let members = self
                    .mls
                    .group
                    .as_ref()
                    .map(|g| g.members())
                    .unwrap_or_default();
                signed(Statement::Kick, &|signer| self.may_kick(&members, *signer))
            }
            RemovalReason::Replaced => added.contains(&peer),
            RemovalReason::TimedOut => {
                // A member that is alive is heard at least every heartbeat interval (more
                // often with media), give or take a round trip; an honest committer waited
                // the whole liveness window (≥ 3 s), and may have heard the member up to a
                // heartbeat interval before we last did (heartbeats only, where we had media).
                if peer == self.local {
                    // We cannot tell whether we are the one cut off; but a committer that
                    // answered us just now has heard us.
                    let window = self.config.heartbeat_interval + self.rtt_of(&committer);
                    let answered = self.peers.get(&committer).and_then(|p| p.answered_us);
                    answered.is_none_or(|at| now >= at + window)
                } else {
                    let window = self.config.heartbeat_interval + self.rtt_of(&peer);
                    !self.heard_within(now, &peer, window)
                }
            }
            RemovalReason::Withheld => self.overdue_since(now).is_some_and(|since| {
                now >= since + self.config.takeover_after_for(self.slowest_rtt()) / 2
            }),
        }
    }

    /// Whether `from` may add `peer` in a commit that removes `removed`.
    fn add_justified(
        &self,
        from: PeerId,
        peer: &PeerId,
        removed: &BTreeSet<PeerId>,
        reasons: &CommitReasons,
    ) -> bool {
        if self.banned.contains(peer) {
            return false;
        }
        let rejoining = self.is_group_member(peer);
        if rejoining && !removed.contains(peer) {
            return false; // a second leaf for the same person
        }
        let host_in_group = self.host.is_some_and(|h| self.is_group_member(&h));
        if !self.lobby || rejoining || !host_in_group || self.host == Some(from) {
            return true;
        }
        reasons
            .approvals
            .iter()
            .any(|a| a.joiner == *peer && self.is_host_approval(peer, &a.signature))
    }

    /// Whether we heard from `peer` (any request, heartbeat or media) within `window`.
    fn heard_within(&self, now: Instant, peer: &PeerId, window: std::time::Duration) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| now < p.last_heard + window)
    }

    /// Since when the oldest change we know of has been due: a kick we hold, a member's
    /// goodbye, a member we count as gone.
    pub(super) fn overdue_since(&self, now: Instant) -> Option<Instant> {
        let group = self.mls.group.as_ref()?;
        group
            .members()
            .iter()
            .filter(|(_, peer)| *peer != self.local)
            .filter_map(|(_, peer)| {
                let kick = self.mls.kicks.get(peer).map(|k| k.since);
                let known = self.peers.get(peer);
                let bye = known.and_then(|p| p.bye_at);
                let gone = (!self.is_alive(now, peer)).then(|| {
                    known.map_or(now, |p| {
                        p.last_heard + self.config.liveness_for(self.rtt_of(peer))
                    })
                });
                [kick, bye, gone].into_iter().flatten().min()
            })
            .min()
    }

    /// The committer by the plain rule (lowest online leaf, kicked members aside) when it
    /// is another member that left a due change uncommitted for the takeover window.
    pub(super) fn withholding(&self, now: Instant) -> Option<PeerId> {
        let since = self.overdue_since(now)?;
        if now < since + self.config.takeover_after_for(self.slowest_rtt()) {
            return None;
        }
        self.committer_passing_over(now, None)
            .filter(|c| *c != self.local)
    }

    /// The committer as we see it now: the lowest online leaf among members not being
    /// kicked, a withholding committer aside.
    pub(super) fn current_committer(&self, now: Instant) -> Option<PeerId> {
        self.committer_passing_over(now, self.withholding(now))
    }

    /// The lowest online leaf among the members not being kicked, `passed_over` aside.
    fn committer_passing_over(&self, now: Instant, passed_over: Option<PeerId>) -> Option<PeerId> {
        let members: Vec<(u32, PeerId)> = self
            .mls
            .group
            .as_ref()?
            .members()
            .into_iter()
            .filter(|(_, p)| !self.mls.kicks.contains_key(p) && Some(*p) != passed_over)
            .collect();
        committer(&members, self.local, |p| self.is_online_member(now, p))
    }

    /// `from`'s commit of `epoch` broke `violation`: refused, counted, and the application
    /// is alerted (once per member and epoch).
    pub(super) fn commit_broke_rules(
        &mut self,
        from: PeerId,
        epoch: u64,
        violation: CommitViolation,
    ) {
        self.stats.commits_rejected += 1;
        warn!(
            peer = %from,
            epoch,
            rule = violation.as_str(),
            "commit refused: it breaks the commit rules"
        );
        self.raise_alert(AlertKind::Commit(violation), from, epoch);
    }
}
