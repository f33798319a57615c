//! Entering the group (`docs/protocol.md` §6): key packages and the MLS welcome.
//!
//! - A joiner greets members with its key package (one per join attempt,
//!   [`Machine::joining_key_package`]); a member that admits it queues the package for the
//!   committer once per distinct package ([`Machine::queue_add`]), at most
//!   [`Config::max_members`](super::Config::max_members) joiners at once.
//! - The committer's MLS welcome is taken only from a peer that proved the meeting secret
//!   (one whose admission `Welcome` is still on its way is kept until it arrives), and only
//!   for this meeting's group with both the sender and us in it.
//! - In the group ([`Machine::install_group`]): the application hears `Joined` and each
//!   member, the media plane gets the epoch's keys, and our state is announced.

use std::time::Instant;

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::{Machine, MeetingEvent, Output, Phase};
use crate::group::MeetingGroup;
use crate::group::mls::JoinerPackage;
use crate::media::{EpochSecret, MediaCommand};
use crate::proto::control::Response;

/// Most key-package digests remembered (each package is committed at most once).
const MAX_SEEN_PACKAGES: usize = 256;

impl<R: RngCore + CryptoRng> Machine<R> {
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

    /// Drops a key package queued for `peer` (it is a live member after all).
    pub(super) fn forget_queued_package(&mut self, peer: &PeerId) {
        if self.is_group_member(peer) {
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

    /// Hands the current epoch's media secret to the media plane (`replaced`: members that
    /// rejoined with a new leaf in this epoch).
    pub(super) fn refresh_media_keys(&mut self, now: Instant, replaced: Vec<PeerId>) {
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

    /// The committer's MLS welcome, while we are joining.
    pub(super) fn on_mls_welcome(
        &mut self,
        now: Instant,
        from: PeerId,
        welcome: &[u8],
        banned: Vec<PeerId>,
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
                self.mls.deferred_welcome = Some((from, welcome.to_vec(), banned));
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
                // The members kicked before we came: refused by us too.
                self.banned.extend(banned);
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
}
