//! Epoch proofs in heartbeats (`docs/protocol.md` §5, "Epoch proofs"): fork detection, and
//! the evidence a member needs before it drops its group and joins again.
//!
//! Every member's heartbeat carries its epoch and a proof: the hash of that epoch's MLS
//! authenticator, signed with its leaf key ([`crate::group::epoch_proof`]). A receiver
//! verifies the signature with the sender's leaf key in *its own* tree; a proof that does
//! not verify (or is missing) is counted and ignored.
//!
//! - **Forks.** A verified proof at our epoch with another authenticator hash means the
//!   sender and we hold different groups under the same epoch number: someone sent
//!   different commits to different members. We raise [`MeetingEvent::Alert`] with
//!   [`AlertKind::Fork`], at most once per (peer, epoch); both sides of the fork see each
//!   other's heartbeats, so both raise it within one heartbeat interval.
//! - **Joining again only on evidence.** An epoch number is just a number: a later one in a
//!   `Commit`, a group message, a `Nack`, or an unverified heartbeat never makes us drop
//!   our group. We join again ([`Machine::rejoin`]) only when verified heartbeats of a
//!   later epoch come from a strict majority of the members we count alive (so one
//!   dishonest member among honest ones at our epoch cannot reset us; alone with one other
//!   member, that member is the majority), nothing we staged would take us there, and the
//!   last rejoin is at least [`Config::rejoin_interval`](super::Config::rejoin_interval)
//!   ago.

use std::time::Instant;

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use tracing::{info, warn};

use super::{Machine, MeetingEvent, Phase};
use crate::meeting::AlertKind;
use crate::proto::control::EpochProof;

/// Most (peer, epoch) pairs remembered as already alerted.
const MAX_ALERTS_REMEMBERED: usize = 1024;

/// A member's verified epoch, and when it told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Claim {
    pub(super) epoch: u64,
    pub(super) at: Instant,
}

impl<R: RngCore + CryptoRng> Machine<R> {
    /// Our proof of the current epoch, for our heartbeats (none outside the group).
    pub(super) fn own_epoch_proof(&self) -> Option<EpochProof> {
        let group = self.mls.group.as_ref()?;
        let (authenticator_hash, signature) = group.epoch_proof(&self.mls.me, self.meeting_id());
        Some(EpochProof {
            authenticator_hash,
            signature,
        })
    }

    /// A heartbeat from member `from` stated `epoch` with `proof`: verify it, compare it
    /// with ours (fork), remember it as a claim, and join again if the claims say so.
    pub(super) fn on_epoch_proof(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        epoch: Option<u64>,
        proof: Option<EpochProof>,
    ) {
        let Some(group) = &self.mls.group else { return };
        if group.leaf_of(&from).is_none() {
            return; // not a member of our group: its claims mean nothing to us
        }
        let (Some(epoch), Some(proof)) = (epoch, proof) else {
            self.stats.epoch_proofs_missing += 1;
            return;
        };
        let meeting_id = self.meeting_id();
        if !group.verify_epoch_proof(
            &from,
            meeting_id,
            epoch,
            &proof.authenticator_hash,
            &proof.signature,
        ) {
            self.stats.epoch_proofs_invalid += 1;
            warn!(peer = %from, epoch, "heartbeat with an epoch proof that does not verify");
            return;
        }
        let ours = group.epoch();
        if epoch == ours && proof.authenticator_hash != group.authenticator_hash(meeting_id) {
            self.fork_detected(from, epoch);
        }
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.claim = Some(Claim { epoch, at: now });
        }
        if epoch > ours {
            self.consider_catching_up(now, unix_ms);
        }
    }

    /// `from` proved a different group at our epoch number: alert, once per (peer, epoch).
    fn fork_detected(&mut self, from: PeerId, epoch: u64) {
        if self.raise_alert(AlertKind::Fork, from, epoch) {
            self.stats.forks_detected += 1;
            warn!(peer = %from, epoch, "fork: a member holds another group at our epoch");
        }
    }

    /// Tells the application that `peer` misbehaved at `epoch`, once per (kind, peer,
    /// epoch). Whether this one was new.
    pub(super) fn raise_alert(&mut self, kind: AlertKind, peer: PeerId, epoch: u64) -> bool {
        if self.alerted.contains(&(kind, peer, epoch)) {
            return false;
        }
        if self.alerted.len() >= MAX_ALERTS_REMEMBERED {
            self.alerted.clear();
        }
        self.alerted.insert((kind, peer, epoch));
        self.emit(MeetingEvent::Alert {
            kind,
            peer_id: peer,
            epoch,
        });
        true
    }

    /// Alerts of epochs before `epoch` can no longer repeat: forget them.
    pub(super) fn forget_alerts_before(&mut self, epoch: u64) {
        self.alerted.retain(|(_, _, e)| *e >= epoch);
    }

    /// Whether verified heartbeats of a later epoch than ours come from a strict majority
    /// of the other members we count alive (those claiming it included).
    pub(super) fn later_epoch_proven(&self, now: Instant) -> bool {
        let Some(group) = &self.mls.group else {
            return false;
        };
        let ours = group.epoch();
        let (mut alive, mut ahead) = (0usize, 0usize);
        for (_, peer) in group.members() {
            if peer == self.local || !self.is_alive(now, &peer) {
                continue;
            }
            alive += 1;
            let window = self.config.liveness_for(self.rtt_of(&peer));
            let claim = self.peers.get(&peer).and_then(|p| p.claim);
            if claim.is_some_and(|c| c.epoch > ours && now < c.at + window) {
                ahead += 1;
            }
        }
        ahead > 0 && ahead * 2 > alive
    }

    /// Something suggests the group is past our epoch (a verified heartbeat, a commit or
    /// group message of a later epoch, a `Nack`): join again only if the verified claims
    /// prove it, nothing we staged would take us there, and the rate limit allows.
    pub(super) fn consider_catching_up(&mut self, now: Instant, unix_ms: u64) {
        if self.phase != Phase::Member || self.mls.incoming.is_some() || self.mls.outgoing.is_some()
        {
            return;
        }
        if !self.later_epoch_proven(now) {
            self.stats.epoch_claims_unproven += 1;
            return;
        }
        let ours = self.mls.group.as_ref().map(|g| g.epoch());
        info!(
            ?ours,
            "most members proved a later epoch: we missed a confirmation"
        );
        self.rejoin(now, unix_ms);
    }
}
