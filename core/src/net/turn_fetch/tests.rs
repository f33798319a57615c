//! TURN credential rounds with simulated time.

use rand::SeedableRng;

use super::*;

/// Wall-clock seconds at the simulation's start.
const UNIX0: u64 = 1_800_000_000;

fn server(expires_unix: u64) -> IceServer {
    IceServer {
        urls: vec!["turn:192.0.2.1:3478?transport=udp".into()],
        username: format!("{expires_unix}:someone"),
        credential: "secret".into(),
        expires_unix,
        tls_pin: None,
    }
}

struct Sim {
    turn: TurnFetch<u64>,
    t0: Instant,
    next_id: u64,
    relays: Vec<PeerId>,
}

impl Sim {
    #[allow(clippy::disallowed_methods)] // the simulation's epoch; time is simulated from here
    fn new(relays: usize) -> Self {
        let mut relays: Vec<PeerId> = (0..relays).map(|_| PeerId::random()).collect();
        relays.sort();
        Self {
            turn: TurnFetch::new(StdRng::seed_from_u64(3)),
            t0: Instant::now(),
            next_id: 0,
            relays,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    /// Starts a round at `t` seconds; returns the request ids per relay asked.
    fn start(&mut self, t: u64) -> Vec<(u64, PeerId)> {
        match self.turn.start(UNIX0 + t, self.relays.clone()) {
            Start::Ask(relays) => relays
                .into_iter()
                .map(|relay| {
                    self.next_id += 1;
                    self.turn.requested(self.next_id, relay);
                    (self.next_id, relay)
                })
                .collect(),
            other => panic!("expected a round, got {other:?}"),
        }
    }

    fn outcome(&mut self, t: u64) -> Option<Outcome> {
        self.turn
            .poll_outcome(self.at(t), UNIX0 + t, self.relays.clone(), true)
    }
}

#[test]
fn a_round_asks_every_relay_and_ends_when_all_answered() {
    let mut sim = Sim::new(3);
    let asked = sim.start(0);
    assert_eq!(
        asked.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        sim.relays,
        "every relay, in order"
    );
    assert_eq!(sim.turn.start(UNIX0, sim.relays.clone()), Start::Joined);
    sim.turn
        .handle_credentials(asked[0].0, asked[0].1, vec![server(UNIX0 + 3600)]);
    assert_eq!(sim.outcome(0), None, "two still to answer");
    sim.turn
        .handle_failed(asked[1].0, asked[1].1, &OutboundFailure::Timeout);
    // An answer to no request of the round changes nothing.
    sim.turn
        .handle_credentials(99, asked[2].1, vec![server(UNIX0 + 7200)]);
    assert_eq!(sim.outcome(0), None);
    sim.turn
        .handle_credentials(asked[2].0, asked[2].1, vec![server(UNIX0 + 1800)]);
    assert_eq!(
        sim.outcome(1),
        Some(Outcome::Servers(vec![
            server(UNIX0 + 3600),
            server(UNIX0 + 1800)
        ]))
    );
    assert!(!sim.turn.in_round());
    // Served from cache while fresh.
    assert!(
        matches!(sim.turn.start(UNIX0 + 60, sim.relays.clone()), Start::Cached(s) if s.len() == 2)
    );
}

#[test]
fn credentials_are_renewed_before_the_first_expires() {
    let mut sim = Sim::new(1);
    let asked = sim.start(0);
    sim.turn
        .handle_credentials(asked[0].0, asked[0].1, vec![server(UNIX0 + 600)]);
    sim.outcome(0);
    // 600 s left, renewed 120 s before: at 480 s.
    assert_eq!(sim.turn.poll_timeout(), Some(sim.at(480)));
    assert!(!sim.turn.handle_timeout(sim.at(479)));
    assert!(sim.turn.handle_timeout(sim.at(480)));
    assert_eq!(sim.turn.poll_timeout(), None);
    // Within the margin the cache is not used: a new round.
    assert_eq!(sim.start(480).len(), 1);
}

#[test]
fn credentials_about_to_expire_are_renewed_after_ten_seconds() {
    let mut sim = Sim::new(1);
    let asked = sim.start(0);
    sim.turn
        .handle_credentials(asked[0].0, asked[0].1, vec![server(UNIX0 + 60)]);
    sim.outcome(0);
    assert_eq!(sim.turn.poll_timeout(), Some(sim.at(10)));
}

#[test]
fn a_round_refused_everywhere_is_a_refusal_and_is_retried_with_back_off() {
    let mut sim = Sim::new(2);
    let mut now = 0;
    let mut nominal = TURN_RETRY_MIN;
    for _ in 0..8 {
        let asked = sim.start(now);
        for (id, relay) in asked {
            sim.turn.handle_refused(id, relay, TurnRefusal::NotAllowed);
        }
        assert!(matches!(
            sim.outcome(now),
            Some(Outcome::Refused {
                reason: TurnRefusal::NotAllowed,
                ..
            })
        ));
        let at = sim.turn.poll_timeout().expect("a retry");
        let wait = at.duration_since(sim.at(now));
        assert!(
            wait >= nominal / 2 && wait <= nominal,
            "{wait:?} against {nominal:?}"
        );
        assert!(sim.turn.handle_timeout(at));
        now = at.duration_since(sim.t0).as_secs() + 1;
        nominal = (nominal * 2).min(TURN_RETRY_MAX);
    }
    assert_eq!(nominal, TURN_RETRY_MAX);
    // Success resets the back-off.
    let asked = sim.start(now);
    for (id, relay) in asked {
        sim.turn
            .handle_credentials(id, relay, vec![server(UNIX0 + 10_000)]);
    }
    assert!(matches!(sim.outcome(now), Some(Outcome::Servers(_))));
    assert_eq!(sim.turn.backoff.attempt(), 0);
}

#[test]
fn relays_without_turn_are_not_asked_again() {
    let mut sim = Sim::new(3);
    let asked = sim.start(0);
    sim.turn
        .handle_refused(asked[0].0, asked[0].1, TurnRefusal::Unavailable);
    sim.turn.handle_failed(
        asked[1].0,
        asked[1].1,
        &OutboundFailure::UnsupportedProtocols,
    );
    sim.turn
        .handle_failed(asked[2].0, asked[2].1, &OutboundFailure::Timeout);
    // Nothing received, the last answer a refusal: the callers are told.
    assert!(matches!(sim.outcome(0), Some(Outcome::Refused { .. })));
    let again = sim.start(10);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, asked[2].1, "only the relay that may serve TURN");
    assert!(!sim.turn.relay_connected(asked[0].1), "nor on reconnection");
}

#[test]
fn no_retry_without_a_relay_that_may_serve_turn_or_without_media() {
    let mut sim = Sim::new(1);
    let asked = sim.start(0);
    sim.turn.handle_failed(
        asked[0].0,
        asked[0].1,
        &OutboundFailure::UnsupportedProtocols,
    );
    assert_eq!(sim.outcome(0), Some(Outcome::Servers(Vec::new())));
    assert_eq!(sim.turn.poll_timeout(), None);

    let mut sim = Sim::new(1);
    let asked = sim.start(0);
    sim.turn
        .handle_failed(asked[0].0, asked[0].1, &OutboundFailure::Timeout);
    let relays = sim.relays.clone();
    let outcome = sim.turn.poll_outcome(sim.at(0), UNIX0, relays, false);
    assert_eq!(outcome, Some(Outcome::Servers(Vec::new())));
    assert_eq!(sim.turn.poll_timeout(), None, "the media plane wants none");
}

#[test]
fn a_round_without_relays_ends_at_once() {
    let mut sim = Sim::new(0);
    assert!(sim.start(0).is_empty());
    assert_eq!(sim.outcome(0), Some(Outcome::Servers(Vec::new())));
    assert_eq!(sim.turn.poll_timeout(), None);
}

#[test]
fn a_relay_connecting_asks_for_fresh_credentials_unless_a_round_is_under_way() {
    let mut sim = Sim::new(1);
    let relay = sim.relays[0];
    let asked = sim.start(0);
    assert!(!sim.turn.relay_connected(relay), "a round is under way");
    sim.turn
        .handle_credentials(asked[0].0, relay, vec![server(UNIX0 + 3600)]);
    sim.outcome(0);
    assert!(sim.turn.relay_connected(relay));
    // The cache was dropped: the next request is a round.
    assert_eq!(sim.start(1).len(), 1);
}

#[test]
fn identify_tells_which_relays_serve_turn() {
    let mut sim = Sim::new(1);
    let relay = sim.relays[0];
    sim.turn.handle_relay_protocols(relay, &[]);
    let asked = sim.start(0);
    assert_eq!(asked.len(), 1, "an empty list tells nothing");
    sim.turn
        .handle_failed(asked[0].0, relay, &OutboundFailure::Timeout);
    sim.outcome(0);
    sim.turn
        .handle_relay_protocols(relay, &[StreamProtocol::new("/ipfs/ping/1.0.0")]);
    assert!(sim.start(1).is_empty());
    sim.outcome(1);
    sim.turn.handle_relay_protocols(relay, &[TURN_PROTOCOL]);
    assert_eq!(sim.start(2).len(), 1);
}
