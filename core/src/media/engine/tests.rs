//! The media engine under simulated time: two engines talk through a fake driver that
//! creates connections and produces SDP at once, and the test decides which signals arrive.

use super::repair::{RESTART_RETRY, RESTART_RETRY_DIRECT, RESTART_UNANSWERED_RETRY};
use super::upgrade::{self, RETIRE_AFTER};
use super::*;

use crate::test_clock::t0;

/// Two peer ids, the lower first (it offers).
fn pair() -> (PeerId, PeerId) {
    let (a, b) = (PeerId::random(), PeerId::random());
    if a.to_bytes() < b.to_bytes() {
        (a, b)
    } else {
        (b, a)
    }
}

/// One engine and a fake driver: connections are created and SDP produced at once;
/// signals wait in `outbox` until delivered, except the offerer's word to start checking
/// (`Punch`), which waits in `punches` (only the simultaneous-open test delivers it).
struct Side {
    id: PeerId,
    engine: Engine,
    log: Vec<Action>,
    outbox: Vec<(PeerId, Vec<u8>)>,
    punches: Vec<(PeerId, Vec<u8>)>,
    restarts: u32,
    /// The time the fake driver reports its results at.
    now: Instant,
}

impl Side {
    fn new(id: PeerId) -> Self {
        Self {
            id,
            engine: Engine::new(id, false),
            log: Vec::new(),
            outbox: Vec::new(),
            punches: Vec::new(),
            restarts: 0,
            now: t0(),
        }
    }

    /// Performs the engine's actions the way the actor would, at once.
    fn run(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            match &action {
                Action::Connect { peer, conn, .. } => {
                    assert!(self.engine.handle_created(*peer, *conn, Ok(())));
                }
                Action::CreateOffer { peer, conn } => {
                    let offer = Signal::Offer(format!("offer {} {conn}", self.id));
                    self.engine
                        .handle_local_signal(self.now, *peer, *conn, offer);
                }
                Action::RestartIce { peer, conn } => {
                    self.restarts += 1;
                    let offer = Signal::Restart(format!("restart {conn} {}", self.restarts));
                    self.engine
                        .handle_local_signal(self.now, *peer, *conn, offer);
                }
                Action::AcceptOffer {
                    peer, conn, digest, ..
                } => {
                    let answer = Signal::Answer {
                        sdp: format!("answer {conn}"),
                        offer: *digest,
                        took_ms: 0,
                    };
                    self.engine
                        .handle_local_signal(self.now, *peer, *conn, answer);
                }
                Action::Signal { to, payload } => {
                    let punch = matches!(Signal::decode(payload), Some(Signal::Punch { .. }));
                    let queue = if punch {
                        &mut self.punches
                    } else {
                        &mut self.outbox
                    };
                    queue.push((*to, payload.clone()));
                }
                _ => {}
            }
            self.log.push(action);
        }
    }

    /// The actions performed since the last call.
    fn take_log(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.log)
    }

    fn epoch(&mut self, now: Instant, epoch: u64, members: &[PeerId]) {
        let members = members
            .iter()
            .enumerate()
            .map(|(leaf, peer)| (leaf as u32, *peer))
            .collect();
        let own_leaf = 0;
        let secret = EpochSecret([7; 32]);
        self.engine
            .handle_epoch(now, epoch, secret, own_leaf, members, &[]);
        self.run();
    }

    fn conn(&self, peer: &PeerId) -> Option<&Connection> {
        self.engine.members.get(peer)?.conn.as_ref()
    }

    fn conn_id(&self, peer: &PeerId) -> ConnId {
        self.conn(peer).expect("a connection").id
    }

    fn state(&mut self, now: Instant, peer: PeerId, state: ConnectionState) {
        let conn = self.conn_id(&peer);
        self.engine.handle_state(now, peer, conn, state);
        self.run();
    }

    /// Connected on a path of this kind (the path measurement answered at once).
    fn connected(&mut self, now: Instant, peer: PeerId, path: MediaPath) {
        self.state(now, peer, ConnectionState::Connected);
        let conn = self.conn_id(&peer);
        self.engine.handle_path(now, peer, conn, Some((path, 12.0)));
        self.run();
    }

    fn timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        self.run();
    }

    /// `peer` answers our latest offer (or restart offer) to it, at `now`.
    fn answered_by(&mut self, now: Instant, peer: PeerId) {
        let answer = Signal::Answer {
            sdp: "answer".into(),
            offer: self.conn(&peer).and_then(|c| c.offered).expect("offered"),
            took_ms: 0,
        };
        self.engine.handle_signal(now, peer, answer.encode());
        self.run();
    }

    /// Takes the signals waiting to go out.
    fn sent(&mut self) -> Vec<(PeerId, Vec<u8>)> {
        std::mem::take(&mut self.outbox)
    }
}

/// Delivers every signal `from` has waiting to `to`.
fn deliver(now: Instant, from: &mut Side, to: &mut Side) -> usize {
    let signals = from.sent();
    let count = signals.len();
    for (recipient, payload) in signals {
        assert_eq!(recipient, to.id);
        to.engine.handle_signal(now, from.id, payload);
        to.run();
    }
    count
}

fn count(log: &[Action], what: fn(&Action) -> bool) -> usize {
    log.iter().filter(|action| what(action)).count()
}

/// Checks that what `a` did since its log was last taken replaced its connection `first`
/// to `b` (closed it, created one other), and that the new offer, delivered at `at`, is
/// answered and the answer taken.
fn assert_replaced_and_renegotiated(a: &mut Side, b: &mut Side, at: Instant, first: ConnId) {
    let log = a.take_log();
    assert!(
        log.iter()
            .any(|action| matches!(action, Action::Close { conn, .. } if *conn == first)),
        "the old connection is closed: {log:?}"
    );
    assert_eq!(count(&log, |a| matches!(a, Action::Connect { .. })), 1);
    assert_ne!(a.conn_id(&b.id), first);
    assert_eq!(deliver(at, a, b), 1, "a new offer goes out");
    deliver(at, b, a);
    assert_eq!(
        count(&a.take_log(), |a| matches!(a, Action::AcceptAnswer { .. })),
        1
    );
}

fn decoded(signals: &[(PeerId, Vec<u8>)]) -> Vec<Signal> {
    signals
        .iter()
        .map(|(_, payload)| Signal::decode(payload).expect("a signal"))
        .collect()
}

/// Both sides learn of each other in the same epoch; the lower one offers, the other
/// answers, and each ends with one connection whose offer digests match.
fn negotiated(now: Instant) -> (Side, Side) {
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    assert_eq!(deliver(now, &mut a, &mut b), 1, "the lower peer offers");
    (a, b)
}

#[test]
fn the_lower_peer_offers_and_the_answer_to_that_offer_is_taken() {
    let now = t0();
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    assert!(b.outbox.is_empty(), "the higher peer waits for the offer");
    assert_eq!(deliver(now, &mut a, &mut b), 1);
    assert_eq!(deliver(now, &mut b, &mut a), 1, "answered");
    let log = a.take_log();
    assert_eq!(count(&log, |a| matches!(a, Action::AcceptAnswer { .. })), 1);
    a.connected(now, high, MediaPath::Direct);
    let log = a.take_log();
    assert!(log.iter().any(|action| matches!(
        action,
        Action::Report(MediaEvent::Connection { state, path: "direct", rtt_ms: Some(_), .. })
            if state == "connected"
    )));
    assert_eq!(
        count(&log, |a| matches!(a, Action::SendAudio { on: true, .. })),
        1
    );
}

#[test]
fn glare_our_offer_in_flight_stands_and_theirs_is_ignored() {
    let now = t0();
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    let ours = a.conn_id(&high);
    a.take_log();
    // Both offer at once: the other side's offer crosses ours.
    let theirs = Signal::Offer("offer from the higher peer".into()).encode();
    a.engine.handle_signal(now, high, theirs);
    a.run();
    assert!(a.take_log().is_empty(), "our offer stands: {:?}", a.log);
    assert_eq!(a.conn_id(&high), ours);
    // The other side answers ours, which is taken.
    deliver(now, &mut a, &mut b);
    deliver(now, &mut b, &mut a);
    assert_eq!(
        count(&a.take_log(), |a| matches!(a, Action::AcceptAnswer { .. })),
        1
    );
    // Once ICE runs, an offer from them is a new connection they want: answered.
    a.state(now, high, ConnectionState::Connecting);
    a.take_log();
    let again = Signal::Offer("a later offer from the higher peer".into()).encode();
    a.engine.handle_signal(now, high, again);
    a.run();
    let log = a.take_log();
    assert_eq!(count(&log, |a| matches!(a, Action::Close { .. })), 1);
    assert_eq!(
        count(&log, |a| matches!(
            a,
            Action::AcceptOffer { restart: false, .. }
        )),
        1
    );
}

#[test]
fn a_lost_offer_is_made_again_on_a_new_connection() {
    let now = t0();
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    let first = a.conn_id(&high);
    assert_eq!(a.sent().len(), 1, "the offer is lost on the way");
    a.take_log();
    a.timeout(now + NEGOTIATION_TIMEOUT - Duration::from_secs(1));
    assert!(a.outbox.is_empty(), "not yet");
    a.timeout(now + NEGOTIATION_TIMEOUT);
    assert_replaced_and_renegotiated(&mut a, &mut b, now + NEGOTIATION_TIMEOUT, first);
}

#[test]
fn an_unanswered_offer_is_replaced_and_the_late_answer_to_it_ignored() {
    let now = t0();
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    deliver(now, &mut a, &mut b);
    let late_answer = b.sent();
    assert_eq!(late_answer.len(), 1, "answered, but the answer is delayed");
    let b_conn = b.conn_id(&low);
    let later = now + NEGOTIATION_TIMEOUT;
    a.timeout(later);
    deliver(later, &mut a, &mut b);
    assert_ne!(
        b.conn_id(&low),
        b_conn,
        "the new offer replaces the connection"
    );
    // The answer to the replaced offer arrives now: ignored.
    a.take_log();
    for (_, payload) in late_answer {
        a.engine.handle_signal(later, high, payload);
    }
    a.run();
    assert!(a.take_log().is_empty(), "stale answer ignored");
    deliver(later, &mut b, &mut a);
    assert_eq!(
        count(&a.take_log(), |a| matches!(a, Action::AcceptAnswer { .. })),
        1
    );
}

#[test]
fn a_repeated_signal_is_taken_once() {
    let now = t0();
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    let offer = a.sent();
    for _ in 0..2 {
        for (_, payload) in &offer {
            b.engine.handle_signal(now, low, payload.clone());
            b.run();
        }
    }
    assert_eq!(
        count(&b.take_log(), |a| matches!(a, Action::Connect { .. })),
        1
    );
    assert_eq!(b.sent().len(), 1, "one answer");
}

#[test]
fn a_broken_path_is_restarted_as_the_repair_policy_says_then_replaced() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    let high = b.id;
    deliver(now, &mut b, &mut a);
    a.connected(now, high, MediaPath::Relayed);
    // (Its direct path attempt beside the relayed one is another test's subject.)
    a.sent();
    let conn = a.conn_id(&high);
    a.take_log();
    let broke = now + Duration::from_secs(10);
    a.state(broke, high, ConnectionState::Disconnected);
    let log = a.take_log();
    assert_eq!(
        count(&log, |a| matches!(a, Action::SendAudio { on: false, .. })),
        1
    );
    a.timeout(broke + RESTART_AFTER / 2);
    assert!(a.outbox.is_empty(), "it may come back by itself");
    // First restart; its offer is lost and goes again soon.
    let first = broke + RESTART_AFTER;
    a.timeout(first);
    assert!(matches!(decoded(&a.sent())[..], [Signal::Restart(_)]));
    a.timeout(first + RESTART_UNANSWERED_RETRY / 2);
    assert!(a.outbox.is_empty());
    let second = first + RESTART_UNANSWERED_RETRY;
    a.timeout(second);
    assert_eq!(a.sent().len(), 1, "a lost restart offer is retried soon");
    // Answered restarts get the relay's wait, each on the same connection.
    let mut at = second;
    for answered in 1..=MAX_ICE_RESTARTS {
        a.answered_by(at, high);
        assert_eq!(
            a.conn(&high).and_then(|c| c.broken).map(|b| b.answered),
            Some(answered)
        );
        a.timeout(at + RESTART_RETRY - Duration::from_secs(1));
        assert!(a.outbox.is_empty(), "an answered restart gets its time");
        at += RESTART_RETRY;
        a.timeout(at);
        if answered < MAX_ICE_RESTARTS {
            assert!(matches!(decoded(&a.sent())[..], [Signal::Restart(_)]));
            assert_eq!(a.conn_id(&high), conn);
        }
    }
    // Enough restarts: a new connection.
    assert_ne!(a.conn_id(&high), conn);
    assert!(matches!(decoded(&a.sent())[..], [Signal::Offer(_)]));
    // What we received stays: the member's frames are ordered by their SFrame counters,
    // which go on over the new connection.
    let log = a.take_log();
    assert!(
        !log.iter()
            .any(|action| matches!(action, Action::ForgetAudio { .. }))
    );
}

#[test]
fn a_direct_path_is_retried_sooner_once_and_a_failed_one_at_once() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    let high = b.id;
    deliver(now, &mut b, &mut a);
    a.connected(now, high, MediaPath::Direct);
    // Failed: no point waiting for it to come back.
    a.state(now, high, ConnectionState::Failed);
    a.timeout(now);
    assert_eq!(a.sent().len(), 1, "restarted at once");
    a.answered_by(now, high);
    a.timeout(now + RESTART_RETRY_DIRECT - Duration::from_secs(1));
    assert!(a.outbox.is_empty());
    a.timeout(now + RESTART_RETRY_DIRECT);
    assert_eq!(a.sent().len(), 1, "a direct path gets the short wait once");
    // Connected again: repaired, nothing more.
    a.connected(now + Duration::from_secs(5), high, MediaPath::Direct);
    assert!(a.conn(&high).is_some_and(|c| c.broken.is_none()));
    a.timeout(now + Duration::from_secs(60));
    assert!(a.outbox.is_empty());
    // The answering side never restarts.
    b.state(now, a.id, ConnectionState::Failed);
    b.timeout(now + Duration::from_secs(60));
    assert!(b.outbox.is_empty());
}

#[test]
fn a_silent_relayed_path_is_repaired_when_the_relay_is_back() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    let high = b.id;
    deliver(now, &mut b, &mut a);
    a.connected(now, high, MediaPath::Relayed);
    // (Its direct path attempt beside the relayed one is another test's subject.)
    a.sent();
    a.engine.handle_heard(high, now);
    let lost = now + Duration::from_secs(1);
    a.engine.handle_relay_lost(lost);
    a.engine.handle_ice_servers(lost + Duration::from_secs(3));
    a.run();
    assert!(matches!(decoded(&a.sent())[..], [Signal::Restart(_)]));

    // A path whose frames kept coming is left alone.
    let (mut c, mut d) = negotiated(now);
    let high = d.id;
    deliver(now, &mut d, &mut c);
    c.connected(now, high, MediaPath::Relayed);
    // (Its direct path attempt beside the relayed one is another test's subject.)
    c.sent();
    c.engine.handle_relay_lost(lost);
    c.engine.handle_heard(high, lost + Duration::from_secs(1));
    c.engine.handle_ice_servers(lost + Duration::from_secs(3));
    c.run();
    assert!(c.outbox.is_empty());
}

#[test]
fn a_removed_peer_leaves_nothing_and_late_news_of_it_is_ignored() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    let high = b.id;
    deliver(now, &mut b, &mut a);
    a.connected(now, high, MediaPath::Direct);
    let conn = a.conn_id(&high);
    a.take_log();
    a.epoch(now, 2, &[a.id]);
    let log = a.take_log();
    assert!(
        log.iter()
            .any(|action| matches!(action, Action::Close { conn: c, .. } if *c == conn))
    );
    assert!(a.engine.members.is_empty(), "nothing of the peer is left");
    // Late news about it: ignored, nothing done.
    a.engine
        .handle_state(now, high, conn, ConnectionState::Closed);
    a.engine
        .handle_path(now, high, conn, Some((MediaPath::Relayed, 1.0)));
    a.engine
        .handle_local_signal(now, high, conn, Signal::Offer("late".into()));
    a.engine.handle_failed(now, high, conn, "late".into());
    a.engine.handle_heard(high, now);
    assert!(
        !a.engine.handle_created(high, conn, Ok(())),
        "closed by the driver"
    );
    let answer = Signal::Answer {
        sdp: "late".into(),
        offer: 1,
        took_ms: 0,
    };
    a.engine.handle_signal(now, high, answer.encode());
    a.timeout(now + Duration::from_secs(60));
    assert!(a.take_log().is_empty());
    assert!(a.engine.members.is_empty());
}

#[test]
fn an_offer_before_its_epoch_is_answered_once_the_sender_is_a_member() {
    let now = t0();
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.epoch(now, 1, &[low, high]);
    // b has not yet seen the epoch that makes a a member.
    deliver(now, &mut a, &mut b);
    assert!(b.outbox.is_empty(), "kept, not answered");
    b.epoch(now + Duration::from_secs(1), 1, &[low, high]);
    assert_eq!(deliver(now, &mut b, &mut a), 1, "answered");
    // Too old by the time the epoch comes: forgotten.
    let (mut c, mut d) = (Side::new(low), Side::new(high));
    c.epoch(now, 1, &[low, high]);
    deliver(now, &mut c, &mut d);
    d.epoch(now + NEGOTIATION_TIMEOUT, 1, &[low, high]);
    assert!(d.outbox.is_empty());
}

#[test]
fn a_closed_connection_is_replaced_and_reset_forgets_everything() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    let high = b.id;
    deliver(now, &mut b, &mut a);
    a.connected(now, high, MediaPath::Direct);
    let conn = a.conn_id(&high);
    a.state(now, high, ConnectionState::Closed);
    assert_ne!(a.conn_id(&high), conn);
    assert!(matches!(decoded(&a.sent())[..], [Signal::Offer(_)]));
    a.take_log();
    a.engine.handle_reset();
    a.run();
    let log = a.take_log();
    assert!(
        log.iter()
            .any(|action| matches!(action, Action::ResetAudio))
    );
    assert_eq!(count(&log, |a| matches!(a, Action::Close { .. })), 1);
    assert!(a.engine.members.is_empty());
}

#[test]
fn a_handshake_stalled_on_a_working_path_is_replaced_by_the_offering_side() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    deliver(now, &mut b, &mut a);
    let (low, high) = (a.id, b.id);
    let (first_a, first_b) = (a.conn_id(&high), b.conn_id(&low));
    for (side, peer, conn) in [(&mut a, high, first_a), (&mut b, low, first_b)] {
        side.state(now, peer, ConnectionState::Connecting);
        side.engine.handle_ice_connected(now, peer, conn);
        side.run();
    }
    a.take_log();
    b.take_log();

    // Within the timeout the handshake may still complete: nothing happens.
    let almost = now + HANDSHAKE_TIMEOUT - Duration::from_millis(1);
    a.timeout(almost);
    b.timeout(almost);
    assert!(a.take_log().is_empty() && b.take_log().is_empty());

    let late = now + HANDSHAKE_TIMEOUT;
    b.timeout(late);
    assert!(
        b.outbox.is_empty(),
        "the answering side waits for a new offer"
    );
    assert_eq!(b.conn_id(&low), first_b);
    a.timeout(late);
    assert_replaced_and_renegotiated(&mut a, &mut b, late, first_a);
    assert_ne!(
        b.conn_id(&low),
        first_b,
        "the answering side takes it afresh"
    );
}

#[test]
fn a_connection_once_secured_is_never_replaced_for_its_handshake() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    deliver(now, &mut b, &mut a);
    let high = b.id;
    let conn = a.conn_id(&high);
    a.engine.handle_ice_connected(now, high, conn);
    a.connected(now, high, MediaPath::Direct);
    // Later the path breaks and ICE finds it again (a restart): DTLS is long done, and
    // the connection waits for nothing.
    let later = now + Duration::from_secs(30);
    a.state(later, high, ConnectionState::Connecting);
    a.engine.handle_ice_connected(later, high, conn);
    a.take_log();
    a.timeout(later + HANDSHAKE_TIMEOUT * 2);
    assert_eq!(a.conn_id(&high), conn);
    assert_eq!(
        count(&a.take_log(), |a| matches!(a, Action::Close { .. })),
        0
    );
}

#[test]
fn a_new_connection_whose_path_ice_just_found_is_not_restarted_while_dtls_runs() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    let high = b.id;
    deliver(now, &mut b, &mut a);
    let conn = a.conn_id(&high);
    // The first checks fail (a long, slow path): restarted at once, and answered.
    a.state(now, high, ConnectionState::Failed);
    a.timeout(now);
    assert_eq!(a.sent().len(), 1, "restarted at once");
    a.answered_by(now, high);
    // ICE finds a path just before the next restart would be due; DTLS starts on it.
    let found = now + RESTART_RETRY_DIRECT - Duration::from_millis(500);
    a.state(found, high, ConnectionState::Connecting);
    a.engine.handle_ice_connected(found, high, conn);
    a.take_log();
    a.timeout(now + RESTART_RETRY_DIRECT);
    assert!(a.outbox.is_empty(), "no restart over a handshake under way");
    assert!(a.take_log().is_empty());
    // The handshake completes: connected, repaired.
    a.connected(found + Duration::from_secs(2), high, MediaPath::Direct);
    assert_eq!(a.conn_id(&high), conn);
    assert!(a.conn(&high).is_some_and(|c| c.broken.is_none()));
    // Had it stalled, the handshake timeout would have replaced it (tested above).
}

/// Simultaneous open (`transport::sdp`): the answer says how long the answerer took; the
/// offerer, as it takes the answer, tells the answerer to start checking the reflexive
/// candidates (`Punch`) and holds the answer's own back for half the signalling round trip
/// (offer to answer, less the answerer's time), so both start together; the answerer starts
/// on that word, and only for the offer it answered.
#[test]
fn the_offerer_punches_as_it_takes_the_answer_and_waits_half_the_signalling_round_trip() {
    let now = t0();
    let ms = Duration::from_millis;
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.now = now;
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    // The offer takes 100 ms to arrive; the answerer needs 300 ms (gathering).
    b.now = now + ms(400);
    assert_eq!(deliver(now + ms(100), &mut a, &mut b), 1);
    let answer = decoded(&b.outbox);
    let offer = a.conn(&high).and_then(|c| c.offered).expect("offered");
    assert!(
        matches!(answer[..], [Signal::Answer { offer: o, took_ms: 300, .. }] if o == offer),
        "{answer:?}"
    );
    assert!(
        !b.take_log()
            .iter()
            .any(|action| matches!(action, Action::ReleaseCandidates { .. }))
    );
    // The answer arrives 100 ms later: 200 ms of signalling round trip.
    deliver(now + ms(500), &mut b, &mut a);
    let log = a.take_log();
    assert!(
        log.iter().any(|action| matches!(
            action,
            Action::AcceptAnswer { hold_back, .. } if *hold_back == ms(100)
        )),
        "{log:?}"
    );
    assert!(a.outbox.is_empty());
    assert_eq!(decoded(&a.punches), vec![Signal::Punch { offer }]);
    // A word about another offer starts nothing; the word about ours starts the checks.
    let stray = Signal::Punch { offer: offer ^ 1 }.encode();
    b.engine.handle_signal(now + ms(550), low, stray);
    b.run();
    assert!(b.take_log().is_empty());
    for (_, punch) in std::mem::take(&mut a.punches) {
        b.engine.handle_signal(now + ms(600), low, punch);
    }
    b.run();
    let conn = b.conn_id(&low);
    let log = b.take_log();
    assert!(
        log.iter().any(|action| matches!(
            action,
            Action::ReleaseCandidates { peer, conn: c } if *peer == low && *c == conn
        )),
        "{log:?}"
    );
}

/// An answer that took far longer than its round trip could (a retried signal, a stalled
/// process) does not hold the checks back for long.
#[test]
fn the_hold_back_is_capped() {
    let now = t0();
    let (low, high) = pair();
    let (mut a, mut b) = (Side::new(low), Side::new(high));
    a.now = now;
    a.epoch(now, 1, &[low, high]);
    b.epoch(now, 1, &[low, high]);
    deliver(now, &mut a, &mut b);
    deliver(now + Duration::from_secs(30), &mut b, &mut a);
    assert!(a.take_log().iter().any(|action| matches!(
        action,
        Action::AcceptAnswer { hold_back, .. } if *hold_back == MAX_HOLD_BACK
    )));
}

#[test]
fn what_we_send_and_want_of_video_is_told_to_every_member_and_to_each_who_joins_later() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    a.sent();
    // Our camera off and incoming video off: each member hears both.
    a.engine.handle_sending(Some(false), None);
    a.engine.handle_incoming_video(false);
    a.engine.handle_sending(Some(false), None); // no change: not told again
    a.run();
    let told = a.sent();
    assert_eq!(
        decoded(&told),
        vec![
            Signal::Sending {
                camera: false,
                screen: false
            },
            Signal::Video { receive: false },
        ]
    );
    // The member acts on them, between the steps of a negotiation as much as after.
    for (_, payload) in told.iter().chain(told.iter()) {
        b.engine.handle_signal(now, a.id, payload.clone());
    }
    b.run();
    let log = b.take_log();
    assert_eq!(
        count(&log, |a| matches!(
            a,
            Action::PeerSending {
                camera: false,
                screen: false,
                ..
            }
        )),
        2,
        "a state is taken each time it comes: {log:?}"
    );
    assert_eq!(
        count(&log, |a| matches!(
            a,
            Action::VideoWanted { wanted: false, .. }
        )),
        2
    );
    // Someone joins: it hears the same at once.
    let carol = PeerId::random();
    a.epoch(now, 2, &[a.id, b.id, carol]);
    let to_carol: Vec<(PeerId, Vec<u8>)> = a
        .sent()
        .into_iter()
        .filter(|(to, _)| *to == carol)
        .collect();
    let signals = decoded(&to_carol);
    assert!(
        signals.contains(&Signal::Video { receive: false }),
        "{signals:?}"
    );
    assert!(
        signals.contains(&Signal::Sending {
            camera: false,
            screen: false
        }),
        "{signals:?}"
    );
}

/// The direct path attempt beside `peer`'s connection, if any.
fn upgrade_of(side: &Side, peer: &PeerId) -> Option<ConnId> {
    Some(side.engine.members.get(peer)?.upgrade.as_ref()?.id)
}

/// The direct path attempt `conn` connects on a direct path (measured at once).
fn upgrade_connected(side: &mut Side, now: Instant, peer: PeerId, conn: ConnId) {
    side.engine
        .handle_state(now, peer, conn, ConnectionState::Connected);
    side.run();
    side.engine
        .handle_path(now, peer, conn, Some((MediaPath::Direct, 8.0)));
    side.run();
}

#[test]
fn a_relayed_connection_gets_a_direct_one_beside_it_that_takes_over_without_a_gap() {
    let joined = t0();
    let (mut a, mut b) = negotiated(joined);
    let high = b.id;
    deliver(joined, &mut b, &mut a);
    // Relay first: the first pair that worked was relayed, and media flows on it.
    let now = joined + Duration::from_millis(900);
    a.connected(now, high, MediaPath::Relayed);
    b.connected(now, a.id, MediaPath::Relayed);
    let relayed = a.conn_id(&high);
    let their_relayed = b.conn_id(&a.id);
    let log = a.take_log();
    assert!(log.iter().any(|action| matches!(
        action,
        Action::Report(MediaEvent::Connection {
            path: "relayed",
            previous_path: None,
            since_join_ms: 900,
            ..
        })
    )));
    // The offering side looks for a direct path on a second connection, without relayed
    // candidates, offered as such; the answering side only answers.
    assert!(log.iter().any(|action| matches!(
        action,
        Action::Connect {
            direct_only: true,
            ..
        }
    )));
    assert!(b.outbox.is_empty());
    let attempt = upgrade_of(&a, &high).expect("an attempt");
    assert!(matches!(decoded(&a.outbox)[..], [Signal::Upgrade(_)]));
    deliver(now, &mut a, &mut b);
    assert_eq!(b.conn_id(&a.id), their_relayed, "its connection stays");
    let their_attempt = upgrade_of(&b, &a.id).expect("answered on a second connection");
    assert!(b.take_log().iter().any(|action| matches!(
        action,
        Action::Connect { direct_only: true, conn, .. } if *conn == their_attempt
    )));
    assert!(matches!(decoded(&b.outbox)[..], [Signal::Answer { .. }]));
    deliver(now, &mut b, &mut a);
    assert!(
        a.take_log().iter().any(|action| matches!(
            action,
            Action::AcceptAnswer { conn, .. } if *conn == attempt
        )),
        "the answer goes to the attempt, not to the relayed connection"
    );
    // The direct one connects: it takes over. Audio goes out on both for a while, the
    // event tells the switch.
    let switched = now + Duration::from_millis(1500);
    upgrade_connected(&mut a, switched, high, attempt);
    assert_eq!(a.conn_id(&high), attempt);
    assert_eq!(upgrade_of(&a, &high), None);
    let log = a.take_log();
    assert!(log.iter().any(|action| matches!(
        action,
        Action::SendAudio { conn, on: true, .. } if *conn == attempt
    )));
    assert!(!log.iter().any(|action| matches!(
        action,
        Action::SendAudio { on: false, .. } | Action::Close { .. }
    )));
    assert!(log.iter().any(|action| matches!(
        action,
        Action::Report(MediaEvent::Connection {
            path: "direct",
            previous_path: Some("relayed"),
            since_join_ms: 2400,
            ..
        })
    )));
    upgrade_connected(&mut b, switched, a.id, their_attempt);
    assert_eq!(b.conn_id(&a.id), their_attempt);
    // The relayed connections close once what is on its way over the relay arrived.
    a.timeout(switched + RETIRE_AFTER - Duration::from_millis(1));
    assert!(
        !a.take_log()
            .iter()
            .any(|action| matches!(action, Action::Close { .. }))
    );
    a.timeout(switched + RETIRE_AFTER);
    b.timeout(switched + RETIRE_AFTER);
    for (side, old) in [(&mut a, relayed), (&mut b, their_relayed)] {
        let closed: Vec<ConnId> = side
            .take_log()
            .iter()
            .filter_map(|action| match action {
                Action::Close { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect();
        assert_eq!(closed, vec![old]);
    }
    // Late news of the retired connection changes nothing.
    a.engine
        .handle_state(switched, high, relayed, ConnectionState::Failed);
    a.run();
    assert!(
        a.conn(&high)
            .is_some_and(|c| c.broken.is_none() && c.connected())
    );
    // Direct now: no more attempts.
    a.timeout(switched + Duration::from_secs(60));
    assert!(upgrade_of(&a, &high).is_none());
    assert!(a.outbox.is_empty());
}

#[test]
fn direct_path_attempts_that_find_nothing_are_made_again_a_few_times() {
    let joined = t0();
    let (mut a, mut b) = negotiated(joined);
    let high = b.id;
    deliver(joined, &mut b, &mut a);
    a.connected(joined, high, MediaPath::Relayed);
    let mut now = joined;
    let mut started = vec![];
    for _ in 0..60 {
        if let Some(attempt) = upgrade_of(&a, &high)
            && started.last() != Some(&(attempt, now))
            && !started.iter().any(|(c, _)| *c == attempt)
        {
            started.push((attempt, now));
            // The other side answers every attempt; no direct pair ever works.
            deliver(now, &mut a, &mut b);
            deliver(now, &mut b, &mut a);
        }
        now += Duration::from_secs(1);
        a.timeout(now);
        b.timeout(now);
    }
    assert_eq!(
        started.len() as u32,
        upgrade::MAX_UPGRADE_ATTEMPTS,
        "{started:?}"
    );
    // Each ran out of time, then waited 1 s, 2 s, 4 s before the next.
    let gaps: Vec<u64> = started
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_secs())
        .collect();
    assert_eq!(
        gaps,
        vec![9, 10, 12],
        "timeout (8 s, on the 1 s timer) + back-off"
    );
    // The relayed connection carried on throughout; every attempt was closed on both sides.
    assert!(a.conn(&high).is_some_and(Connection::connected));
    assert!(upgrade_of(&a, &high).is_none() && upgrade_of(&b, &a.id).is_none());
    a.timeout(now + Duration::from_secs(120));
    assert!(upgrade_of(&a, &high).is_none(), "the attempts stop");
}

#[test]
fn no_direct_path_is_looked_for_beside_a_direct_connection_or_when_relay_only() {
    let now = t0();
    let (mut a, mut b) = negotiated(now);
    let high = b.id;
    deliver(now, &mut b, &mut a);
    a.connected(now, high, MediaPath::Direct);
    a.timeout(now + Duration::from_secs(5));
    assert!(upgrade_of(&a, &high).is_none());
    assert!(a.outbox.is_empty());

    let (low, high) = pair();
    let mut c = Side::new(low);
    c.engine = Engine::new(low, true);
    c.epoch(now, 1, &[low, high]);
    c.sent();
    c.connected(now, high, MediaPath::Relayed);
    c.timeout(now + Duration::from_secs(5));
    assert!(upgrade_of(&c, &high).is_none(), "our addresses stay hidden");
    assert!(c.outbox.is_empty());
}
