//! The meeting session: building the meeting machine for an invite, its DHT look-ups and
//! announcements, offering it candidates, carrying out its outputs, and leaving.
//!
//! A joiner looks the meeting's rendezvous key up on the DHT, backing off from
//! `Config::lookup_interval_joining` to [`LOOKUP_JOINING_MAX`] until the group is found,
//! and greets the invite's host directly as well; a member looks up every
//! `Config::lookup_interval_member` (newcomers, split groups) and re-announces itself
//! every `Config::reprovide_interval` ([`crate::Config`]). A joiner's KeyPackage, the hello handshake and the
//! roster are the machine's business ([`crate::meeting`]); this file only feeds it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::request_response::OutboundRequestId;
use libp2p::{PeerId, kad};
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tracing::warn;

use super::media_link::MediaInput;
use super::{Driver, Event, LEAVE_GRACE, LOOKUP_JOINING_MAX, clock};
use crate::Error;
use crate::admission::MeetingKeys;
use crate::backoff::Backoff;
use crate::group::{MlsIdentity, Provider};
use crate::invite::{Invite, MeetingSecret};
use crate::meeting::{Machine, MeetingEvent, Output, Phase};
use crate::net::routing::is_dialable;
use crate::proto::control::Request;
use crate::store::MeetingRecord;

/// The meeting we are in (or were in last: a finished machine stays until the next one).
pub(super) struct Session {
    pub(super) machine: Machine<StdRng>,
    pub(super) invite: Invite,
    /// The invite's host, greeted directly while joining.
    pub(super) host_hint: Option<PeerId>,
    next_lookup: Instant,
    /// Spacing of the look-ups while searching (reset once a member again).
    lookup_backoff: Backoff,
    /// Whether the look-ups are retries: while joining, and while cut off from the members
    /// (reconnecting), when the DHT is how we find them again.
    searching: bool,
    /// When the network last answered a ping (any peer): a first answer after a silence
    /// while reconnecting looks the meeting up at once.
    network_heard: Option<Instant>,
    next_provide: Instant,
    /// Our chat lines on their way (number in this session → identity), kept in the store
    /// until settled.
    pub(super) pending_chat: HashMap<u64, u64>,
    /// Whether the lines a previous run left unsent went out again.
    pub(super) chat_resumed: bool,
}

/// Longest wait between look-ups (and fresh dials) while cut off from the members.
const RECONNECT_LOOKUP_MAX: Duration = Duration::from_secs(2);

/// A silence of the network this long, then an answer, is "our network is back".
const NETWORK_BACK_AFTER: Duration = Duration::from_secs(1);

/// A leave waiting for its goodbyes to be acknowledged (at most [`LEAVE_GRACE`]).
pub(super) struct PendingLeave {
    reply: oneshot::Sender<()>,
    pub(super) deadline: Instant,
    /// The goodbyes not yet answered.
    pub(super) outstanding: HashSet<OutboundRequestId>,
}

impl Driver {
    /// Whether we are in a meeting (joining or member).
    pub(super) fn in_meeting(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.machine.is_finished())
    }

    /// Whether we are still looking for the meeting's group.
    fn joining(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| matches!(s.machine.phase(), Phase::Joining { .. }))
    }

    /// Builds the meeting machine for `invite`, hosting it or joining it.
    pub(super) fn start_session(
        &mut self,
        invite: Invite,
        host: bool,
        rng: StdRng,
        now: Instant,
    ) -> Result<Session, Error> {
        let keys = MeetingKeys::derive(invite.meeting_id, &invite.secret);
        // MLS state lives in memory only: a restart always starts or joins afresh.
        let provider = Provider::default();
        let me = MlsIdentity::new(&self.identity);
        let meeting = self.config.meeting.clone();
        let local = *self.swarm.local_peer_id();
        let mut machine = if host {
            Machine::host(meeting, me, provider, self.name.clone(), keys, now, rng)?
        } else {
            Machine::joiner(
                meeting,
                me,
                provider,
                self.name.clone(),
                keys,
                invite.host,
                now,
                rng,
            )
        };
        machine.set_local_addrs(self.routing.listen_addrs().to_vec());
        machine.set_lobby(now, invite.lobby);
        Ok(Session {
            machine,
            host_hint: if host {
                None
            } else {
                invite.host.filter(|h| *h != local)
            },
            next_lookup: if host {
                now + self.config.lookup_interval_member
            } else {
                now
            },
            lookup_backoff: Backoff::new(self.config.lookup_interval_joining, LOOKUP_JOINING_MAX),
            searching: !host,
            network_heard: None,
            next_provide: now + self.config.reprovide_interval,
            pending_chat: HashMap::new(),
            chat_resumed: false,
            invite,
        })
    }

    /// The session's next deadline: the machine's, the next look-up, the next announcement.
    pub(super) fn session_deadline(&self) -> Option<Instant> {
        let session = self.session.as_ref()?;
        if session.machine.is_finished() {
            return None;
        }
        let mut deadline = session.next_lookup;
        // Re-announcing only happens as a member; counting the provide deadline in other
        // phases would wake the loop forever once it passed.
        if session.machine.phase() == Phase::Member {
            deadline = deadline.min(session.next_provide);
        }
        if let Some(t) = session.machine.poll_timeout() {
            deadline = deadline.min(t);
        }
        Some(deadline)
    }

    /// Runs the session's timers that are due at `now`.
    pub(super) fn on_session_timer(&mut self, now: Instant) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.machine.is_finished() {
            return;
        }
        if session.machine.poll_timeout().is_some_and(|t| t <= now) {
            session.machine.handle_timeout(now, clock::unix_ms());
        }
        let searching = matches!(session.machine.phase(), Phase::Joining { .. })
            || session.machine.is_reconnecting();
        if searching && !session.searching {
            // Cut off: the members are found again the way a joiner finds them, at once and
            // then backing off, not at the member's leisurely poll.
            session.lookup_backoff.reset();
            session.next_lookup = now;
        }
        session.searching = searching;
        if now >= session.next_lookup {
            self.look_up(now);
        }
        let provide_due = self.session.as_ref().is_some_and(|s| now >= s.next_provide);
        if provide_due {
            self.provide();
        }
    }

    /// Looks the meeting up on the DHT (and, while joining, the invite's host).
    fn look_up(&mut self, now: Instant) {
        let joining = self.joining();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        // While joining or cut off, look-ups are retries (until the group is found): they
        // back off from the joining interval to LOOKUP_JOINING_MAX. A member's look-ups
        // are a steady poll for newcomers and split groups.
        let interval = if session.searching {
            // Cut off, each look-up also dials afresh (below): a network that returns is
            // noticed within RECONNECT_LOOKUP_MAX.
            let max = if session.machine.is_reconnecting() {
                RECONNECT_LOOKUP_MAX
            } else {
                LOOKUP_JOINING_MAX
            };
            session.lookup_backoff.set_max(max);
            session.lookup_backoff.next_delay(&mut self.rng)
        } else {
            session.lookup_backoff.reset();
            self.config.lookup_interval_member
        };
        session.next_lookup = now + interval;
        let key = kad::RecordKey::new(&session.machine.dht_key());
        let hint = if joining { session.host_hint } else { None };
        self.swarm.behaviour_mut().kad.get_providers(key);
        if let Some(host) = hint {
            self.offer_candidate(host);
            self.swarm.behaviour_mut().kad.get_closest_peers(host);
        }
        // Cut off, each look-up also dials the members and relays afresh: the connections
        // still held may be dead without libp2p knowing.
        if let Some(session) = self.session.as_ref()
            && session.machine.is_reconnecting()
        {
            let members = session.machine.members().into_iter().map(|(peer, _)| peer);
            self.routing.dial_afresh(members);
        }
    }

    /// Announces the meeting on the DHT (as a member only).
    pub(super) fn provide(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.machine.phase() != Phase::Member {
            return;
        }
        session.next_provide = clock::now() + self.config.reprovide_interval;
        let key = kad::RecordKey::new(&session.machine.dht_key());
        if let Err(err) = self.swarm.behaviour_mut().kad.start_providing(key) {
            warn!(error = %err, "cannot announce the meeting on the DHT");
        }
    }

    /// A joiner greets the invite's host again (its first hello may have found no route).
    pub(super) fn greet_host_again(&mut self) {
        if let Some(host) = self.session.as_ref().and_then(|s| s.host_hint)
            && self.joining()
        {
            self.offer_candidate(host);
        }
    }

    /// Feeds a possible member to the machine with whatever addresses we know for it.
    pub(super) fn offer_candidate(&mut self, peer: PeerId) {
        let addrs = self.routing.routes_to(&peer);
        if let Some(session) = self.session.as_mut() {
            session
                .machine
                .handle_candidate(clock::now(), clock::unix_ms(), peer, addrs);
        }
    }

    /// Carries out the machine's outputs (never waiting: events go to the outbox).
    /// Returns whether there were any.
    pub(super) fn drain_machine(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.session.as_mut().and_then(|s| s.machine.poll_output()) {
            any = true;
            match output {
                Output::Send {
                    to,
                    addrs,
                    request,
                    tag,
                } => {
                    for addr in addrs.into_iter().filter(is_dialable) {
                        self.routing.remember_addr(to, addr);
                    }
                    let is_bye = matches!(request, Request::Bye { .. });
                    let id = self.send_control(to, request, tag);
                    if is_bye && let Some(leave) = self.pending_leave.as_mut() {
                        leave.outstanding.insert(id);
                    }
                }
                Output::StartProviding => self.provide(),
                Output::StopProviding => {
                    if let Some(session) = &self.session {
                        let key = kad::RecordKey::new(&session.machine.dht_key());
                        self.swarm.behaviour_mut().kad.stop_providing(&key);
                    }
                }
                Output::Rekeyed {
                    secret,
                    previous_dht_key,
                } => self.rekeyed(secret, &previous_dht_key),
                Output::Media(command) => {
                    self.media.pass(MediaInput::Command(command));
                }
                // Not written: a restart never loads a group (see `store`'s module docs).
                Output::Persist(_) => {}
                Output::Event(event) => {
                    self.record(&event);
                    let joined = matches!(event, MeetingEvent::Joined { .. });
                    self.outbox.push(Event::Meeting(event));
                    if joined {
                        self.resume_pending_chat();
                    }
                }
            }
        }
        any
    }

    /// A kick rotated the meeting secret: announce under the new DHT key only, remember the
    /// new invite (and that the old one is superseded), and tell the application.
    fn rekeyed(&mut self, secret: MeetingSecret, previous_dht_key: &[u8]) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        self.swarm
            .behaviour_mut()
            .kad
            .stop_providing(&kad::RecordKey::new(&previous_dht_key));
        let previous = std::mem::replace(&mut session.invite.secret, secret);
        let invite = session.invite.clone();
        self.update_meeting_record(|record| {
            record.invite = invite.to_uri();
            let digest = MeetingRecord::secret_digest(&previous);
            if !record.superseded.contains(&digest) {
                record.superseded.push(digest);
            }
        });
        self.provide();
        self.outbox
            .push(Event::Meeting(MeetingEvent::InviteChanged { invite }));
    }

    /// Leaves the meeting: goodbyes go out, the reply waits for their answers (at most
    /// [`LEAVE_GRACE`]).
    pub(super) fn leave(&mut self, reply: oneshot::Sender<()>, now: Instant) {
        let Some(session) = self.session.as_mut() else {
            let _ = reply.send(());
            return;
        };
        session.machine.leave();
        self.pending_leave = Some(PendingLeave {
            reply,
            deadline: now + LEAVE_GRACE,
            outstanding: HashSet::new(),
        });
    }

    /// Answers the leave once no goodbye is outstanding.
    pub(super) fn finish_leave_if_done(&mut self) {
        if self
            .pending_leave
            .as_ref()
            .is_some_and(|l| l.outstanding.is_empty())
        {
            self.finish_leave();
        }
    }

    pub(super) fn finish_leave(&mut self) {
        if let Some(leave) = self.pending_leave.take() {
            let _ = leave.reply.send(());
        }
    }

    /// Something on the network answered a ping at `now`: the machine tells "they are
    /// gone" from "we are cut off" by it. A first answer after a silence while we are cut
    /// off means our network is back: look the members up at once rather than at the next
    /// retry.
    pub(super) fn on_network_heard(&mut self, now: Instant) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.machine.network_heard(now);
        let was_silent = session
            .network_heard
            .is_none_or(|at| now.saturating_duration_since(at) >= NETWORK_BACK_AFTER);
        session.network_heard = Some(now);
        if was_silent && session.machine.is_reconnecting() {
            session.lookup_backoff.reset();
            session.next_lookup = now;
        }
    }
}
