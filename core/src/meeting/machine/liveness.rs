//! Liveness (`docs/protocol.md` §5): the peers we know, heartbeats, round-trip times, and
//! who counts as alive.
//!
//! - Members send every other known peer a `Heartbeat` (our peer list, epoch and epoch
//!   proof, see [`super::epoch_evidence`]) every
//!   [`Config::heartbeat_interval`](super::Config::heartbeat_interval); a joiner keeps quiet.
//! - A peer is alive while it has not said `Bye`, fewer than two sends to it failed in a
//!   row, and it was heard from (a heartbeat, any request, or its media frames:
//!   [`Machine::heard_over_media`]) within the liveness window, which scales with its
//!   measured round-trip time ([`Config::liveness_for`](super::Config::liveness_for)).
//!   Silence decides, not failed heartbeats: a network that drops for a moment must not
//!   remove anyone.
//! - Round-trip times come from the driver ([`Machine::set_rtt`]); a member's entry goes
//!   when it leaves the group. Peers that never made it into the group and fell silent are
//!   forgotten.
//!
//! What the silence of *every* member means is [`super::reconnect`]'s question.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::{CryptoRng, RngCore};
use tracing::info;

use super::{Inflight, Machine, Peer, Phase};
use crate::group::MeetingGroup;
use crate::group::statements::Statement;
use crate::proto::control::{EpochProof, MAX_MEMBERS, MemberInfo, Request, StatementSignature};

/// Most peers whose round-trip time is remembered.
const MAX_TRACKED_RTTS: usize = 1024;

impl<R: RngCore + CryptoRng> Machine<R> {
    /// The measured round-trip time to `peer`, as last reported by the driver (its
    /// connections' pings); the timers that wait for that peer scale with it.
    pub fn set_rtt(&mut self, peer: PeerId, rtt: Duration) {
        if self.rtts.len() < MAX_TRACKED_RTTS || self.rtts.contains_key(&peer) {
            self.rtts.insert(peer, rtt);
        }
    }

    /// The round-trip time to `peer` (zero until measured: the configured floors apply).
    pub(super) fn rtt_of(&self, peer: &PeerId) -> Duration {
        self.rtts.get(peer).copied().unwrap_or_default()
    }

    /// The longest round-trip time to any member.
    pub(super) fn slowest_rtt(&self) -> Duration {
        self.peers
            .keys()
            .map(|p| self.rtt_of(p))
            .max()
            .unwrap_or_default()
    }

    /// Heartbeats to every peer that has not said goodbye, when one is due (members only).
    pub(super) fn send_heartbeats(&mut self, now: Instant) {
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + self.config.heartbeat_interval;
        if self.phase != Phase::Member {
            return;
        }
        let list = self.peer_list();
        let recipients: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.said_bye)
            .map(|(id, _)| *id)
            .collect();
        let epoch = self.mls.group.as_ref().map(MeetingGroup::epoch);
        let proof = self.own_epoch_proof();
        for peer in recipients {
            let request = Request::Heartbeat {
                meeting_id: self.keys.meeting_id(),
                members: list.clone(),
                epoch,
                proof: proof.clone(),
            };
            self.send(peer, request, Inflight::Heartbeat);
        }
    }

    /// A heartbeat from `from`, carrying its peer list and its epoch with a proof
    /// ([`super::epoch_evidence`]). Whether it comes from a peer we know (otherwise it is a stranger: a member we removed while it was cut off
    /// learns it from the `NotMember` answer, and joins again).
    pub(super) fn on_heartbeat(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        members: Vec<MemberInfo>,
        epoch: Option<u64>,
        proof: Option<EpochProof>,
    ) -> bool {
        if self.peers.get(&from).is_none_or(|p| p.said_bye) {
            return false;
        }
        self.heard_from(now, from);
        // Only members in the group send heartbeats: a key package still queued for this
        // peer is stale (a late hello) and must not replace its leaf.
        self.forget_queued_package(&from);
        self.on_epoch_proof(now, unix_ms, from, epoch, proof);
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
        true
    }

    /// Frames from `peer` arrived over its media connection (opened with its key, on the
    /// connection whose DTLS fingerprint it signed): it is reachable, as after a heartbeat,
    /// and so is the network. A control path that stalls (a transport backing off after a
    /// blackout, a relay circuit going down) then removes nobody whose media still flows.
    /// Only a member of our group counts; one that said goodbye stays gone.
    pub fn heard_over_media(&mut self, now: Instant, peer: PeerId) {
        if !self.is_group_member(&peer) {
            return;
        }
        if self.peers.get(&peer).is_some_and(|p| !p.said_bye) {
            self.heard_from(now, peer);
            self.network_heard(now);
        }
    }

    /// `from` said goodbye (a member, or a joiner waiting in the lobby), with its signed
    /// "I leave" if it is a member. Whether it was one we know.
    pub(super) fn on_bye(
        &mut self,
        now: Instant,
        from: PeerId,
        leave: Option<StatementSignature>,
    ) -> bool {
        let knocked = self.leave_lobby(from);
        if knocked {
            info!(peer = %from, "lobby joiner said goodbye");
        }
        // Kept only if it verifies for its current leaf: the commit removing it carries it.
        let leave = leave.filter(|signature| {
            self.leaf_statement_holds(&from, Statement::Leave, &from, signature)
        });
        match self.peers.get_mut(&from) {
            Some(peer) => {
                info!(peer = %from, signed = leave.is_some(), "peer said goodbye");
                peer.said_bye = true;
                peer.leave = leave;
                peer.bye_at.get_or_insert(now);
                true
            }
            None => knocked,
        }
    }

    /// Peers that never made it into the group and went silent are forgotten.
    pub(super) fn forget_silent_strangers(&mut self, now: Instant) {
        let members: BTreeSet<PeerId> = self
            .mls
            .group
            .as_ref()
            .map(|g| g.members().into_iter().map(|(_, p)| p).collect())
            .unwrap_or_default();
        let timeout = self.config.liveness_timeout * 3;
        let rtts = &mut self.rtts;
        self.peers.retain(|peer, info| {
            let keep =
                members.contains(peer) || (!info.said_bye && now < info.last_heard + timeout);
            if !keep {
                rtts.remove(peer);
            }
            keep
        });
    }

    /// `peer` left the group (said goodbye, timed out, or was removed): no more heartbeats
    /// to it, and its round-trip time is forgotten.
    pub(super) fn member_left(&mut self, peer: &PeerId) {
        if let Some(known) = self.peers.get_mut(peer) {
            known.said_bye = true;
        }
        self.rtts.remove(peer);
    }

    pub(super) fn is_alive(&self, now: Instant, peer: &PeerId) -> bool {
        let window = self.config.liveness_for(self.rtt_of(peer));
        self.peers
            .get(peer)
            .is_some_and(|p| !p.said_bye && p.failures < 2 && now < p.last_heard + window)
    }

    /// Whether `peer` has a leaf in our group.
    pub(super) fn is_group_member(&self, peer: &PeerId) -> bool {
        self.mls
            .group
            .as_ref()
            .is_some_and(|g| g.leaf_of(peer).is_some())
    }

    pub(super) fn heard_from(&mut self, now: Instant, peer: PeerId) {
        if let Some(known) = self.peers.get_mut(&peer) {
            known.last_heard = now;
        }
    }

    /// `peer` is known (admitted, or a member): alive as of `now`; a name or addresses,
    /// when given, replace what we knew.
    pub(super) fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        name: String,
        addrs: Vec<Multiaddr>,
    ) {
        self.pending.remove(&peer);
        let entry = self.peers.entry(peer).or_insert_with(|| Peer {
            name: String::new(),
            addrs: Vec::new(),
            last_heard: now,
            failures: 0,
            said_bye: false,
            leave: None,
            bye_at: None,
            answered_us: None,
            claim: None,
        });
        entry.last_heard = now;
        entry.failures = 0;
        entry.said_bye = false;
        entry.leave = None;
        entry.bye_at = None;
        if !name.is_empty() {
            entry.name = name;
        }
        if !addrs.is_empty() {
            entry.addrs = addrs;
        }
    }

    pub(super) fn peer_name(&self, peer: &PeerId) -> String {
        if *peer == self.local {
            return self.name.clone();
        }
        self.peers
            .get(peer)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    /// Our own entry of a peer list.
    pub(super) fn own_info(&self) -> MemberInfo {
        MemberInfo {
            peer_id: self.local,
            name: self.name.clone(),
            addrs: self.local_addrs.clone(),
        }
    }

    /// Us and every peer that has not said goodbye, as shared in welcomes and heartbeats.
    pub(super) fn peer_list(&self) -> Vec<MemberInfo> {
        std::iter::once(self.own_info())
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
}
