//! Application messages over the group (`docs/protocol.md` §6 rules 8–9, §7): chat, media
//! signals and the members' muted state, each an MLS application message (CBOR
//! [`AppMessage`]) sent to one member in a `Group` request.
//!
//! - **Chat**: our lines go through the [`ChatOutbox`](super::chat::ChatOutbox) (a window
//!   and retries per member until acknowledged); received lines are delivered per
//!   (sender, session) in order, exactly once, with a bounded reorder buffer and a gap
//!   skipped after [`Config::chat_give_up`](super::Config::chat_give_up).
//! - **Signals** (SDP for the media plane): retried like chat lines, without the window,
//!   up to [`Config::chat_attempts`](super::Config::chat_attempts) attempts.
//! - **State**: a member sends its muted flag (with a per-session sequence number) to every
//!   member when it changes, and again to everyone after every epoch change and when it
//!   enters the group, so that joiners learn the current state. Receivers keep the newest
//!   state per member and report a change only. Failed deliveries are retried (with the
//!   state current at the retry) a bounded number of times, [`Config::chat_retry`] apart.
//!
//! Every retry that backs off uses [`Backoff`] from [`Config::chat_retry`] doubling to
//! [`RETRY_CAP`], with equal jitter; each attempt is encrypted afresh in the epoch of the
//! moment. A `Nack` (the member is an epoch behind, or the message fell outside the
//! ratchet window) or `NotMember` (a joiner still on its way in) is a failed attempt.
//!
//! [`Config::chat_retry`]: super::Config::chat_retry

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::chat::{RETRY_CAP, Settled};
use super::{Inflight, Machine, Output, Phase};
use crate::backoff::Backoff;
use crate::group::GroupError;
use crate::group::mls::Received;
use crate::media::MediaCommand;
use crate::meeting::MeetingEvent;
use crate::proto::control::{Request, Response};
use crate::proto::to_cbor;

/// Most out-of-order chat messages buffered per sender.
const MAX_REORDER: usize = 64;
/// Longest chat text, in bytes.
pub(crate) const MAX_CHAT_LEN: usize = 4096;

/// Application payloads inside MLS application messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AppMessage {
    /// Media signalling (SDP) for one member: `to` is its peer id (bytes).
    Signal { to: Vec<u8>, payload: Vec<u8> },
    /// A chat line: `session` is the sender's random stream id for this recipient, `seq`
    /// counts from 1 within it without gaps.
    Chat {
        session: u64,
        seq: u64,
        unix_ms: u64,
        text: String,
        /// The line's identity, the same when its sender sends it again after a restart
        /// (0 from a sender that names none).
        #[serde(default)]
        id: u64,
    },
    /// The sender's state: `seq` counts from 1 within `session`; newer replaces older.
    State { session: u64, seq: u64, muted: bool },
}

impl AppMessage {
    /// The wire form (CBOR).
    pub(crate) fn encode(&self) -> Vec<u8> {
        to_cbor(self)
    }

    /// Parses and checks the wire form: `None` if malformed or if a chat line is longer
    /// than [`MAX_CHAT_LEN`].
    pub(crate) fn decode(data: &[u8]) -> Option<Self> {
        let message = ciborium::from_reader::<Self, _>(data).ok()?;
        match &message {
            AppMessage::Chat { text, .. } if text.len() > MAX_CHAT_LEN => None,
            _ => Some(message),
        }
    }
}

/// Chat received from one sender in one session.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    delivered: u64,
    buffer: BTreeMap<u64, InboundLine>,
    /// When to stop waiting for the missing line and skip the gap.
    pub(super) gap_since: Option<Instant>,
}

/// A chat line taken from the group, waiting for its turn in its sender's stream.
#[derive(Debug)]
struct InboundLine {
    unix_ms: u64,
    id: u64,
    text: String,
}

/// A media signal to send again.
#[derive(Debug)]
pub(super) struct AppRetry {
    pub(super) at: Instant,
    to: PeerId,
    payload: Vec<u8>,
    /// The attempt this will be.
    attempt: u32,
    backoff: Backoff,
}

impl<R: RngCore + CryptoRng> Machine<R> {
    /// The back-off of one retried delivery (a chat line to one member, a signal).
    pub(super) fn retry_backoff(&self) -> Backoff {
        Backoff::new(self.config.chat_retry, RETRY_CAP)
    }

    /// Sends an opaque media signalling payload (SDP) to `to`, inside the MLS group.
    pub fn send_signal(&mut self, to: PeerId, payload: Vec<u8>) -> Result<(), GroupError> {
        let Some(group) = self.mls.group.as_ref() else {
            return Err(GroupError::NotMember);
        };
        if group.leaf_of(&to).is_none() {
            return Err(GroupError::Mls(format!("{to} is not a member")));
        }
        let data = AppMessage::Signal {
            to: to.to_bytes(),
            payload,
        }
        .encode();
        // Retried like chat: the first offer to a joiner often arrives before its Welcome.
        let request = self.group_request(&data)?;
        let backoff = self.retry_backoff();
        self.send(
            to,
            request,
            Inflight::Application {
                payload: data,
                attempt: 1,
                backoff,
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

    /// An MLS message of the group from `from`: a chat line, a state announcement or a
    /// media signal for us (a commit here, or a message of another epoch, is `Nack`ed).
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
                match AppMessage::decode(&data) {
                    Some(AppMessage::Chat {
                        session,
                        seq,
                        unix_ms,
                        text,
                        id,
                    }) => {
                        let line = InboundLine { unix_ms, id, text };
                        self.receive_chat(now, from, session, seq, line);
                    }
                    Some(AppMessage::State {
                        session,
                        seq,
                        muted,
                    }) => self.receive_state(from, session, seq, muted),
                    Some(AppMessage::Signal { to, payload }) if to == self.local.to_bytes() => {
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
                self.consider_catching_up(now, unix_ms);
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
    pub(super) fn announce_state(&mut self) {
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
        let payload = message.encode();
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
        line: InboundLine,
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
        inbox.buffer.insert(seq, line);
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
            if let Some(line) = inbox.buffer.remove(&next) {
                inbox.delivered = next;
                ready.push(line);
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
        for line in ready {
            if !self.seen_lines.first_time(from, line.id) {
                debug!(peer = %from, "a chat line already taken, sent again after a restart");
                continue;
            }
            self.emit(MeetingEvent::Chat {
                from,
                name: name.clone(),
                text: line.text,
                unix_ms: line.unix_ms,
            });
        }
    }

    /// Sends a chat line to every member: it is reported at once
    /// ([`MeetingEvent::ChatSent`]), then retried to each member until acknowledged
    /// (`docs/protocol.md` §6 rule 8). Returns its number. A line over 4,096 bytes
    /// (`MAX_CHAT_LEN`) is refused whole, never cut.
    pub fn send_chat(&mut self, now: Instant, unix_ms: u64, text: &str) -> Result<u64, GroupError> {
        self.check_chat(text)?;
        let id = self.rng.next_u64().max(1);
        Ok(self.queue_chat(now, id, unix_ms, text, false))
    }

    /// Sends again a line we wrote before a restart (`id`, `unix_ms` and `text` as then,
    /// kept by the runtime in the store) that not every member acknowledged: it is
    /// reported as a resumed [`MeetingEvent::ChatSent`], and receivers that already have it
    /// do not take it twice. Returns its number in this session.
    pub fn resume_chat(
        &mut self,
        now: Instant,
        id: u64,
        unix_ms: u64,
        text: &str,
    ) -> Result<u64, GroupError> {
        self.check_chat(text)?;
        Ok(self.queue_chat(now, id, unix_ms, text, true))
    }

    /// Whether a line of `text` can be sent now: we are a member, it is at most 4,096 bytes
    /// (refused whole, never cut), and the outbox has room.
    fn check_chat(&self, text: &str) -> Result<(), GroupError> {
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
        Ok(())
    }

    /// Numbers a line, reports it and puts it in the outbox for every member.
    fn queue_chat(
        &mut self,
        now: Instant,
        id: u64,
        unix_ms: u64,
        text: &str,
        resumed: bool,
    ) -> u64 {
        self.mls.chat_seq += 1;
        let seq = self.mls.chat_seq;
        let recipients: Vec<PeerId> = self.members().into_iter().map(|(p, _)| p).collect();
        self.emit(MeetingEvent::ChatSent {
            seq,
            id,
            text: text.to_owned(),
            unix_ms,
            resumed,
        });
        let rng = &mut self.rng;
        let settled = self
            .chat_outbox
            .push(seq, id, text.to_owned(), unix_ms, recipients, || {
                rng.next_u64()
            });
        if let Some(settled) = settled {
            self.report_chat(settled);
        }
        self.flush_chat(now);
        seq
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
                id: send.id,
            };
            let payload = message.encode();
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

    /// A chat line did not reach `peer` (a failure, or a `Nack`): the outbox retries it
    /// after its back-off, or gives up on it for `peer`.
    pub(super) fn chat_failed(&mut self, now: Instant, peer: PeerId, stream: u64, wire: u64) {
        let give_up = self.config.chat_give_up;
        let settled = self
            .chat_outbox
            .failed(now, peer, stream, wire, give_up, &mut self.rng);
        if let Some(settled) = settled {
            self.report_chat(settled);
        }
    }

    pub(super) fn report_chat(&mut self, settled: Settled) {
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

    /// Sends a media signal again (within the bounded attempts, to a member still).
    fn send_application_to(&mut self, retry: AppRetry) {
        let AppRetry {
            to: peer,
            payload,
            attempt,
            backoff,
            ..
        } = retry;
        if attempt > self.config.chat_attempts || !self.is_group_member(&peer) {
            return;
        }
        match self.group_request(&payload) {
            Ok(request) => {
                let kind = Inflight::Application {
                    payload,
                    attempt,
                    backoff,
                };
                self.send(peer, request, kind);
            }
            Err(err) => warn!(error = %err, "cannot encrypt an application message"),
        }
    }

    /// A member did not take an application message of ours (`Nack`: an epoch behind, or
    /// outside the ratchet window; `NotMember`: a joiner still on its way in, which cannot
    /// read a message of the epoch that added it before its Welcome): try again later.
    pub(super) fn application_not_taken(&mut self, now: Instant, from: PeerId, kind: Inflight) {
        self.heard_from(now, from);
        self.application_failed(now, from, kind);
    }

    /// An application message of ours did not reach `peer`: schedule the next attempt.
    pub(super) fn application_failed(&mut self, now: Instant, peer: PeerId, kind: Inflight) {
        match kind {
            Inflight::Chat { stream, wire } => self.chat_failed(now, peer, stream, wire),
            Inflight::Application {
                payload,
                attempt,
                mut backoff,
            } => {
                let at = now + backoff.next_delay(&mut self.rng);
                self.mls.schedule_application_retry(AppRetry {
                    at,
                    to: peer,
                    payload,
                    attempt: attempt + 1,
                    backoff,
                });
            }
            Inflight::State { attempt } => {
                self.mls
                    .schedule_state_retry(now + self.config.chat_retry, peer, attempt + 1);
            }
            Inflight::Hello { .. }
            | Inflight::Heartbeat
            | Inflight::Commit { .. }
            | Inflight::Other => {}
        }
    }

    /// Retries whose time came, chat gaps waited for long enough, and chat due.
    pub(super) fn application_timeouts(&mut self, now: Instant) {
        let (due, later): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.mls.app_retries)
            .into_iter()
            .partition(|retry| retry.at <= now);
        self.mls.app_retries = later;
        for retry in due {
            self.send_application_to(retry);
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
