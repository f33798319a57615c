//! Serverless discovery through the DHT: one relay as the only bootstrap, five processes.

use std::time::{Duration, Instant};

use conclave_tests::{PATIENCE, Proc, peer_id_of, start_host, start_relay};
use serde_json::Value;

#[test]
fn host_and_four_joiners_see_each_other_within_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, host_id) =
        start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    assert!(
        invite.contains("&relay="),
        "the invite carries the relay hint: {invite}"
    );

    let started = Instant::now();
    let mut joiners: Vec<Proc> = ["B", "C", "D", "E"]
        .iter()
        .map(|label| Proc::conclave(label, &dir.path().join(label), &["join", &invite]).unwrap())
        .collect();
    let mut ids = vec![host_id];
    for joiner in &mut joiners {
        ids.push(peer_id_of(joiner).unwrap());
    }
    let mut everyone: Vec<&mut Proc> = std::iter::once(&mut host)
        .chain(joiners.iter_mut())
        .collect();
    for (index, proc) in everyone.iter_mut().enumerate() {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        for (other_index, other) in ids.iter().enumerate() {
            if other_index == index {
                continue;
            }
            proc.wait_for(left, &format!("member_joined {other}"), |v| {
                v["event"] == "member_joined" && v["peer_id"] == other.as_str()
            })
            .unwrap();
        }
        let mut members = proc.members();
        members.sort();
        let mut expected: Vec<String> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, id)| id.clone())
            .collect();
        expected.sort();
        assert_eq!(members, expected, "{} lists exactly the others", proc.label);
    }
}

/// `invite` without its `&host=…` hint: the only way to the host is then the rendezvous
/// record on the DHT.
fn without_host_hint(invite: &str) -> String {
    let without_host: String = invite
        .split('&')
        .filter(|part| !part.starts_with("host="))
        .collect::<Vec<_>>()
        .join("&");
    assert!(!without_host.contains("host="));
    without_host
}

/// Host and joiner each see the other join.
fn see_each_other(host: &mut Proc, host_id: &str, joiner: &mut Proc, joiner_id: &str) {
    joiner
        .wait_for(PATIENCE, "the host", |v| {
            v["event"] == "member_joined" && v["peer_id"] == host_id
        })
        .unwrap();
    host.wait_for(PATIENCE, "the joiner", |v| {
        v["event"] == "member_joined" && v["peer_id"] == joiner_id
    })
    .unwrap();
}

#[test]
fn an_invite_without_the_host_hint_is_found_through_the_dht_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, host_id) =
        start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let without_host = without_host_hint(&invite);
    let mut joiner = Proc::conclave("B", &dir.path().join("B"), &["join", &without_host]).unwrap();
    let joiner_id = peer_id_of(&mut joiner).unwrap();
    joiner
        .wait_event("joined", Duration::from_secs(10))
        .unwrap();
    see_each_other(&mut host, &host_id, &mut joiner, &joiner_id);
}

#[test]
fn a_graceful_leave_is_reported_with_its_reason_and_exit_code_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let mut joiner = Proc::conclave("B", &dir.path().join("B"), &["join", &invite]).unwrap();
    let joiner_id = peer_id_of(&mut joiner).unwrap();
    joiner.wait_event("member_joined", PATIENCE).unwrap();
    joiner.send_line("/leave").unwrap();
    joiner.wait_event("left", PATIENCE).unwrap();
    assert_eq!(joiner.wait_exit(PATIENCE).unwrap().code(), Some(0));
    let left = host
        .wait_for(PATIENCE, "member_left", |v| {
            v["event"] == "member_left" && v["peer_id"] == joiner_id.as_str()
        })
        .unwrap();
    assert_eq!(left["reason"], "left");
}

#[test]
fn duration_ends_the_meeting_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut host =
        Proc::conclave("A", &dir.path().join("A"), &["new", "--duration", "1s"]).unwrap();
    host.wait_event("left", PATIENCE).unwrap();
    assert_eq!(host.wait_exit(PATIENCE).unwrap().code(), Some(0));
}

/// Discovery through a bootstrap of another kind (`kad-node`): a node that serves only
/// Kademlia under Conclave's protocol name — no circuit relay, no TURN — and, as the libp2p
/// Kademlia specification wants, keeps provider records only under multihash keys. Host
/// and joiner use it for what it offers: the joiner, whose invite has no host hint, finds
/// the host through it alone, and the node stored the rendezvous record.
#[test]
fn a_bootstrap_that_only_serves_kademlia_carries_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Proc::spawn(
        "kad-node",
        std::process::Command::new(conclave_tests::bin("kad-node")),
        dir.path(),
    )
    .unwrap();
    let listening = node.wait_event("listening", PATIENCE).unwrap();
    let node_addr = listening["addrs"][0].as_str().unwrap().to_owned();
    let (mut host, invite, host_id) =
        start_host(dir.path(), "A", &["--relay", &node_addr]).unwrap();
    let without_host = without_host_hint(&invite);
    let mut joiner = Proc::conclave("B", &dir.path().join("B"), &["join", &without_host]).unwrap();
    let joiner_id = peer_id_of(&mut joiner).unwrap();
    see_each_other(&mut host, &host_id, &mut joiner, &joiner_id);
    let stored = node.wait_event("provider_stored", PATIENCE).unwrap();
    assert!(
        stored["key"]
            .as_str()
            .is_some_and(|key| key.starts_with("1220") && key.len() == 68),
        "a SHA-256 multihash: {stored}"
    );
    node.drain_for(Duration::from_millis(200));
    let refused: Vec<&Value> = node
        .seen
        .iter()
        .filter(|v| v["event"] == "provider_refused")
        .collect();
    assert!(refused.is_empty(), "records the node refused: {refused:?}");
    // It offers no circuit relay: the clients learnt so and stopped asking.
    assert!(
        host.stderr().contains("no circuit relay"),
        "{}",
        host.stderr_tail()
    );
}
