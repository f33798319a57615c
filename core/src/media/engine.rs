//! The media engine: every decision of the media plane about connections, sans-IO.
//!
//! One [`Member`] struct per member holds that member's connection (a typed
//! [`ConnectionState`] and [`MediaPath`]), its signalling state (the offer we sent and its
//! digest, since when it is unanswered, the latest signal it sent us), its repair timers
//! ([`BrokenPath`]) and its leaf (which keys open its frames). Removing a member is one
//! `HashMap::remove`.
//!
//! The engine is fed events (`handle_*`, each with `now`) and drained with
//! [`Engine::poll_action`] after every input, as the meeting machine is: it never touches a
//! socket, a task or a clock. The [actor](super::actor) performs its [`Action`]s and feeds
//! the results back, naming the connection ([`ConnId`]) they are about: results about a
//! connection since replaced, or about a peer since removed, are ignored.
//!
//! Negotiation: the member with the lower peer id offers; SDP travels inside the MLS group
//! ([`Signal`]). The answer says how long the answerer took; the offerer, taking it, sends
//! `Punch` and has the answer's reflexive candidates held back for half the signalling
//! round trip, while the answerer releases the offer's on that word, so both sides check
//! the paths through their NATs together (`transport::sdp`). An offer that goes
//! unanswered for [`NEGOTIATION_TIMEOUT`] is replaced by a new connection. A path that breaks is repaired in place by ICE restarts
//! ([`repair`]), and after [`MAX_ICE_RESTARTS`] answered ones by a new connection.
//!
//! Relay first, direct later ([`upgrade`]): a connection takes the first candidate pair
//! that works, relayed or not, so media flows at once; a relayed one gets a second
//! connection beside it that looks for a direct path and takes over without a gap.

mod peer;
mod repair;
pub(crate) mod signal;
#[cfg(test)]
mod tests;
pub(crate) mod upgrade;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::{EpochSecret, MediaEvent};
pub(crate) use peer::ConnId;
use peer::{Connection, EarlyOffer, Member, Pending};
pub use peer::{ConnectionState, MediaPath};
pub(crate) use repair::{BrokenPath, MAX_ICE_RESTARTS, RESTART_AFTER};
pub(crate) use signal::{Signal, offer_digest};

/// How long an offer may go unanswered before the offering side offers again with a new
/// connection (each side gathers for at most ~5.5 s). A signal can be lost: one that
/// reaches a joiner still entering the group is in an epoch it cannot read yet.
pub(crate) const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the DTLS handshake of a new connection may run over a working ICE path before
/// the offering side replaces the connection. At 250 ms round-trip time it takes under a
/// second, and each lost flight adds the one-second retransmission interval; but webrtc-rs
/// (rtc-dtls 0.21) stops retransmitting a flight for good once a repeat of the other
/// side's previous flight arrives, so a handshake that lost a flight that way never
/// completes (both sides stay `connecting` and ICE restarts cannot help: they keep the
/// DTLS session).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest time an answer's reflexive candidates are held back: half of a signalling round
/// trip longer than this (measured wrong, or a signal retried) is not worth waiting for.
const MAX_HOLD_BACK: Duration = Duration::from_secs(2);
/// Frames that arrive this soon after a relay was lost were already on their way: they are
/// no sign that a relayed path survived.
const IN_FLIGHT_AFTER_RELAY_LOSS: Duration = Duration::from_millis(100);

/// What the engine asks its driver to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Create connection `conn` to `peer` (without relayed candidates if `direct_only`);
    /// report with [`Engine::handle_created`].
    Connect {
        peer: PeerId,
        conn: ConnId,
        direct_only: bool,
    },
    /// Close connection `conn` and forget it (stop sending audio on it too).
    Close { peer: PeerId, conn: ConnId },
    /// Create an offer on `conn`; report it with [`Engine::handle_local_signal`].
    CreateOffer { peer: PeerId, conn: ConnId },
    /// Restart ICE on `conn` (with the current ICE servers) and report the restart offer.
    RestartIce { peer: PeerId, conn: ConnId },
    /// Take the other side's offer (whose digest is `digest`) and report our answer as
    /// `Signal::Answer { offer: digest, .. }`. An ICE `restart` of an existing connection
    /// takes the current ICE servers first.
    AcceptOffer {
        peer: PeerId,
        conn: ConnId,
        sdp: String,
        digest: u64,
        restart: bool,
    },
    /// Take the other side's answer to our latest offer, holding its reflexive candidates
    /// back for `hold_back` (half the signalling round trip: see `transport::sdp`).
    AcceptAnswer {
        peer: PeerId,
        conn: ConnId,
        sdp: String,
        hold_back: Duration,
    },
    /// The offerer starts checking our reflexive-candidate paths now: start checking the
    /// offer's reflexive candidates held back on `conn`.
    ReleaseCandidates { peer: PeerId, conn: ConnId },
    /// Send a signalling payload to a member (inside the MLS group).
    Signal { to: PeerId, payload: Vec<u8> },
    /// Measure the path and round-trip time of `conn`; report with [`Engine::handle_path`].
    MeasurePath { peer: PeerId, conn: ConnId },
    /// Start (`true`) or stop sending our audio on `conn` (beside the connections it goes
    /// out on already: to a member switching connections it goes out on both for a while),
    /// and our video (on the latest connection started only).
    SendAudio {
        peer: PeerId,
        conn: ConnId,
        on: bool,
    },
    /// The audio clock takes an epoch's keys and its members (leaf, peer; us excluded).
    Keys {
        epoch: u64,
        secret: EpochSecret,
        own_leaf: u32,
        members: Vec<(u32, PeerId)>,
    },
    /// The audio clock forgets what it received from `peer` (a new connection brings new
    /// RTP streams).
    ForgetAudio { peer: PeerId },
    /// The audio clock forgets every key and receiver.
    ResetAudio,
    /// `peer` wants our video, or (its "no incoming video" mode) does not.
    VideoWanted { peer: PeerId, wanted: bool },
    /// `peer` says which of its videos it sends (a camera off, a share stopped).
    PeerSending {
        peer: PeerId,
        camera: bool,
        screen: bool,
    },
    /// Report to the application.
    Report(MediaEvent),
}

/// The sans-IO media engine of one client.
#[derive(Debug)]
pub(crate) struct Engine {
    local: PeerId,
    members: HashMap<PeerId, Member>,
    /// Offers from peers not (yet) members.
    early_offers: HashMap<PeerId, EarlyOffer>,
    /// When a relay connection was lost, until the relay's servers come back.
    relay_lost: Option<Instant>,
    next_conn: u64,
    actions: VecDeque<Action>,
    /// We receive the members' video (off: every member is asked to send us none).
    incoming_video: bool,
    /// Which of our videos we send (camera, screen), as the members were told.
    sending: (bool, bool),
    /// Our connections offer only relayed candidates: no direct path is looked for.
    relay_only: bool,
    /// Relayed connections a direct one replaced, and when they close.
    retiring: Vec<(PeerId, ConnId, Instant)>,
}

impl Engine {
    /// An engine for the client `local`; `relay_only` if its connections offer only relayed
    /// candidates (no direct path is then looked for).
    pub(crate) fn new(local: PeerId, relay_only: bool) -> Self {
        Self {
            local,
            members: HashMap::new(),
            early_offers: HashMap::new(),
            relay_lost: None,
            next_conn: 0,
            actions: VecDeque::new(),
            incoming_video: true,
            sending: (true, false),
            relay_only,
            retiring: Vec::new(),
        }
    }

    /// The next action, if any. Drain after every input.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether we offer to `peer` (the lower peer id offers).
    fn offers_to(&self, peer: &PeerId) -> bool {
        self.local.to_bytes() < peer.to_bytes()
    }

    /// The latest round-trip time measured to `peer`.
    pub(crate) fn rtt_ms(&self, peer: &PeerId) -> Option<f64> {
        self.members.get(peer)?.conn.as_ref()?.rtt_ms
    }

    /// The connection to `peer` if it is `conn` (the one our media goes out on, or the
    /// direct path attempt beside it), and whether it is the attempt.
    fn current(&mut self, peer: &PeerId, conn: ConnId) -> Option<(&mut Connection, bool)> {
        let member = self.members.get_mut(peer)?;
        if let Some(main) = member.conn.as_mut().filter(|main| main.id == conn) {
            return Some((main, false));
        }
        let upgrade = member
            .upgrade
            .as_mut()
            .filter(|upgrade| upgrade.id == conn)?;
        Some((upgrade, true))
    }

    /// The connection to `peer` (either) whose latest offer's digest is `offer` (`sent`:
    /// ours; otherwise the one we answer).
    fn by_offer(&mut self, peer: &PeerId, offer: u64, sent: bool) -> Option<&mut Connection> {
        let member = self.members.get_mut(peer)?;
        let matches = |conn: &&mut Connection| {
            if sent {
                conn.offered == Some(offer)
            } else {
                conn.answering.is_some_and(|(digest, _)| digest == offer)
            }
        };
        member
            .conn
            .as_mut()
            .filter(matches)
            .or(member.upgrade.as_mut().filter(matches))
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn report(&mut self, event: MediaEvent) {
        self.push(Action::Report(event));
    }

    fn new_conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// A new epoch: keys for the audio clock, connections to new members, none to members
    /// that left, fresh ones to members that rejoined (`replaced`).
    pub(crate) fn handle_epoch(
        &mut self,
        now: Instant,
        epoch: u64,
        secret: EpochSecret,
        own_leaf: u32,
        members: Vec<(u32, PeerId)>,
        replaced: &[PeerId],
    ) {
        for peer in replaced {
            self.close(peer);
            self.push(Action::ForgetAudio { peer: *peer });
        }
        let others: Vec<(u32, PeerId)> = members
            .into_iter()
            .filter(|(_, peer)| *peer != self.local)
            .collect();
        self.push(Action::Keys {
            epoch,
            secret,
            own_leaf,
            members: others.clone(),
        });
        let gone: Vec<PeerId> = self
            .members
            .keys()
            .filter(|peer| !others.iter().any(|(_, p)| p == *peer))
            .copied()
            .collect();
        for peer in gone {
            self.remove(&peer);
        }
        for (leaf, peer) in others {
            if !self.members.contains_key(&peer) {
                // A new member hears at once that we take no video, or send no camera.
                if !self.incoming_video {
                    self.push(Action::Signal {
                        to: peer,
                        payload: Signal::Video { receive: false }.encode(),
                    });
                }
                if self.sending != (true, false) {
                    let (camera, screen) = self.sending;
                    self.push(Action::Signal {
                        to: peer,
                        payload: Signal::Sending { camera, screen }.encode(),
                    });
                }
            }
            let member = self.members.entry(peer).or_insert(Member {
                leaf,
                since: now,
                conn: None,
                upgrade: None,
                upgrades: upgrade::Attempts::default(),
                last_signal: None,
            });
            member.leaf = leaf;
            if member.conn.is_none() && self.offers_to(&peer) {
                self.offer(now, peer);
            }
        }
        self.answer_early_offers(now);
    }

    /// Offers that arrived before this epoch made their senders members.
    fn answer_early_offers(&mut self, now: Instant) {
        self.early_offers
            .retain(|_, offer| now.saturating_duration_since(offer.at) < NEGOTIATION_TIMEOUT);
        let now_members: Vec<PeerId> = self
            .early_offers
            .keys()
            .filter(|peer| self.members.contains_key(*peer))
            .copied()
            .collect();
        for peer in now_members {
            let Some(offer) = self.early_offers.remove(&peer) else {
                continue;
            };
            debug!(peer = %peer, "answering an offer that came before its epoch");
            if let Some(member) = self.members.get_mut(&peer) {
                member.last_signal = Some(offer.payload);
            }
            self.answer(now, peer, offer.sdp);
        }
    }

    /// Removes a member: its connection is closed and nothing of it is left.
    fn remove(&mut self, peer: &PeerId) {
        self.close(peer);
        self.members.remove(peer);
        debug!(peer = %peer, "member removed from the media plane");
    }

    /// Closes the connection to `peer`, if any, and its direct path attempt.
    fn close(&mut self, peer: &PeerId) {
        self.close_upgrade(peer);
        let Some(conn) = self.members.get_mut(peer).and_then(|m| m.conn.take()) else {
            return;
        };
        self.push(Action::Close {
            peer: *peer,
            conn: conn.id,
        });
    }

    /// Our "no incoming video" mode (for a weak link) on or off: every member is asked to
    /// send us its video, or none.
    pub(crate) fn handle_incoming_video(&mut self, receive: bool) {
        if receive == self.incoming_video {
            return;
        }
        self.incoming_video = receive;
        self.tell_every_member(&Signal::Video { receive });
    }

    /// Our camera turned on or off (`camera`), our share started or stopped (`screen`):
    /// every member is told, so that a video that ends ends at once on their screens.
    pub(crate) fn handle_sending(&mut self, camera: Option<bool>, screen: Option<bool>) {
        let now_sending = (
            camera.unwrap_or(self.sending.0),
            screen.unwrap_or(self.sending.1),
        );
        if now_sending == self.sending {
            return;
        }
        self.sending = now_sending;
        let (camera, screen) = now_sending;
        self.tell_every_member(&Signal::Sending { camera, screen });
    }

    /// Sends `signal` to every member, in peer id order.
    fn tell_every_member(&mut self, signal: &Signal) {
        let payload = signal.encode();
        let mut peers: Vec<PeerId> = self.members.keys().copied().collect();
        peers.sort();
        for peer in peers {
            self.push(Action::Signal {
                to: peer,
                payload: payload.clone(),
            });
        }
    }

    /// We dropped our group: every connection closes, every key goes.
    pub(crate) fn handle_reset(&mut self) {
        let peers: Vec<PeerId> = self.members.keys().copied().collect();
        for peer in peers {
            self.remove(&peer);
        }
        self.push(Action::ResetAudio);
    }

    /// A new connection to `peer`, offered by us.
    fn offer(&mut self, now: Instant, peer: PeerId) {
        let id = self.new_conn_id();
        let Some(member) = self.members.get_mut(&peer) else {
            return;
        };
        let mut conn = Connection::new(id, Pending::Offer);
        conn.unanswered_since = Some(now);
        member.conn = Some(conn);
        self.push(Action::Connect {
            peer,
            conn: id,
            direct_only: false,
        });
    }

    /// Replaces the connection to `peer` by a new one; the offering side offers. What we
    /// received stays: the member's frames are ordered by their SFrame counters, which
    /// go on over the new connection.
    fn reconnect(&mut self, now: Instant, peer: PeerId) {
        self.close(&peer);
        if self.offers_to(&peer) {
            self.offer(now, peer);
        }
    }

    /// A signalling payload from `from`, authenticated by the group.
    pub(crate) fn handle_signal(&mut self, now: Instant, from: PeerId, payload: Vec<u8>) {
        let decoded = Signal::decode(&payload);
        // Whether a member wants our video is a state, not a step of a negotiation: it
        // is taken as often as it comes, and it is not what a repeated offer is told by.
        match decoded {
            Some(Signal::Video { receive }) => {
                self.push(Action::VideoWanted {
                    peer: from,
                    wanted: receive,
                });
                return;
            }
            Some(Signal::Sending { camera, screen }) => {
                self.push(Action::PeerSending {
                    peer: from,
                    camera,
                    screen,
                });
                return;
            }
            _ => {}
        }
        // Signals are delivered with retries, so one whose acknowledgement was lost comes
        // twice: taking an offer again would replace the connection it made.
        let repeated = match self.members.get_mut(&from) {
            Some(member) if member.last_signal.as_ref() == Some(&payload) => true,
            Some(member) => {
                member.last_signal = Some(payload.clone());
                false
            }
            None => self
                .early_offers
                .get(&from)
                .is_some_and(|offer| offer.payload == payload),
        };
        if repeated {
            debug!(peer = %from, "duplicate signal ignored");
            return;
        }
        let Some(signal) = decoded else {
            warn!(peer = %from, "malformed signalling message dropped");
            return;
        };
        match signal {
            Signal::Offer(sdp) if !self.members.contains_key(&from) => {
                debug!(peer = %from, "offer from a non-member kept until the next epoch");
                self.early_offers.insert(
                    from,
                    EarlyOffer {
                        at: now,
                        sdp,
                        payload,
                    },
                );
            }
            Signal::Offer(sdp) => self.answer(now, from, sdp),
            // A direct path attempt beside a connection we have.
            Signal::Upgrade(sdp) => self.answer_upgrade(now, from, sdp),
            Signal::Restart(sdp) => self.answer_restart(now, from, sdp),
            Signal::Answer {
                sdp,
                offer,
                took_ms,
            } => self.take_answer(now, from, sdp, offer, took_ms),
            Signal::Punch { offer } => self.release_candidates(from, offer),
            Signal::Video { .. } | Signal::Sending { .. } => {}
        }
    }

    /// A first offer from a member: it replaces whatever connection we had with it, except
    /// in glare (we offer to this member and our offer is still unanswered: ours stands,
    /// and the other side answers it).
    fn answer(&mut self, now: Instant, from: PeerId, sdp: String) {
        let offers_to = self.offers_to(&from);
        let Some(member) = self.members.get(&from) else {
            warn!(peer = %from, "offer from a non-member ignored");
            return;
        };
        if offers_to
            && member
                .conn
                .as_ref()
                .is_some_and(|conn| conn.unanswered_since.is_some())
        {
            debug!(peer = %from, "glare: our offer is in flight and stands; theirs ignored");
            return;
        }
        self.close(&from);
        let id = self.new_conn_id();
        let digest = offer_digest(&sdp);
        if let Some(member) = self.members.get_mut(&from) {
            let mut conn = Connection::new(id, Pending::Answer { sdp, digest });
            conn.answering = Some((digest, now));
            member.conn = Some(conn);
        }
        self.push(Action::Connect {
            peer: from,
            conn: id,
            direct_only: false,
        });
    }

    /// The other side restarted ICE: answer on the existing connection (or, if we have none
    /// any more, as a new one).
    fn answer_restart(&mut self, now: Instant, from: PeerId, sdp: String) {
        let Some(conn) = self
            .members
            .get_mut(&from)
            .and_then(|member| member.conn.as_mut())
            .filter(|conn| conn.created)
        else {
            self.answer(now, from, sdp);
            return;
        };
        conn.ice_restarts += 1;
        let id = conn.id;
        info!(peer = %from, "answering an ICE restart");
        let digest = offer_digest(&sdp);
        conn.answering = Some((digest, now));
        self.push(Action::AcceptOffer {
            peer: from,
            conn: id,
            sdp,
            digest,
            restart: true,
        });
    }

    /// An answer: taken only if it answers our latest offer on the current connection. The
    /// answerer is told to start checking our reflexive candidates (`Punch`) as we take
    /// the answer, and we start checking its own once that word has had time to arrive:
    /// half the signalling round trip, which is the time between our offer and this answer
    /// less the time the answerer took.
    fn take_answer(&mut self, now: Instant, from: PeerId, sdp: String, offer: u64, took_ms: u32) {
        let Some(conn) = self.by_offer(&from, offer, true) else {
            debug!(peer = %from, "answer to an offer since replaced ignored");
            return;
        };
        if let Some(broken) = conn.broken.as_mut() {
            broken.answered();
        }
        let id = conn.id;
        if !conn.created {
            return;
        }
        let round_trip = conn
            .offer_sent
            .map(|sent| now.saturating_duration_since(sent))
            .unwrap_or_default()
            .saturating_sub(Duration::from_millis(u64::from(took_ms)));
        let hold_back = (round_trip / 2).min(MAX_HOLD_BACK);
        debug!(peer = %from, ?round_trip, ?hold_back, "answer taken; punching");
        self.push(Action::Signal {
            to: from,
            payload: Signal::Punch { offer }.encode(),
        });
        self.push(Action::AcceptAnswer {
            peer: from,
            conn: id,
            sdp,
            hold_back,
        });
    }

    /// The offerer took our answer to its offer `offer`: if that is the offer our current
    /// connection answered, its held-back candidates are checked from now on.
    fn release_candidates(&mut self, from: PeerId, offer: u64) {
        let Some(conn) = self.by_offer(&from, offer, false) else {
            debug!(peer = %from, "punch for an offer since replaced ignored");
            return;
        };
        let conn = conn.id;
        self.push(Action::ReleaseCandidates { peer: from, conn });
    }

    /// The driver created connection `conn` (or failed to). Returns whether the driver
    /// keeps it: `false` for a connection since replaced or a peer since removed (the
    /// driver then closes it).
    pub(crate) fn handle_created(
        &mut self,
        peer: PeerId,
        conn: ConnId,
        result: Result<(), String>,
    ) -> bool {
        let Some((current, attempt)) = self.current(&peer, conn) else {
            debug!(peer = %peer, %conn, "connection created for nothing: replaced meanwhile");
            return false;
        };
        if let Err(error) = result {
            if let Some(member) = self.members.get_mut(&peer) {
                if attempt {
                    member.upgrade = None;
                } else {
                    member.conn = None;
                }
            }
            self.warn(format!(
                "cannot create a media connection to {peer}: {error}"
            ));
            return false;
        }
        current.created = true;
        match std::mem::replace(&mut current.pending, Pending::Nothing) {
            Pending::Nothing => {}
            Pending::Offer => self.push(Action::CreateOffer { peer, conn }),
            Pending::Answer { sdp, digest } => self.push(Action::AcceptOffer {
                peer,
                conn,
                sdp,
                digest,
                restart: false,
            }),
        }
        true
    }

    /// Connection `conn` produced a signal for its member (an offer, restart offer or
    /// answer): it goes out unless that connection has been replaced meanwhile.
    pub(crate) fn handle_local_signal(
        &mut self,
        now: Instant,
        peer: PeerId,
        conn: ConnId,
        mut signal: Signal,
    ) {
        let Some((current, attempt)) = self.current(&peer, conn) else {
            debug!(peer = %peer, %conn, "signal of a replaced connection dropped");
            return;
        };
        // A direct path attempt is offered as one: the other side keeps its connection.
        if let (true, Signal::Offer(sdp)) = (attempt, &mut signal) {
            signal = Signal::Upgrade(std::mem::take(sdp));
        }
        match &mut signal {
            Signal::Offer(sdp) | Signal::Restart(sdp) | Signal::Upgrade(sdp) => {
                current.offered = Some(offer_digest(sdp));
                current.offer_sent = Some(now);
            }
            Signal::Answer { offer, took_ms, .. } => {
                if let Some((_, since)) = current.answering.filter(|(digest, _)| digest == offer) {
                    let took = now.saturating_duration_since(since).as_millis();
                    *took_ms = u32::try_from(took).unwrap_or(u32::MAX);
                }
            }
            Signal::Punch { .. } | Signal::Video { .. } | Signal::Sending { .. } => {}
        }
        self.push(Action::Signal {
            to: peer,
            payload: signal.encode(),
        });
    }

    /// Negotiation on connection `conn` failed.
    pub(crate) fn handle_failed(
        &mut self,
        now: Instant,
        peer: PeerId,
        conn: ConnId,
        error: String,
    ) {
        let Some((_, attempt)) = self.current(&peer, conn) else {
            debug!(peer = %peer, %conn, %error, "a replaced connection failed");
            return;
        };
        if attempt {
            self.give_up_upgrade(now, peer, "its negotiation failed");
            return;
        }
        self.warn(format!("media negotiation with {peer} failed: {error}"));
    }

    fn warn(&mut self, message: String) {
        warn!(%message, "media");
        self.report(MediaEvent::Warning(message));
    }

    /// ICE found a working path for connection `conn`: if the connection was never
    /// `connected`, its DTLS handshake starts now.
    pub(crate) fn handle_ice_connected(&mut self, now: Instant, peer: PeerId, conn: ConnId) {
        let Some((current, _)) = self.current(&peer, conn) else {
            return;
        };
        if !current.secured && current.handshake_since.is_none() {
            debug!(peer = %peer, "ICE path found; DTLS handshake under way");
            current.handshake_since = Some(now);
        }
    }

    /// Connection `conn` changed state.
    pub(crate) fn handle_state(
        &mut self,
        now: Instant,
        peer: PeerId,
        conn: ConnId,
        state: ConnectionState,
    ) {
        let Some((current, attempt)) = self.current(&peer, conn) else {
            debug!(peer = %peer, %conn, %state, "state of a replaced connection ignored");
            return;
        };
        if attempt {
            self.upgrade_state(now, peer, conn, state);
            return;
        }
        debug!(peer = %peer, %state, "media connection state");
        // Any state change means the answer was taken (ICE runs).
        current.unanswered_since = None;
        let was_connected = current.connected();
        current.state = state;
        match state {
            ConnectionState::Connected => {
                current.secured = true;
                current.handshake_since = None;
                if current.broken.take().is_some() {
                    info!(peer = %peer, "media path repaired");
                }
                // The event waits for the path: which one it is belongs in it.
                current.report_connected = true;
            }
            // The path broke: repaired in place by an ICE restart (`repair_paths`).
            ConnectionState::Disconnected | ConnectionState::Failed => {
                let relayed = current.path == Some(MediaPath::Relayed);
                let broken = current
                    .broken
                    .get_or_insert_with(|| BrokenPath::new(now, relayed));
                if state == ConnectionState::Failed {
                    broken.failed(now);
                }
            }
            _ => {}
        }
        current.report_connected &= state == ConnectionState::Connected;
        let event = MediaEvent::Connection {
            peer_id: peer,
            state: state.as_str().to_owned(),
            path: MediaPath::Direct.as_str(),
            previous_path: None,
            since_join_ms: 0,
            rtt_ms: None,
            ice_restarts: current.ice_restarts,
        };
        if state == ConnectionState::Connected {
            if !was_connected {
                self.push(Action::SendAudio {
                    peer,
                    conn,
                    on: true,
                });
            }
            self.push(Action::MeasurePath { peer, conn });
        } else {
            if was_connected {
                self.push(Action::SendAudio {
                    peer,
                    conn,
                    on: false,
                });
            }
            self.report(event);
        }
        // The connection itself is gone: start over with a new one.
        if state == ConnectionState::Closed {
            self.reconnect(now, peer);
        }
    }

    /// The path of connection `conn` was measured (`None`: no pair selected yet). A
    /// relayed one gets a direct path attempt beside it ([`upgrade`]).
    pub(crate) fn handle_path(
        &mut self,
        now: Instant,
        peer: PeerId,
        conn: ConnId,
        measured: Option<(MediaPath, f64)>,
    ) {
        let Some((current, attempt)) = self.current(&peer, conn) else {
            return;
        };
        if attempt {
            self.upgrade_path(now, peer, conn, measured);
            return;
        }
        if !current.connected() {
            return;
        }
        if let Some((_, rtt)) = measured {
            current.rtt_ms = Some(rtt);
        }
        if !std::mem::take(&mut current.report_connected) {
            if let Some((path, _)) = measured {
                current.path = Some(path);
            }
            return;
        }
        let path = measured.map_or(MediaPath::Direct, |(path, _)| path);
        current.path = Some(path);
        let ice_restarts = current.ice_restarts;
        let since_join = self.members.get(&peer).map_or(Duration::ZERO, |member| {
            now.saturating_duration_since(member.since)
        });
        let event = MediaEvent::Connection {
            peer_id: peer,
            state: ConnectionState::Connected.as_str().to_owned(),
            path: path.as_str(),
            previous_path: None,
            since_join_ms: upgrade::millis(since_join),
            rtt_ms: measured.map(|(_, rtt)| rtt),
            ice_restarts,
        };
        self.report(event);
        if path == MediaPath::Relayed {
            self.maybe_upgrade(now, peer);
        }
    }

    /// A frame from `peer` arrived at `at` (reported by the audio clock, at most every
    /// ~100 ms per peer).
    pub(crate) fn handle_heard(&mut self, peer: PeerId, at: Instant) {
        if let Some(conn) = self.members.get_mut(&peer).and_then(|m| m.conn.as_mut()) {
            conn.last_heard = Some(conn.last_heard.map_or(at, |last| last.max(at)));
        }
    }

    /// The connection to a relay was lost: its TURN server may have restarted.
    pub(crate) fn handle_relay_lost(&mut self, now: Instant) {
        self.relay_lost.get_or_insert(now);
    }

    /// Fresh ICE servers arrived (the relay is back, if it was lost): every relayed path of
    /// ours that has carried no frame since the relay was lost is broken (its TURN
    /// allocations went with a restarted relay), so it is repaired at once instead of after
    /// ICE notices (consent checks) and waits [`RESTART_AFTER`]. A path whose frames kept
    /// coming (only the control connection dropped) is left alone.
    pub(crate) fn handle_ice_servers(&mut self, now: Instant) {
        let Some(lost) = self.relay_lost.take() else {
            return;
        };
        let alive_after = lost + IN_FLIGHT_AFTER_RELAY_LOSS;
        let local = self.local;
        let mut any = false;
        for (peer, member) in &mut self.members {
            let Some(conn) = member.conn.as_mut() else {
                continue;
            };
            let silent = conn.last_heard.is_none_or(|at| at <= alive_after);
            if local.to_bytes() < peer.to_bytes()
                && conn.connected()
                && conn.broken.is_none()
                && silent
                && conn.path == Some(MediaPath::Relayed)
            {
                info!(peer = %peer, "relayed path silent since the relay was lost; restarting ICE");
                let since = now.checked_sub(RESTART_AFTER).unwrap_or(now);
                conn.broken = Some(BrokenPath::new(since, true));
                any = true;
            }
        }
        if any {
            self.repair_paths(now);
        }
    }

    /// The periodic timer ([`super::STATS_INTERVAL`]): offers that went unanswered are made
    /// again, broken paths are repaired, connected paths are measured.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.repair_paths(now);
        self.check_upgrades(now);
        let connected: Vec<(PeerId, ConnId)> = self
            .members
            .iter()
            .filter_map(|(peer, member)| {
                let conn = member.conn.as_ref().filter(|conn| conn.connected())?;
                Some((*peer, conn.id))
            })
            .collect();
        for (peer, conn) in connected {
            self.push(Action::MeasurePath { peer, conn });
        }
    }

    /// Repairs what we are responsible for (the offering side): unanswered offers after
    /// [`NEGOTIATION_TIMEOUT`] and handshakes stalled for [`HANDSHAKE_TIMEOUT`] by a new
    /// connection; broken paths by ICE restarts as [`BrokenPath::restart_due`] says, and
    /// after [`MAX_ICE_RESTARTS`] answered ones by a new connection — except while the
    /// first DTLS handshake runs on a path ICE found (restarting it then would throw away a
    /// connection about to come up).
    fn repair_paths(&mut self, now: Instant) {
        let mut unanswered = Vec::new();
        let mut stalled = Vec::new();
        let mut due = Vec::new();
        for (peer, member) in &self.members {
            let Some(conn) = member.conn.as_ref() else {
                continue;
            };
            if !self.offers_to(peer) {
                continue;
            }
            if conn
                .unanswered_since
                .is_some_and(|since| now.saturating_duration_since(since) >= NEGOTIATION_TIMEOUT)
            {
                unanswered.push(*peer);
            } else if conn.handshake_stalled(now, HANDSHAKE_TIMEOUT) {
                stalled.push(*peer);
            } else if conn.handshake_since.is_some() && !conn.secured {
                // ICE found a path and DTLS runs on it: the handshake timeout decides.
            } else if conn.broken.is_some_and(|broken| broken.restart_due(now)) {
                due.push(*peer);
            }
        }
        for peer in unanswered {
            info!(peer = %peer, timeout = ?NEGOTIATION_TIMEOUT, "our offer was not answered; offering again");
            self.reconnect(now, peer);
        }
        for peer in stalled {
            info!(peer = %peer, timeout = ?HANDSHAKE_TIMEOUT, "DTLS handshake stalled on a working path; new connection");
            self.reconnect(now, peer);
        }
        for peer in due {
            self.restart_ice(now, peer);
        }
    }

    fn restart_ice(&mut self, now: Instant, peer: PeerId) {
        let Some(conn) = self.members.get_mut(&peer).and_then(|m| m.conn.as_mut()) else {
            return;
        };
        let Some(broken) = conn.broken.as_mut() else {
            return;
        };
        if broken.answered >= MAX_ICE_RESTARTS {
            info!(peer = %peer, "ICE restarts did not help; new connection");
            self.reconnect(now, peer);
            return;
        }
        if !conn.created {
            conn.broken = None;
            return;
        }
        broken.attempt(now);
        let attempt = broken.attempts;
        conn.ice_restarts += 1;
        let id = conn.id;
        info!(peer = %peer, attempt, "restarting ICE");
        self.push(Action::RestartIce { peer, conn: id });
    }
}
