//! Admission: the proof of the secret, impostors, replays, strangers, bans, floods, join deadline.

use super::*;

#[test]
fn wrong_secret_is_refused_and_never_listed() {
    let mut sim = Sim::new();
    let host = sim.host();
    let friend = sim.joiner(1, host);
    let intruder = sim.joiner(9, host);
    sim.run_for(Duration::from_secs(4));
    assert_eq!(sim.nodes[&intruder].machine.phase(), Phase::Refused);
    assert!(
        sim.nodes[&intruder]
            .events
            .contains(&MeetingEvent::JoinRefused)
    );
    assert!(
        sim.members(intruder).is_empty(),
        "the intruder learns no member"
    );
    assert_eq!(sim.members(host), vec![friend]);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_bad_mac, 1);
    assert!(!sim.providers.contains(&intruder));
}

#[test]
fn an_impostor_key_package_is_refused() {
    let mut sim = Sim::new();
    let host = sim.host();
    let victim = Identity::generate();
    let impostor = Identity::generate();
    let peer = impostor.peer_id();
    let forged = MlsIdentity::with_credential_of(&impostor, &victim);
    sim.add_joiner(peer, forged, "x", 1, Some(host));
    sim.greet(peer, host);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.members(host).is_empty(), "the impostor was not added");
    assert_eq!(sim.epoch(host).map(|e| e.0), Some(0));
    assert!(sim.nodes[&peer].machine.epoch().is_none());
}

#[test]
fn replayed_and_stale_hellos_are_refused_and_counted() {
    let mut sim = Sim::new();
    let host = sim.host();
    let joiner = sim.joiner(1, host);
    sim.run_for(Duration::from_secs(1));
    let hello = sim.nodes[&joiner]
        .sent
        .iter()
        .find(|r| matches!(r, Request::Hello(_)))
        .cloned()
        .expect("a hello was sent");
    let unix_ms = sim.unix_ms();
    assert_eq!(sim.request(host, joiner, hello.clone()), Response::Refused);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_replayed, 1);
    // The same hello presented by another identity fails the MAC instead.
    assert_eq!(
        sim.request(host, PeerId::random(), hello),
        Response::Refused
    );
    assert_eq!(sim.nodes[&host].machine.stats().hellos_bad_mac, 1);
    let k = keys(1);
    let nonce = [4u8; NONCE_LEN];
    let old = unix_ms - 10 * 60 * 1000;
    let stranger = PeerId::random();
    let mac = k.hello_mac(&stranger, &host, &nonce, old);
    let stale = Request::Hello(Hello {
        meeting_id: k.meeting_id(),
        nonce,
        unix_ms: old,
        mac,
        name: "x".into(),
        addrs: vec![],
        key_package: vec![],
    });
    assert_eq!(sim.request(host, stranger, stale), Response::Refused);
    assert_eq!(sim.nodes[&host].machine.stats().hellos_stale, 1);
    assert_eq!(
        sim.members(host),
        vec![joiner],
        "the member itself is unaffected"
    );
}

#[test]
fn strangers_get_not_member_for_group_requests() {
    let mut sim = Sim::new();
    let host = sim.host();
    let stranger = PeerId::random();
    let meeting_id = keys(1).meeting_id();
    for request in [
        Request::Heartbeat {
            meeting_id,
            members: vec![],
            epoch: None,
            proof: None,
        },
        Request::Bye {
            meeting_id,
            leave: None,
        },
        Request::Commit {
            meeting_id,
            epoch: 0,
            commit: vec![1, 2, 3],
        },
        group_message(vec![0; 10]),
    ] {
        let response = sim.request(host, stranger, request);
        assert_eq!(response, Response::NotMember);
    }
    assert_eq!(sim.epoch(host).map(|e| e.0), Some(0), "nothing changed");
}

#[test]
fn an_mls_welcome_from_a_peer_that_never_proved_the_secret_is_refused() {
    let mut sim = Sim::new();
    let host = sim.host();
    let joiner = sim.joiner(1, host);
    // A DHT node that saw the joiner's hello builds its own group and welcomes the joiner.
    let stranger = Identity::generate();
    let stranger_me = MlsIdentity::new(&stranger);
    let stranger_provider = Provider::default();
    let mut group =
        MeetingGroup::create(&stranger_provider, &stranger_me, keys(1).meeting_id()).unwrap();
    let hello = sim.nodes[&joiner].sent.iter().find_map(|r| match r {
        Request::Hello(h) => Some(h.key_package.clone()),
        _ => None,
    });
    let package =
        crate::group::mls::validate_key_package(&stranger_provider, &hello.unwrap(), joiner)
            .unwrap();
    let out = group
        .commit(
            &stranger_provider,
            &stranger_me,
            vec![package],
            vec![],
            Vec::new(),
        )
        .unwrap();
    let welcome = Request::Welcome {
        meeting_id: keys(1).meeting_id(),
        welcome: out.welcome.unwrap(),
        banned: vec![],
    };
    let response = sim.request(joiner, stranger.peer_id(), welcome);
    assert_eq!(response, Response::Refused);
    assert!(
        sim.nodes[&joiner].machine.epoch().is_none(),
        "not tricked into a foreign group"
    );
    // The real meeting still takes it in.
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, joiner]))
        .expect("joined the real meeting");
}

#[test]
fn a_kicked_member_cannot_simply_say_hello_again() {
    let mut sim = Sim::new();
    let host = sim.host();
    let identity = Identity::generate();
    let victim = sim.joiner_with(&identity, 1, host, Some(host));
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, victim]))
        .expect("group formed");
    sim.kick(host, victim);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.members(host).is_empty());
    // The kicked client comes back with the invite.
    sim.nodes.remove(&victim);
    sim.joiner_with(&identity, 1, host, Some(host));
    sim.run_for(Duration::from_secs(6));
    assert!(
        sim.members(host).is_empty(),
        "a kicked member was let back in"
    );
}

#[test]
fn join_times_out_when_nobody_answers() {
    let mut sim = Sim::new();
    let ghost = PeerId::random();
    let joiner = sim.joiner(1, ghost);
    sim.run_for(Config::default().join_timeout + Duration::from_secs(1));
    assert_eq!(sim.nodes[&joiner].machine.phase(), Phase::TimedOut);
    assert!(
        sim.nodes[&joiner]
            .events
            .contains(&MeetingEvent::JoinTimedOut)
    );
}

#[test]
fn a_flood_of_wrong_hellos_is_cheap_and_the_meeting_keeps_admitting() {
    use crate::admission::{GLOBAL_HELLO_BURST, PEER_HELLO_BURST};
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    let unix_ms = sim.unix_ms();
    // One peer floods with a wrong secret: only its burst is even checked.
    let flooder = PeerId::random();
    let mut refused = 0;
    for i in 0..1000 {
        let hello = forged_hello(9, flooder, host, i, unix_ms);
        match sim.request(host, flooder, hello) {
            Response::Refused => refused += 1,
            Response::NotMember => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let stats = sim.nodes[&host].machine.stats();
    assert_eq!(refused, PEER_HELLO_BURST);
    assert_eq!(stats.hellos_bad_mac, u64::from(PEER_HELLO_BURST));
    assert_eq!(
        stats.hellos_rate_limited,
        1000 - u64::from(PEER_HELLO_BURST)
    );
    // Many fresh identities flood together: the global budget caps what is checked.
    for i in 0..1000 {
        let stranger = PeerId::random();
        let hello = forged_hello(9, stranger, host, i, unix_ms);
        let response = sim.request(host, stranger, hello);
        assert!(matches!(response, Response::Refused | Response::NotMember));
    }
    let stats = sim.nodes[&host].machine.stats();
    // Both floods came from peers that never proved the secret, within one instant: all
    // the MACs checked fit in the one global burst (which the joins before used a little).
    assert!(
        stats.hellos_bad_mac <= u64::from(GLOBAL_HELLO_BURST),
        "{}",
        stats.hellos_bad_mac
    );
    assert!(stats.hellos_bad_mac > u64::from(PEER_HELLO_BURST));
    assert_eq!(stats.hellos_rate_limited, 2000 - stats.hellos_bad_mac);
    sim.drain(host);
    // The member's own traffic goes on, and a genuine joiner arriving right now is held
    // back only briefly (asked to try again, not refused) and gets in.
    let b = sim.joiner(1, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b]))
        .expect("a genuine joiner got in despite the flood");
    assert_eq!(sim.nodes[&b].machine.phase(), Phase::Member);
    assert!(
        sim.nodes[&host].machine.stats().hellos_rate_limited > stats.hellos_rate_limited,
        "the joiner's first hello met the exhausted budget"
    );
}

/// On a slow path a hello goes out again before the first is answered; the answer to the
/// first then arrives after the second left. It proves the secret over the first hello's
/// nonce, and admits the joiner as well as the latest answer would.
#[test]
fn the_answer_to_an_earlier_hello_admits_the_joiner() {
    let mut sim = Sim::new();
    let host = sim.host();
    let joiner = sim.joiner(1, host);
    let first = sim.hold_hello(joiner, host);
    sim.run_for(sim.nodes[&joiner].machine.config.hello_retry);
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    sim.node(joiner)
        .machine
        .handle_candidate(now, unix_ms, host, vec![]);
    sim.drain(joiner);
    let second = sim.hold_hello(joiner, host);
    sim.release(joiner, host, first);
    sim.run_for(LATENCY * 3);
    assert!(
        sim.nodes[&joiner].machine.peers.contains_key(&host),
        "the first hello's answer admitted the joiner"
    );
    sim.release(joiner, host, second);
    sim.run_until(Duration::from_secs(2), |s| s.agree(&[host, joiner]))
        .expect("in the group");
    assert_eq!(
        sim.nodes[&joiner].machine.stats().welcomes_rejected,
        0,
        "no answer and no MLS welcome was turned away"
    );
}
