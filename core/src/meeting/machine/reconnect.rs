//! Telling "everyone else vanished" from "our own network dropped".
//!
//! When every other member falls silent, the lowest live leaf (which is then us) would
//! commit their removal. That is right when they are gone (killed, crashed, cut off), and
//! wrong when *we* are the one cut off: a laptop whose Wi-Fi dropped would fork a group of
//! one, and the others — who removed it in the meantime — would never hear from it again.
//!
//! The driver reports every sign of life from the network ([`Machine::network_heard`]: a
//! ping answered by any peer, relay and DHT nodes included). Once every member has been
//! silent for a whole liveness window (failed sends alone do not decide it), we look at the
//! network: if it has been silent for [`Config::network_silence_for`] too, we are the one cut
//! off: we commit nothing, tell the application ([`MeetingEvent::Reconnecting`]) and keep
//! greeting the members. When one answers, either the group still has us (nothing to do) or
//! it answers `NotMember` (it removed us meanwhile) and we join again with a fresh key
//! package, under the same identity; [`MeetingEvent::Reconnected`] follows once we are back
//! in the group. If the network is back for [`Config::reconnect_grace`] and still no member
//! answers, they are gone after all: the ordinary liveness rule removes them.
//!
//! A machine that never heard of the network (no driver evidence at all, as in a LAN-only
//! setup without relays) keeps the ordinary rule: silence means the others are gone.
//!
//! **Joining again** ([`Machine::rejoin`]): the group went on without us, so we drop our
//! copy of it and join afresh (same identity, fresh key package). At most once per
//! [`Config::rejoin_interval`](super::Config::rejoin_interval), and only on these signs:
//! - a member answers `NotMember` while we are cut off (it removed us meanwhile) — outside
//!   a reconnect the same answer only means it forgot us, and we greet it again;
//! - a member refuses our commit with `NotMember` (its group no longer has us);
//! - verified epoch proofs of a later epoch from most live members
//!   ([`super::epoch_evidence`]). A later epoch number alone — in a heartbeat, a commit, a
//!   group message or a `Nack` — only makes us weigh those proofs: it is unauthenticated,
//!   and one dishonest member must not knock the others out of the group.
//!
//! We are back ([`MeetingEvent::Reconnected`]) only when a member acknowledges our
//! heartbeat (it still has us) or we are in the group again: hearing from a member is not
//! enough, it may have removed us.

use std::time::Instant;

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use tracing::{debug, info, warn};

use super::{Machine, MeetingEvent, Output, Phase};
use crate::media::MediaCommand;

/// What it means that every other member is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Silence {
    /// Some member is alive (or there is nobody else).
    NotAlone,
    /// Too early to tell who is cut off: commit nothing yet.
    Undecided,
    /// The network is silent too: we are the one cut off.
    CutOff,
    /// The network answers: the members are gone.
    TheyAreGone,
}

/// We lost every member and the network with them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reconnect {
    /// When we noticed.
    since: Instant,
    /// Since when the network answers again while no member has (yet).
    network_back: Option<Instant>,
}

impl<R: RngCore + CryptoRng> Machine<R> {
    /// Something on the network answered us now (any peer's ping: a relay, a DHT node, a
    /// member). The driver calls this for every successful round trip.
    pub fn network_heard(&mut self, now: Instant) {
        self.network_heard = Some(now);
    }

    /// Whether we are cut off and trying to reach the members again.
    pub fn is_reconnecting(&self) -> bool {
        self.reconnect.is_some()
    }

    /// Whether the network answered recently enough to vouch for our own connectivity.
    fn network_fresh(&self, now: Instant) -> bool {
        let window = self.config.network_silence_for(self.slowest_rtt());
        self.network_heard.is_some_and(|at| now < at + window)
    }

    /// What the silence of the other members means, if every one of them is silent.
    pub(super) fn silence(&self, now: Instant) -> Silence {
        let Some(group) = &self.mls.group else {
            return Silence::NotAlone;
        };
        let mut latest: Option<Instant> = None;
        for (_, peer) in group.members() {
            if peer == self.local {
                continue;
            }
            if self.is_alive(now, &peer) {
                return Silence::NotAlone;
            }
            let heard = self.peers.get(&peer).map(|p| p.last_heard);
            latest = latest.max(heard);
        }
        let Some(latest) = latest else {
            return Silence::NotAlone; // nobody else in the group
        };
        // Failed sends declare a member dead early; whether *we* are the one cut off can
        // only be told once the network has had a liveness window to answer us.
        if now < latest + self.config.liveness_for(self.slowest_rtt()) {
            return Silence::Undecided;
        }
        if self.network_heard.is_some() && !self.network_fresh(now) {
            Silence::CutOff
        } else {
            Silence::TheyAreGone
        }
    }

    /// Re-evaluates whether we are cut off; called on every timer before commits.
    pub(super) fn update_connectivity(&mut self, now: Instant) {
        if self.phase != Phase::Member {
            return;
        }
        let silence = self.silence(now);
        let network_fresh = self.network_fresh(now);
        match &mut self.reconnect {
            None => {
                if silence == Silence::CutOff {
                    info!("every member and the network fell silent: we are cut off; reconnecting");
                    self.reconnect = Some(Reconnect {
                        since: now,
                        network_back: None,
                    });
                    self.emit(MeetingEvent::Reconnecting);
                }
            }
            Some(reconnect) => {
                // Back only when a member acknowledges our heartbeat (it still has us) or
                // we are in the group again (`install_group`): hearing from a member is not
                // enough, it may have removed us.
                if silence == Silence::NotAlone {
                    return;
                }
                if !network_fresh {
                    reconnect.network_back = None;
                    return;
                }
                let back = *reconnect.network_back.get_or_insert(now);
                if now >= back + self.config.reconnect_grace {
                    info!("the network is back but no member answers: they are gone");
                    self.end_reconnect(now);
                }
            }
        }
    }

    /// We are back in the group (or gave up waiting for the others).
    pub(super) fn end_reconnect(&mut self, now: Instant) {
        if let Some(reconnect) = self.reconnect.take() {
            info!(
                after_ms = (now - reconnect.since).as_millis() as u64,
                "reconnected"
            );
            self.emit(MeetingEvent::Reconnected);
        }
    }

    /// A member acknowledged our heartbeat: it still has us, so if we were cut off, we are
    /// back.
    pub(super) fn heartbeat_acked(&mut self, now: Instant, from: PeerId) {
        self.heard_from(now, from);
        self.end_reconnect(now);
    }

    /// A member answered `NotMember` to a request of ours (other than a commit or an
    /// application message). It is alive. While we are cut off it means the group removed
    /// us meanwhile: we join it again. Otherwise it forgot us (a restart, or it timed us
    /// out): we greet it again.
    pub(super) fn answered_not_member(&mut self, now: Instant, unix_ms: u64, from: PeerId) {
        self.heard_from(now, from);
        if self.reconnect.is_some() {
            info!(peer = %from, "a member no longer has us: joining again");
            self.rejoin(now, unix_ms);
            return;
        }
        let addrs = self
            .peers
            .get(&from)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        self.send_hello(now, unix_ms, from, addrs);
    }

    /// A member refused our commit of `epoch` (already aborted). `NotMember`: its group no
    /// longer has us (we were removed while cut off), so we join again. `Nack` naming a
    /// later epoch: the group may have moved on without us, or the member says so falsely;
    /// only verified epoch proofs decide ([`Machine::consider_catching_up`]).
    pub(super) fn commit_refused(
        &mut self,
        now: Instant,
        unix_ms: u64,
        epoch: u64,
        theirs: Option<u64>,
    ) {
        match theirs {
            None => self.rejoin(now, unix_ms),
            Some(theirs) if theirs > epoch => self.consider_catching_up(now, unix_ms),
            Some(_) => {}
        }
    }

    /// The group went on without us: drop our copy and join again with a fresh key package
    /// — at most once per [`Config::rejoin_interval`](super::Config::rejoin_interval).
    pub(super) fn rejoin(&mut self, now: Instant, unix_ms: u64) {
        if self.phase != Phase::Member {
            return;
        }
        if let Some(last) = self.last_rejoin
            && now < last + self.config.rejoin_interval
        {
            self.stats.rejoins_deferred += 1;
            debug!("joining again was asked for too soon after the last time; not yet");
            return;
        }
        warn!("the group moved on without us; joining again");
        self.drop_group_to_join_again(now);
        self.greet_everyone_afresh(now, unix_ms);
    }

    /// Drops our copy of the group (keys, staged commits, media) and starts joining again;
    /// the greetings go out with the caller's next step.
    pub(super) fn drop_group_to_join_again(&mut self, now: Instant) {
        self.last_rejoin = Some(now);
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
    }
}
