//! Meetings across NAT routers (network namespaces; see `conclave_tests::nat`).
//!
//! Every member sits in a home behind a NAT router; only the relay is on the public
//! network. The control plane reaches members through relay circuits (libp2p circuit relay
//! v2 reservations).

use std::time::Duration;

use conclave_tests::nat::{Internet, NatKind};
use conclave_tests::netns::available;

const LIMIT: Duration = Duration::from_secs(30);

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
