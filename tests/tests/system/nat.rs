//! Meetings across NAT routers (network namespaces; see `conclave_tests::nat`).
//!
//! Every member sits in a home behind a NAT router; only the relay is on the public
//! network. The control plane reaches members through relay circuits (libp2p circuit relay
//! v2 reservations) and upgrades them to direct connections by hole punching (DCUtR) where
//! the NATs allow it.

use std::time::Duration;

use conclave_tests::nat::{Home, Internet, NatKind};
use conclave_tests::netns::available;
use conclave_tests::{Proc, peer_id_of};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// How long hole punching may take once the relayed connection is up: DCUtR makes up to
/// three attempts (5 s each when they time out), and the client retries once over a new
/// circuit.
const PUNCH_LIMIT: Duration = Duration::from_secs(40);

/// Two members behind symmetric NATs (the hardest case: no direct path for anything) form
/// a meeting through the relay's circuits: the joiner is admitted and both see each other.
#[test]
fn members_behind_symmetric_nats_meet_through_relay_circuits() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let mut internet = Internet::new("cp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = internet.relay(dir.path(), None).unwrap();
    let home_a = internet.add_home(NatKind::Symmetric).unwrap();
    let home_b = internet.add_home(NatKind::Symmetric).unwrap();

    let mut host = home_a
        .member(dir.path(), "host", &["new", "--relay", &relay_addr])
        .unwrap();
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut guest = home_b
        .member(dir.path(), "guest", &["join", &invite])
        .unwrap();
    guest.wait_event("joined", LIMIT).unwrap();
    host.wait_event("member_joined", LIMIT).unwrap();
    guest.send_line("hello across two NATs").unwrap();
    let chat = host.wait_event("chat", LIMIT).unwrap();
    assert_eq!(chat["text"], "hello across two NATs");
}

/// A member's control path towards `peer` as reported in `control_path` events: waits for
/// one with `path`.
fn control_path(member: &mut Proc, peer: &str, path: &str, limit: Duration) -> Value {
    member
        .wait_for(limit, &format!("a {path} control path to {peer}"), |v| {
            v["event"] == "control_path" && v["peer_id"] == peer && v["path"] == path
        })
        .unwrap()
}

/// The number of UDP packets from the other home's router that reached `home`'s host so far
/// (counter table `punch`, loaded by [`watch_packets_from`]).
fn packets_from(home: &Home) -> u64 {
    let listing = home.nft_list("punch").unwrap();
    let words: Vec<&str> = listing.split_whitespace().collect();
    let packets: Vec<u64> = words
        .windows(2)
        .filter(|w| w[0] == "packets")
        .map(|w| w[1].parse().unwrap_or(0))
        .collect();
    assert_eq!(packets.len(), 1, "{listing}");
    packets[0]
}

/// Counts, in `home`'s host, the UDP packets that arrive from the public address `from` (the
/// other home's router): the relay forwards from its own address, so only a direct path
/// brings any (media is off here, so these are QUIC). TCP resets and ICMP errors from the
/// other router, which failed attempts bring, are not counted.
fn watch_packets_from(home: &Home, from: &str) {
    home.nft(&format!(
        "table inet punch {{\n  chain input {{\n    type filter hook input priority 0;\n    \
         ip saddr {from} meta l4proto udp counter\n  }}\n}}\n"
    ))
    .unwrap();
}

/// Two members in homes behind `a` (host) and `b` (guest), both listening on TCP and QUIC,
/// meeting through a relay that listens on both (given by its TCP address, as in an
/// invite): the guest has joined and its control connection to the host started relayed.
struct Pair {
    _relay: Proc,
    host: Proc,
    guest: Proc,
    host_id: String,
    guest_id: String,
    home_a: Home,
    home_b: Home,
}

fn meet_relayed(internet: &mut Internet, dir: &std::path::Path, a: NatKind, b: NatKind) -> Pair {
    let (relay, relay_addr) = internet.relay_with_quic(dir).unwrap();
    let home_a = internet.add_home(a).unwrap();
    let home_b = internet.add_home(b).unwrap();
    watch_packets_from(&home_a, &home_b.public_addr);
    watch_packets_from(&home_b, &home_a.public_addr);
    let quic_a = format!("/ip4/{}/udp/0/quic-v1", home_a.addr);
    let quic_b = format!("/ip4/{}/udp/0/quic-v1", home_b.addr);
    let mut host = home_a
        .member(
            dir,
            "host",
            &["--listen", &quic_a, "new", "--relay", &relay_addr],
        )
        .unwrap();
    let host_id = peer_id_of(&mut host).unwrap();
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut guest = home_b
        .member(dir, "guest", &["--listen", &quic_b, "join", &invite])
        .unwrap();
    let guest_id = peer_id_of(&mut guest).unwrap();
    guest.wait_event("joined", LIMIT).unwrap();
    host.wait_event("member_joined", LIMIT).unwrap();
    let first = control_path(&mut guest, &host_id, "relayed", LIMIT);
    assert!(
        first["remote"]
            .as_str()
            .is_some_and(|r| r.contains("/p2p-circuit")),
        "{first}"
    );
    Pair {
        _relay: relay,
        host,
        guest,
        host_id,
        guest_id,
        home_a,
        home_b,
    }
}

/// Two members behind full-cone NATs reach each other through a relay circuit first; hole
/// punching (DCUtR over QUIC, with the public UDP addresses the relay observed) then gives
/// both a direct control connection to the other's router, packets from the other home's
/// public address reach each host, and the meeting goes on.
#[test]
fn members_behind_cone_nats_punch_a_direct_control_connection() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let mut internet = Internet::new("hp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut pair = meet_relayed(
        &mut internet,
        dir.path(),
        NatKind::FullCone,
        NatKind::FullCone,
    );
    let (host_id, guest_id) = (pair.host_id.clone(), pair.guest_id.clone());
    let at_guest = control_path(&mut pair.guest, &host_id, "direct", PUNCH_LIMIT);
    let at_host = control_path(&mut pair.host, &guest_id, "direct", PUNCH_LIMIT);
    for (event, router) in [
        (&at_guest, &pair.home_a.public_addr),
        (&at_host, &pair.home_b.public_addr),
    ] {
        let remote = event["remote"].as_str().unwrap_or_default();
        assert!(
            remote.starts_with(&format!("/ip4/{router}/")) && !remote.contains("p2p-circuit"),
            "the direct path goes to the other home's router: {event}"
        );
    }
    assert!(
        packets_from(&pair.home_a) > 0,
        "no packet from home b reached home a"
    );
    assert!(
        packets_from(&pair.home_b) > 0,
        "no packet from home a reached home b"
    );
    pair.guest.send_line("hello without the relay").unwrap();
    let chat = pair.host.wait_event("chat", LIMIT).unwrap();
    assert_eq!(chat["text"], "hello without the relay");
}

/// Two members behind symmetric NATs try hole punching too (same setup as the cone test:
/// both rounds run and fail), but no direct path can exist: no packet from the other home's
/// router reaches either host, the control path stays relayed, and the meeting works
/// through the circuit.
#[test]
fn members_behind_symmetric_nats_stay_on_the_relay_circuit_and_still_talk() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let mut internet = Internet::new("hs").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut pair = meet_relayed(
        &mut internet,
        dir.path(),
        NatKind::Symmetric,
        NatKind::Symmetric,
    );
    // Both rounds (DCUtR's three attempts each) are tried and fail, as the members log.
    let failures = |pair: &Pair| {
        [&pair.guest, &pair.host]
            .iter()
            .map(|m| m.stderr().matches("hole punching failed").count())
            .sum::<usize>()
    };
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    while failures(&pair) < 2 && start.elapsed() < PUNCH_LIMIT {
        pair.guest.drain_for(Duration::from_millis(500));
        pair.host.drain_for(Duration::from_millis(500));
    }
    assert!(
        failures(&pair) >= 2,
        "both hole punching rounds end in failure{}{}",
        pair.guest.stderr_tail(),
        pair.host.stderr_tail()
    );
    pair.guest.send_line("hello through the relay").unwrap();
    let chat = pair.host.wait_event("chat", LIMIT).unwrap();
    assert_eq!(chat["text"], "hello through the relay");
    for member in [&pair.guest, &pair.host] {
        let direct: Vec<&Value> = member
            .seen
            .iter()
            .filter(|v| v["event"] == "control_path" && v["path"] == "direct")
            .collect();
        assert!(direct.is_empty(), "no direct path is possible: {direct:?}");
    }
    assert_eq!(packets_from(&pair.home_a), 0);
    assert_eq!(packets_from(&pair.home_b), 0);
    for member in [&pair.guest, &pair.host] {
        assert!(!member.stderr().contains("hole punched"));
    }
}
