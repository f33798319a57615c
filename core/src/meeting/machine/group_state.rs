//! The MLS side of the machine's state ([`GroupState`]): the group, our key package, the
//! joiners queued for the committer, the commit in flight either way, and what the
//! application messages need (sequence numbers, retries, receive buffers, members' state).
//!
//! Plain data with bounded queues; the rules that use it live in [`super::commit`],
//! [`super::welcome`] and [`super::application`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use libp2p::PeerId;

use super::application::{AppRetry, Inbox};
use super::commit::{Incoming, Outgoing};
use crate::group::mls::JoinerPackage;
use crate::group::{MediaKeys, MeetingGroup, MlsIdentity, Provider};
use crate::proto::control::Evidence;

/// Most application messages (media signals) and state announcements waiting for a retry.
const MAX_APP_RETRIES_QUEUED: usize = 1024;

/// A removal the host asked for, waiting for a commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingKick {
    pub(super) evidence: Evidence,
    pub(super) since: Instant,
}

/// MLS-related state of the machine.
#[derive(Debug)]
pub(super) struct GroupState {
    pub(super) me: MlsIdentity,
    pub(super) provider: Provider,
    pub(super) group: Option<MeetingGroup>,
    pub(super) media: MediaKeys,
    /// Our key package while joining (one per join attempt).
    pub(super) key_package: Option<Vec<u8>>,
    /// Joiners' key packages waiting for the committer.
    pub(super) queued_adds: BTreeMap<PeerId, JoinerPackage>,
    /// Digests of the key packages queued so far (each is committed at most once).
    pub(super) seen_packages: VecDeque<[u8; 32]>,
    /// An MLS welcome that arrived before its sender was admitted.
    pub(super) deferred_welcome: Option<(PeerId, Vec<u8>, Vec<PeerId>)>,
    /// Members to remove at the host's request: its signed statement, and since when we
    /// know it (a kick left uncommitted too long is overdue: [`super::commit_rules`]).
    pub(super) kicks: BTreeMap<PeerId, PendingKick>,
    /// Our commit, waiting for acknowledgements.
    pub(super) outgoing: Option<Outgoing>,
    /// A member's commit we staged, waiting for its confirmation.
    pub(super) incoming: Option<Incoming>,
    /// No commit of ours before this (after an aborted one).
    pub(super) backoff_until: Option<Instant>,
    pub(super) chat_session: Option<u64>,
    pub(super) chat_seq: u64,
    /// Media signals to send again.
    pub(super) app_retries: VecDeque<AppRetry>,
    /// Chat received, per (sender, session).
    pub(super) inboxes: HashMap<(PeerId, u64), Inbox>,
    /// Our announced state.
    pub(super) muted: bool,
    pub(super) state_seq: u64,
    /// State deliveries to retry: when, to whom, which attempt comes next.
    pub(super) state_retries: VecDeque<(Instant, PeerId, u32)>,
    /// The newest state heard from each member: (session, seq, muted).
    pub(super) states: HashMap<PeerId, (u64, u64, bool)>,
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
            kicks: BTreeMap::new(),
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

    pub(super) fn schedule_application_retry(&mut self, retry: AppRetry) {
        if self.app_retries.len() < MAX_APP_RETRIES_QUEUED {
            self.app_retries.push_back(retry);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [
            self.outgoing.as_ref().map(|o| o.deadline),
            self.incoming.as_ref().map(|i| i.expires),
            self.app_retries.iter().map(|r| r.at).min(),
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
