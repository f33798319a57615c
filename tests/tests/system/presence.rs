//! Presence: a member killed with SIGKILL is reported gone by the others within 10 s.

use std::time::{Duration, Instant};

use conclave_tests::{Proc, peer_id_of, start_host, start_relay};

#[test]
fn a_killed_member_is_reported_left_within_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let mut b = Proc::conclave("B", &dir.path().join("B"), &["join", &invite]).unwrap();
    let mut c = Proc::conclave("C", &dir.path().join("C"), &["join", &invite]).unwrap();
    let c_id = peer_id_of(&mut c).unwrap();
    let b_id = peer_id_of(&mut b).unwrap();
    b.wait_for(Duration::from_secs(10), "C", |v| {
        v["event"] == "member_joined" && v["peer_id"] == c_id.as_str()
    })
    .unwrap();
    host.wait_for(Duration::from_secs(10), "C", |v| {
        v["event"] == "member_joined" && v["peer_id"] == c_id.as_str()
    })
    .unwrap();
    host.wait_for(Duration::from_secs(10), "B", |v| {
        v["event"] == "member_joined" && v["peer_id"] == b_id.as_str()
    })
    .unwrap();

    c.kill9();
    let killed = Instant::now();
    for proc in [&mut host, &mut b] {
        let left = Duration::from_secs(10).saturating_sub(killed.elapsed());
        let event = proc
            .wait_for(left, "member_left for C", |v| {
                v["event"] == "member_left" && v["peer_id"] == c_id.as_str()
            })
            .unwrap();
        assert_eq!(event["reason"], "timed out");
    }
    // The survivors still count each other.
    assert_eq!(host.members(), vec![b_id]);
}
