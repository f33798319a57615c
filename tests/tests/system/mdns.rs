//! LAN-only meetings: with no relay and no internet, two hosts on one LAN find each other by
//! mDNS alone. The LAN is a pair of network namespaces on a bridge (multicast never leaves
//! them); requires root, as in CI.

use std::process::Command;
use std::time::Duration;

use conclave_tests::netns::{Lan, available};
use conclave_tests::{PATIENCE, Proc, bin, peer_id_of};

fn in_namespace(ns: &str, data_dir: &std::path::Path, name: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns])
        .arg(bin("conclave"))
        .args([
            "--json",
            "--insecure-key-file",
            "--name",
            name,
            "--data-dir",
        ])
        .arg(data_dir)
        .args(args);
    command
}

#[test]
fn two_hosts_on_a_lan_meet_by_mdns_alone() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let lan = Lan::new("md", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut host = Proc::spawn(
        "A",
        in_namespace(lan.host(0), &dir.path().join("A"), "A", &["new"]),
        dir.path(),
    )
    .unwrap();
    let host_id = peer_id_of(&mut host).unwrap();
    let invite = host.wait_event("invite", PATIENCE).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!invite.contains("relay="), "no relay is involved");
    let mut joiner = Proc::spawn(
        "B",
        in_namespace(lan.host(1), &dir.path().join("B"), "B", &["join", &invite]),
        dir.path(),
    )
    .unwrap();
    let joiner_id = peer_id_of(&mut joiner).unwrap();
    joiner
        .wait_for(Duration::from_secs(15), "the host", |v| {
            v["event"] == "member_joined" && v["peer_id"] == host_id.as_str()
        })
        .unwrap();
    host.wait_for(PATIENCE, "the joiner", |v| {
        v["event"] == "member_joined" && v["peer_id"] == joiner_id.as_str()
    })
    .unwrap();
    drop(joiner);
    drop(host);
    drop(lan);
}
