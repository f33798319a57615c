//! The lobby: waiting for the host, leaving it, its bound.

use super::*;

#[test]
fn a_lobby_joiner_waits_learns_nothing_and_enters_when_the_host_approves() {
    let mut sim = Sim::new();
    let start = sim.now;
    let host = sim.lobby_host();
    let early = sim.joiner(1, host);
    sim.set_lobby(early);
    // Admit a first member so that there is a group to hide.
    sim.run_until(Duration::from_secs(3), |s| {
        s.nodes[&host]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::Knocking { .. }))
    })
    .expect("knock");
    sim.node(host).machine.approve(start, early).unwrap();
    sim.drain(host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, early]))
        .expect("first member in");

    let identity = Identity::generate();
    let late = sim.joiner_with(&identity, 1, early, Some(host));
    sim.set_lobby(late);
    sim.run_for(Duration::from_secs(5));
    assert!(sim.nodes[&late].events.contains(&MeetingEvent::Waiting));
    assert!(
        sim.nodes[&host]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::Knocking { peer_id, .. } if *peer_id == late))
    );
    assert!(
        sim.nodes[&late].machine.epoch().is_none(),
        "not in the group before approval"
    );
    // It was never told who is in the meeting beyond the peers it greeted itself.
    let told: Vec<PeerId> = sim.nodes[&late].machine.peers.keys().copied().collect();
    assert!(told.iter().all(|p| *p == host || *p == early), "{told:?}");
    assert!(
        sim.nodes[&late]
            .events
            .iter()
            .all(|e| !matches!(e, MeetingEvent::MemberJoined { .. }))
    );
    // Only the host approves.
    let now = sim.now;
    assert!(sim.node(early).machine.approve(now, late).is_err());
    sim.approve(host, late);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, early, late]))
        .expect("approved joiner in");
}

fn lobby_left(sim: &Sim, host: PeerId) -> Vec<PeerId> {
    sim.nodes[&host]
        .events
        .iter()
        .filter_map(|e| match e {
            MeetingEvent::LobbyLeft { peer_id, .. } => Some(*peer_id),
            _ => None,
        })
        .collect()
}

fn knocks(sim: &Sim, host: PeerId, peer: PeerId) -> usize {
    sim.nodes[&host]
        .events
        .iter()
        .filter(|e| matches!(e, MeetingEvent::Knocking { peer_id, .. } if *peer_id == peer))
        .count()
}

#[test]
fn a_lobby_joiner_that_goes_away_leaves_the_lobby_and_the_host_is_told() {
    let mut sim = Sim::new();
    let host = sim.lobby_host();
    let identity = Identity::generate();
    let joiner = sim.joiner_with(&identity, 1, host, Some(host));
    sim.set_lobby(joiner);
    // While it keeps asking, it stays listed, well past the expiry.
    let expiry = Config::default().lobby_expiry;
    sim.run_for(expiry * 2);
    assert!(sim.nodes[&joiner].events.contains(&MeetingEvent::Waiting));
    assert_eq!(knocks(&sim, host, joiner), 1);
    assert!(lobby_left(&sim, host).is_empty());
    assert!(sim.nodes[&host].machine.knocking.contains_key(&joiner));
    // It goes away without a word: within the expiry (plus a greeting interval) the
    // host is told, and can no longer let it in.
    sim.node(joiner).alive = false;
    let gone = sim
        .run_until(expiry + Duration::from_secs(6), |s| {
            !lobby_left(s, host).is_empty()
        })
        .expect("the host was told");
    assert!(
        gone >= expiry - Config::default().rehello_interval,
        "{gone:?}"
    );
    assert_eq!(lobby_left(&sim, host), vec![joiner]);
    assert_eq!(sim.nodes[&host].machine.stats().lobby_expired, 1);
    let now = sim.now;
    assert!(sim.node(host).machine.approve(now, joiner).is_err());
    assert!(sim.nodes[&host].machine.mls.queued_adds.is_empty());
    assert_eq!(sim.epoch(host).map(|e| e.0), Some(0), "nobody was added");
    // Coming back means knocking again, and approval still works then.
    sim.forget(joiner);
    sim.joiner_with(&identity, 1, host, Some(host));
    sim.set_lobby(joiner);
    sim.run_until(Duration::from_secs(3), |s| knocks(s, host, joiner) == 2)
        .expect("knocked again");
    sim.approve(host, joiner);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, joiner]))
        .expect("let in after coming back");
}

#[test]
fn the_lobby_is_bounded_and_makes_room_as_joiners_expire() {
    let mut sim = Sim::new();
    let host = sim.lobby_host();
    let max = Config::default().max_lobby;
    let unix_ms = sim.unix_ms();
    let joiners: Vec<PeerId> = (0..max).map(|_| PeerId::random()).collect();
    for (i, joiner) in joiners.iter().enumerate() {
        let hello = forged_hello(1, *joiner, host, i as u64, unix_ms);
        let response = sim.request(host, *joiner, hello);
        assert!(matches!(response, Response::Welcome { .. }), "{response:?}");
    }
    sim.drain(host);
    assert_eq!(sim.nodes[&host].machine.knocking.len(), max);
    // One more proves the secret too, but must come back later.
    let extra = PeerId::random();
    let response = sim.request(host, extra, forged_hello(1, extra, host, 999, unix_ms));
    assert_eq!(response, Response::NotMember);
    assert_eq!(sim.nodes[&host].machine.stats().lobby_full, 1);
    assert_eq!(knocks(&sim, host, extra), 0);
    // None of them greets again: they all expire, and the host hears of each once.
    let expiry = Config::default().lobby_expiry;
    let took = sim
        .run_until(expiry + Duration::from_secs(2), |s| {
            lobby_left(s, host).len() >= max
        })
        .expect("all expired");
    assert!(took >= expiry, "{took:?}");
    let mut left = lobby_left(&sim, host);
    left.sort();
    let mut expected = joiners.clone();
    expected.sort();
    assert_eq!(left, expected);
    assert!(sim.nodes[&host].machine.knocking.is_empty());
    let unix_ms = sim.unix_ms();
    let response = sim.request(host, extra, forged_hello(1, extra, host, 1000, unix_ms));
    assert!(matches!(response, Response::Welcome { .. }), "{response:?}");
    sim.drain(host);
    assert_eq!(knocks(&sim, host, extra), 1);
}

#[test]
fn a_lobby_joiner_that_says_goodbye_leaves_the_lobby_at_once() {
    let mut sim = Sim::new();
    let host = sim.lobby_host();
    let joiner = sim.joiner(1, host);
    sim.set_lobby(joiner);
    sim.run_until(Duration::from_secs(3), |s| {
        knocks(s, host, joiner) == 1 && s.nodes[&joiner].events.contains(&MeetingEvent::Waiting)
    })
    .expect("knocked and told to wait");
    sim.node(joiner).machine.leave();
    sim.drain(joiner);
    let took = sim
        .run_until(Duration::from_secs(1), |s| {
            lobby_left(s, host) == vec![joiner]
        })
        .expect("the host was told at once");
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert!(sim.nodes[&host].machine.knocking.is_empty());
    assert_eq!(
        sim.nodes[&host].machine.stats().lobby_expired,
        0,
        "not an expiry"
    );
    assert_eq!(sim.nodes[&host].machine.stats().requests_from_strangers, 0);
    let now = sim.now;
    assert!(sim.node(host).machine.approve(now, joiner).is_err());
}
