//! The NAT test matrix: for every pair of home router kinds, a two-person meeting connects
//! and carries audio, directly where hole punching can work and through the relay's TURN
//! server where it cannot (symmetric ↔ symmetric, symmetric ↔ port-restricted); a
//! three-person meeting mixes both; a home that drops all UDP still meets (TURN over TCP), and
//! one that passes only TCP to port 443 (libp2p and TURN over TLS on the relay's port 443);
//! a relayed call recovers from a relay restart.
//!
//! Every member is behind its own NAT router (network namespaces, `conclave_tests::nat`);
//! only the relay is public. Each home's uplink is delayed as by a `continental` network
//! (100 ms RTT home ↔ home; `CONCLAVE_WAN_PROFILE` picks another). Bounded in time; the
//! namespaces go even when a test fails.

use std::path::Path;
use std::time::{Duration, Instant};

use conclave_core::{KeySource, Store};
use conclave_tests::nat::{Home, Internet, NatKind, RELAY_ADDR, relay_config, serial};
use conclave_tests::netns::available;
use conclave_tests::wan::Profile;
use conclave_tests::{Proc, peer_id_of, peer_id_of_seen};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// Longest time from joining to hearing the host, for any pair of NATs (relayed or
/// direct), on a loaded 2-core CI machine, at `continental`; each millisecond of one-way
/// delay more adds forty (a join is a dozen round trips and more, through the homes' and
/// the relay's uplinks: welcome, signalling, gathering, checks, DTLS, retransmissions of
/// what the loss takes).
const FIRST_AUDIO_LIMIT: Duration = Duration::from_millis(2500);
/// The median over the matrix of the time from joining to hearing the host at
/// `continental`: the target (other profiles report theirs).
const FIRST_AUDIO_MEDIAN: Duration = Duration::from_millis(1500);

/// [`FIRST_AUDIO_LIMIT`] on `profile`'s network.
fn first_audio_limit(profile: &Profile) -> Duration {
    let more = profile
        .one_way_delay
        .saturating_sub(Profile::CONTINENTAL.one_way_delay);
    FIRST_AUDIO_LIMIT + more * 40
}

/// The network every home is on: `continental`, or `CONCLAVE_WAN_PROFILE`.
fn profile() -> Profile {
    Profile::from_env_or(Profile::CONTINENTAL)
}

/// The first `connected` connection event towards `peer`, waiting at most `limit`.
fn connected_to(member: &mut Proc, peer: &str, limit: Duration) -> Value {
    member
        .wait_for(limit, "a connected media path", |v| {
            v["event"] == "connection" && v["state"] == "connected" && v["peer_id"] == peer
        })
        .unwrap()
}

/// Starts a member in `home` that creates a meeting (sending a 440 Hz tone) with `relay`;
/// returns it, its peer id and the invite.
fn host_meeting(home: &Home, dir: &Path, label: &str, relay: &str) -> (Proc, String, String) {
    host_meeting_with(home, dir, label, relay, &[])
}

/// As [`host_meeting`], with global `flags` before the command (e.g. another `--listen`).
fn host_meeting_with(
    home: &Home,
    dir: &Path,
    label: &str,
    relay: &str,
    flags: &[&str],
) -> (Proc, String, String) {
    let args: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["--audio-in", "tone:440", "new", "--relay", relay])
        .collect();
    let mut host = home.member(dir, label, &args).unwrap();
    let host_id = peer_id_of(&mut host).unwrap();
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    (host, host_id, invite)
}

struct Pair {
    /// The path the call started on.
    first_path: String,
    /// The path it ended on (a relayed start may go direct: `core::media::engine::upgrade`).
    path: String,
    /// From the guest's `joined` to its first `connected`.
    connect: Duration,
    /// From the guest's `joined` to the host's first decrypted audio at the guest.
    first_audio: Duration,
    /// From the guest's `joined` to the final path, if it changed.
    switched: Option<Duration>,
}

/// How long a relayed call may take to go direct where the NATs allow it: a first attempt
/// and, should a round be lost (a conntrack race, a check lost on the way), another.
const UPGRADE_LIMIT: Duration = Duration::from_secs(25);
/// How long a relayed call between NATs that allow no direct path is watched for a switch
/// that must not come: longer than one direct path attempt may take.
const NO_UPGRADE_WATCH: Duration = Duration::from_secs(10);

/// Starts a member in `home` that joins `invite`, sending silence and playing nothing.
fn join_silently(home: &Home, dir: &Path, label: &str, invite: &str) -> Proc {
    join_silently_with(home, dir, label, invite, &[])
}

/// As [`join_silently`], with global `flags` before the command.
fn join_silently_with(home: &Home, dir: &Path, label: &str, invite: &str, flags: &[&str]) -> Proc {
    let args: Vec<&str> = flags
        .iter()
        .copied()
        .chain([
            "--audio-in",
            "silence",
            "--audio-out",
            "null",
            "join",
            invite,
        ])
        .collect();
    home.member(dir, label, &args).unwrap()
}

/// `home` drops every packet to and from `other`'s public address (its router): only the
/// relay carries between them, until [`reconnect`].
fn cut_off(home: &Home, other: &Home) {
    let b = &other.public_addr;
    home.nft(&format!(
        "table inet cut {{\n  chain out {{\n    type filter hook output priority 0;\n    ip daddr {b} drop\n  }}\n  chain in {{\n    type filter hook input priority 0;\n    ip saddr {b} drop\n  }}\n}}\n"
    ))
    .unwrap();
}

/// Lifts [`cut_off`].
fn reconnect(home: &Home) {
    home.nft("delete table inet cut").unwrap();
}

/// A two-person meeting between homes `a` (host, speaking) and `b` (guest): the guest must
/// hear the host. Returns the paths and the times from the guest's `joined` to the first
/// `connected`, to the first audio, and to a switch to a direct path (`expected` direct: waited
/// for; relayed: watched for, and none must come).
fn meet(
    internet: &mut Internet,
    relay: &str,
    dir: &Path,
    (a, b): (NatKind, NatKind),
    expected: &str,
) -> Pair {
    let profile = profile();
    let (home_a, home_b): (Home, Home) = (
        internet.add_home_with(a, Some(&profile)).unwrap(),
        internet.add_home_with(b, Some(&profile)).unwrap(),
    );
    let label = format!("{}-{}", a.label(), b.label());
    let (host, host_id, invite) = host_meeting(&home_a, dir, &format!("{label}-host"), relay);
    let mut guest = join_silently(&home_b, dir, &format!("{label}-guest"), &invite);
    // The host's side too, should the join fail (seen once: a guest that never joined).
    guest
        .wait_event("joined", LIMIT)
        .unwrap_or_else(|e| panic!("{e}\n--- host ---\n{}", host.stderr_tail()));
    #[allow(clippy::disallowed_methods)]
    let joined = Instant::now();
    let connection = connected_to(&mut guest, &host_id, LIMIT);
    let connect = joined.elapsed();
    guest
        .wait_for(LIMIT, "audio from the host", |v| {
            v["event"] == "audio_started" && v["peer_id"] == host_id.as_str()
        })
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let first_audio = joined.elapsed();
    let first_path = connection["path"].as_str().unwrap_or_default().to_owned();
    let is_switch = |v: &Value| {
        v["event"] == "connection"
            && v["state"] == "connected"
            && v["peer_id"] == host_id.as_str()
            && v["path"] == "direct"
            && v["previous_path"] == "relayed"
    };
    let mut path = first_path.clone();
    let mut switched = None;
    if first_path == "relayed" {
        let watch = if expected == "direct" {
            UPGRADE_LIMIT
        } else {
            NO_UPGRADE_WATCH
        };
        if guest
            .wait_for(watch, "a switch to a direct path", is_switch)
            .is_ok()
        {
            path = "direct".into();
            switched = Some(joined.elapsed());
        }
    }
    Pair {
        first_path,
        path,
        connect,
        first_audio,
        switched,
    }
}

#[test]
fn every_pair_of_nat_kinds_meets_directly_when_possible_and_relayed_otherwise() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let _serial = serial();
    let mut internet = Internet::new("mx").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = relay_config(dir.path()).unwrap();
    let (_relay, relay_addr) = internet.relay(dir.path(), Some(&config)).unwrap();
    let mut report = Vec::new();
    let mut first_audio = Vec::new();
    for (i, a) in NatKind::ALL.iter().enumerate() {
        for b in &NatKind::ALL[i..] {
            // Hole punching must win wherever the two NATs allow it and is impossible for
            // the symmetric combinations. Between two restricted NATs it needs both sides'
            // first packets to cross (the answerer holds the offer's reflexive candidates
            // back until the offerer starts checking: `core::media::transport::sdp`).
            let expected = if NatKind::direct_possible(*a, *b) {
                "direct"
            } else {
                "relayed"
            };
            // A round lost to scheduling on a loaded machine (seen once in CI: port ↔
            // port relayed) or to a conntrack race is made again inside the call, by the
            // direct path attempts beside a relayed connection.
            let pair = meet(&mut internet, &relay_addr, dir.path(), (*a, *b), expected);
            report.push(format!(
                "{:>8} ↔ {:<8} {:<7} → {:<7} connected {:>5} ms, audio {:>5} ms{}",
                a.label(),
                b.label(),
                pair.first_path,
                pair.path,
                pair.connect.as_millis(),
                pair.first_audio.as_millis(),
                pair.switched.map_or(String::new(), |at| format!(
                    ", direct at {} ms",
                    at.as_millis()
                )),
            ));
            assert_eq!(
                pair.path,
                expected,
                "{} ↔ {}\n{}",
                a.label(),
                b.label(),
                report.join("\n")
            );
            // Relay first: the call is heard as soon as any path works.
            first_audio.push(pair.first_audio);
            assert!(
                pair.first_audio <= first_audio_limit(&profile()),
                "{} ↔ {}: first audio {:?} after joining\n{}",
                a.label(),
                b.label(),
                pair.first_audio,
                report.join("\n")
            );
        }
    }
    eprintln!(
        "NAT matrix (first path → final path, joined → connected, → first audio):\n{}",
        report.join("\n")
    );
    first_audio.sort();
    let median = first_audio[first_audio.len() / 2];
    eprintln!("{}: median first audio {median:?}", profile().name);
    assert!(
        profile().name != Profile::CONTINENTAL.name || median <= FIRST_AUDIO_MEDIAN,
        "median first audio {median:?} after joining\n{}",
        report.join("\n")
    );
}

/// Three members — two behind symmetric NATs, one behind a full-cone NAT: the two
/// symmetric ones reach each other only through TURN; everyone else connects directly.
#[test]
fn a_three_person_meeting_mixes_direct_and_relayed_paths() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let mut internet = Internet::new("m3").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = relay_config(dir.path()).unwrap();
    let (_relay, relay) = internet.relay(dir.path(), Some(&config)).unwrap();
    let homes: Vec<Home> = [NatKind::FullCone, NatKind::Symmetric, NatKind::Symmetric]
        .into_iter()
        .map(|kind| internet.add_home_with(kind, Some(&profile())).unwrap())
        .collect();
    let (_host, host_id, invite) = host_meeting(&homes[0], dir.path(), "cone", &relay);
    let mut sym1 = homes[1]
        .member(
            dir.path(),
            "sym1",
            &["--audio-in", "tone:660", "join", &invite],
        )
        .unwrap();
    let mut sym2 = homes[2]
        .member(
            dir.path(),
            "sym2",
            &["--audio-in", "tone:880", "join", &invite],
        )
        .unwrap();
    let ids = [
        host_id,
        peer_id_of(&mut sym1).unwrap(),
        peer_id_of(&mut sym2).unwrap(),
    ];
    // Three members on two cores: allow twice the usual time for all paths to settle.
    let limit = LIMIT * 2;
    assert_eq!(connected_to(&mut sym1, &ids[0], limit)["path"], "direct");
    assert_eq!(connected_to(&mut sym1, &ids[2], limit)["path"], "relayed");
    assert_eq!(connected_to(&mut sym2, &ids[0], limit)["path"], "direct");
    assert_eq!(connected_to(&mut sym2, &ids[1], limit)["path"], "relayed");
    for (member, other) in [(&mut sym1, &ids[2]), (&mut sym2, &ids[1])] {
        member
            .wait_for(LIMIT, "audio over the relayed path", |v| {
                v["event"] == "audio_started" && v["peer_id"] == other.as_str()
            })
            .unwrap();
    }
}

/// A home whose router drops every outbound UDP packet still meets: media goes through
/// TURN over TCP, whichever side offers (the answerer's STUN requests never get an answer
/// there, so it must answer once its relayed candidate is in rather than after the whole
/// gathering timeout).
#[test]
fn a_home_without_udp_meets_through_turn_over_tcp() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let mut internet = Internet::new("tc").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = relay_config(dir.path()).unwrap();
    let (_relay, relay) = internet.relay(dir.path(), Some(&config)).unwrap();
    let pair = meet(
        &mut internet,
        &relay,
        dir.path(),
        (NatKind::FullCone, NatKind::UdpBlocked),
        "relayed",
    );
    assert_eq!(pair.path, "relayed");
    eprintln!(
        "UDP-blocked home: relayed (TURN over TCP), joined → connected {} ms, audio {} ms",
        pair.connect.as_millis(),
        pair.first_audio.as_millis()
    );
}

/// A member in a full-cone home hosts a meeting with `relay`; a member in a home of
/// `guest_kind` (with global `flags`) joins it. Both must hear each other over a relayed
/// path; returns the time from the join to the guest hearing the host, and the guest's
/// peer id.
fn relayed_both_ways(
    internet: &mut Internet,
    (dir, relay): (&Path, &str),
    (guest_kind, guest_label): (NatKind, &str),
    flags: &[&str],
) -> (Duration, String) {
    let profile = profile();
    let open = internet
        .add_home_with(NatKind::FullCone, Some(&profile))
        .unwrap();
    let guest_home = internet.add_home_with(guest_kind, Some(&profile)).unwrap();
    let (mut host, host_id, invite) = host_meeting(&open, dir, "fullcone-host", relay);
    let args: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["--audio-in", "tone:660", "join", &invite])
        .collect();
    let mut guest = guest_home.member(dir, guest_label, &args).unwrap();
    let guest_id = peer_id_of(&mut guest).unwrap();
    guest
        .wait_event("joined", LIMIT)
        .unwrap_or_else(|e| panic!("{e}\n--- host ---\n{}", host.stderr_tail()));
    #[allow(clippy::disallowed_methods)]
    let joined = Instant::now();
    let connection = connected_to(&mut guest, &host_id, LIMIT);
    assert_eq!(connection["path"], "relayed", "{connection}");
    guest
        .wait_for(LIMIT, "audio from the host", |v| {
            v["event"] == "audio_started" && v["peer_id"] == host_id.as_str()
        })
        .unwrap();
    let first_audio = joined.elapsed();
    host.wait_for(LIMIT, "audio from the guest", |v| {
        v["event"] == "audio_started" && v["peer_id"] == guest_id.as_str()
    })
    .unwrap();
    (first_audio, guest_id)
}

/// A home whose network passes nothing but TCP to port 443 (no UDP, no other port) meets
/// a member in an ordinary home and both hear each other: the relay serves libp2p and TURN
/// over TLS on port 443, telling them apart by the first byte; the member fetches its TURN
/// credentials and the certificate's pin over libp2p there, and its media goes through
/// TURN over TLS.
#[test]
fn a_home_that_reaches_only_tcp_443_meets_through_turn_over_tls() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let mut internet = Internet::new("tl").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay) = internet.relay_with_tls(dir.path()).unwrap();
    let (first_audio, _) = relayed_both_ways(
        &mut internet,
        (dir.path(), &relay),
        (NatKind::Only443, "only443-guest"),
        &[],
    );
    eprintln!(
        "port-443-only home: relayed (TURN over TLS), joined → audio {} ms",
        first_audio.as_millis()
    );
}

/// Scale-out over a TURN server the site already runs: the relay serves no TURN of its own
/// (`turn.enabled = false`) and issues credentials for a coturn `turnserver` (Debian's
/// package, `use-auth-secret`) named in `[[turn.external]]` with the same secret. A
/// relay-only member behind a symmetric NAT (its only candidates are coturn's) meets a
/// member in a full-cone home; both hear each other through coturn, which saw the
/// relay-only identity allocate with the credentials the relay minted.
#[test]
#[ignore = "coturn 4.6.1 here never forwards the client's checks to the other member's NAT \
            address (permission and channel granted, no send from the relayed socket): see \
            the closing note of 2026-12-08"]
fn a_relay_only_member_is_relayed_through_an_external_coturn() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let mut internet = Internet::new("ct").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "the site's coturn secret";
    let (_coturn, coturn_log, coturn) = internet.coturn(dir.path(), secret).unwrap();
    let secret_file = dir.path().join("coturn.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[turn]\nenabled = false\n\n[[turn.external]]\n\
             urls = [\"stun:{at}:3478\", \"turn:{at}:3478?transport=udp\"]\n\
             secret_file = \"{file}\"\n",
            at = coturn.addr,
            file = secret_file.display()
        ),
    )
    .unwrap();
    let (_relay, relay) = internet.relay(dir.path(), Some(&config)).unwrap();
    let (first_audio, guest_id) = relayed_both_ways(
        &mut internet,
        (dir.path(), &relay),
        (NatKind::Symmetric, "sym-relay-only-guest"),
        &["--relay-only"],
    );
    let log = std::fs::read_to_string(coturn_log).unwrap();
    let allocated = format!("{guest_id}>: incoming packet ALLOCATE processed, success");
    assert!(
        log.contains(&allocated),
        "coturn never allocated for the guest:\n{log}"
    );
    eprintln!(
        "relay-only member through an external coturn: joined → audio {} ms",
        first_audio.as_millis()
    );
}

/// An emulated internet with a relay (TURN on) and two full-cone homes (a direct path
/// between them would work).
struct TwoHomes {
    _internet: Internet,
    dir: tempfile::TempDir,
    _relay: Proc,
    relay: String,
    home_a: Home,
    home_b: Home,
}

fn two_full_cone_homes(tag: &str) -> TwoHomes {
    let mut internet = Internet::new(tag).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = relay_config(dir.path()).unwrap();
    let (relay_proc, relay) = internet.relay(dir.path(), Some(&config)).unwrap();
    let home_a = internet.add_home(NatKind::FullCone).unwrap();
    let home_b = internet.add_home(NatKind::FullCone).unwrap();
    TwoHomes {
        _internet: internet,
        dir,
        _relay: relay_proc,
        relay,
        home_a,
        home_b,
    }
}

/// The packet counts of `home`'s `watch` table, in rule order, and the listing itself.
fn packet_counters(home: &Home) -> (Vec<u64>, String) {
    let counters = home.nft_list("watch").unwrap();
    let packets = counters
        .split_whitespace()
        .zip(counters.split_whitespace().skip(1))
        .filter(|(word, _)| *word == "packets")
        .map(|(_, n)| n.parse().unwrap_or(0))
        .collect();
    (packets, counters)
}

/// With `--relay-only`, the other member never sees our address: every UDP packet that
/// reaches its host comes from the relay, although a direct path would have worked. Audio
/// and video both get through (TURN only).
#[test]
fn relay_only_shows_only_the_relay_address_to_the_other_member() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let TwoHomes {
        _internet,
        dir,
        _relay,
        relay,
        home_a,
        home_b,
    } = two_full_cone_homes("ro");
    // Count the UDP packets reaching the host's machine, by source.
    home_a
        .nft(&format!(
            "table inet watch {{\n  chain input {{\n    type filter hook input priority 0;\n    \
             iifname \"eth0\" meta l4proto udp ip saddr {RELAY_ADDR} counter\n    \
             iifname \"eth0\" meta l4proto udp ip saddr != {RELAY_ADDR} counter\n  }}\n}}\n"
        ))
        .unwrap();
    let (mut host, host_id, invite) = host_meeting(&home_a, dir.path(), "host", &relay);
    let mut hidden = home_b
        .member(
            dir.path(),
            "hidden",
            &[
                "--relay-only",
                "--audio-in",
                "tone:660",
                "--audio-out",
                "null",
                "--video-in",
                "testsrc",
                "join",
                &invite,
            ],
        )
        .unwrap();
    let hidden_id = peer_id_of(&mut hidden).unwrap();
    assert_eq!(
        connected_to(&mut hidden, &host_id, LIMIT)["path"],
        "relayed"
    );
    host.wait_for(LIMIT, "audio from the hidden member", |v| {
        v["event"] == "audio_started" && v["peer_id"] == hidden_id.as_str()
    })
    .unwrap();
    // Its video too, through TURN only.
    host.wait_for(LIMIT, "video from the hidden member", |v| {
        v["event"] == "video_started" && v["peer_id"] == hidden_id.as_str()
    })
    .unwrap();
    host.drain_for(Duration::from_secs(2));
    let video: Vec<f64> = host
        .seen
        .iter()
        .filter(|v| v["event"] == "video" && v["peer_id"] == hidden_id.as_str())
        .filter_map(|v| v["fps"].as_f64())
        .collect();
    assert!(
        video.last().is_some_and(|fps| *fps >= 25.0),
        "video through the relay: {video:?}"
    );
    let (packets, counters) = packet_counters(&home_a);
    assert_eq!(packets.len(), 2, "{counters}");
    assert!(packets[0] > 50, "media came through the relay: {counters}");
    assert_eq!(
        packets[1], 0,
        "nothing came from the hidden member's address: {counters}"
    );
}

/// Relay-only for the whole client (issue 15 item 3): two members in homes whose NATs allow
/// a direct path, both `--relay-only`, first with audio and then with chat only. Not one
/// packet travels between the two homes (counted at each host, both directions, every
/// protocol), every path is relayed, and chat and audio still arrive.
#[test]
fn relay_only_members_never_exchange_a_packet_between_their_homes() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let TwoHomes {
        _internet,
        dir,
        _relay,
        relay,
        home_a,
        home_b,
    } = two_full_cone_homes("rx");
    // At each host: every packet from, and every packet to, the other home.
    for (home, other) in [(&home_a, &home_b), (&home_b, &home_a)] {
        let other = &other.public_addr;
        home.nft(&format!(
            "table inet watch {{\n  chain input {{\n    type filter hook input priority 0;\n    \
             ip saddr {other} counter\n  }}\n  chain output {{\n    type filter hook output priority 0;\n    \
             ip daddr {other} counter\n  }}\n}}\n"
        ))
        .unwrap();
    }
    for (round, audio) in [(1, true), (2, false)] {
        let media: &[&str] = if audio {
            &["--audio-in", "tone:440", "--audio-out", "null"]
        } else {
            &[]
        };
        let with = |rest: &[&str]| -> Vec<String> {
            ["--relay-only"]
                .iter()
                .chain(media)
                .chain(rest)
                .map(|s| (*s).to_owned())
                .collect()
        };
        let args = with(&["new", "--relay", &relay]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut host = home_a
            .member(dir.path(), &format!("host{round}"), &args)
            .unwrap();
        let host_id = peer_id_of(&mut host).unwrap();
        let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
            .as_str()
            .unwrap()
            .to_owned();
        let args = with(&["join", &invite]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut guest = home_b
            .member(dir.path(), &format!("guest{round}"), &args)
            .unwrap();
        guest.wait_event("joined", LIMIT).unwrap();
        host.send_line("over the relay only").unwrap();
        guest.wait_chat("over the relay only", LIMIT).unwrap();
        if audio {
            assert_eq!(connected_to(&mut guest, &host_id, LIMIT)["path"], "relayed");
            guest
                .wait_for(LIMIT, "audio from the host", |v| {
                    v["event"] == "audio_started" && v["peer_id"] == host_id.as_str()
                })
                .unwrap();
        }
        guest.drain_for(Duration::from_secs(2));
        for m in [&host, &guest] {
            let paths: Vec<&Value> = m
                .seen
                .iter()
                .filter(|v| v["event"] == "control_path")
                .collect();
            assert!(
                paths.iter().all(|v| v["path"] == "relayed"),
                "{}: {paths:?}",
                m.label
            );
        }
        let guest_id = peer_id_of_seen(&guest).unwrap();
        for mut m in [host, guest] {
            m.close_stdin();
            m.wait_exit(LIMIT).unwrap();
        }
        // What the control messages told each member about the other (hello, heartbeats,
        // identify: the addresses its routing table kept, which the store remembers): relay
        // circuits only, neither home's address.
        for (label, other) in [
            (format!("host{round}"), &guest_id),
            (format!("guest{round}"), &host_id),
        ] {
            let store = Store::open(&dir.path().join(&label), &KeySource::InsecureKeyFile).unwrap();
            let known = store.known_peers().unwrap();
            let addrs = &known
                .iter()
                .find(|p| p.peer_id.to_string() == *other)
                .unwrap_or_else(|| panic!("{label} remembers the other member: {known:?}"))
                .addrs;
            assert!(!addrs.is_empty(), "{label}");
            for addr in addrs {
                let text = addr.to_string();
                assert!(
                    text.contains("/p2p-circuit"),
                    "{label} learned a direct address: {text}"
                );
                for home in [&home_a, &home_b] {
                    for ip in [&home.addr, &home.public_addr] {
                        assert!(
                            !text.contains(&format!("/{ip}/")),
                            "{label} learned a home address: {text}"
                        );
                    }
                }
            }
        }
    }
    for (home, name) in [(&home_a, "a"), (&home_b, "b")] {
        let (packets, counters) = packet_counters(home);
        assert_eq!(packets.len(), 2, "{counters}");
        assert_eq!(
            packets,
            [0, 0],
            "home {name} exchanged packets with the other home: {counters}"
        );
    }
}

/// Frames received from `peer` per media report (one a second), as reported by `member` in
/// the events from index `from` on: the growth of `rx_frames` between consecutive reports
/// (a new connection or a rejoin starts counting from zero again).
fn frames_per_report(member: &Proc, peer: &str, from: usize) -> Vec<u64> {
    let mut last = member.seen[..from]
        .iter()
        .rev()
        .find(|v| v["event"] == "media" && v["peer_id"] == peer)
        .and_then(|v| v["rx_frames"].as_u64())
        .unwrap_or(0);
    member.seen[from..]
        .iter()
        .filter(|v| v["event"] == "media" && v["peer_id"] == peer)
        .filter_map(|v| v["rx_frames"].as_u64())
        .map(|rx| {
            let grown = if rx < last { rx } else { rx - last };
            last = rx;
            grown
        })
        .collect()
}

/// A call whose relay is restarted mid-way: the relay on a fixed port (it comes back at the
/// same address, with the same data dir: identity and TURN secret, as a service manager
/// would start it), two homes behind `kind` NATs, the host's meeting and a silent guest.
struct RestartableRelayCall {
    internet: Internet,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    port: u16,
    relay: Option<Proc>,
    relay_addr: String,
    _homes: (Home, Home),
    _host: Proc,
    host_id: String,
    guest: Proc,
}

impl RestartableRelayCall {
    fn new(tag: &str, port: u16, kind: NatKind, profile: Option<&Profile>) -> Self {
        let mut internet = Internet::new(tag).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = relay_config(dir.path()).unwrap();
        let (relay, relay_addr) = internet.relay_on(dir.path(), Some(&config), port).unwrap();
        let homes = (
            internet.add_home_with(kind, profile).unwrap(),
            internet.add_home_with(kind, profile).unwrap(),
        );
        let (host, host_id, invite) = host_meeting(&homes.0, dir.path(), "host", &relay_addr);
        let guest = join_silently(&homes.1, dir.path(), "guest", &invite);
        Self {
            internet,
            dir,
            config,
            port,
            relay: Some(relay),
            relay_addr,
            _homes: homes,
            _host: host,
            host_id,
            guest,
        }
    }

    /// The relay dies (SIGKILL).
    fn kill_relay(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.kill9();
        }
    }

    /// The relay starts again, at the same address with the same identity.
    fn start_relay_again(&mut self) {
        let (relay, addr) = self
            .internet
            .relay_on(self.dir.path(), Some(&self.config), self.port)
            .unwrap();
        assert_eq!(addr, self.relay_addr, "same address, same identity");
        self.relay = Some(relay);
    }

    /// The guest's media reports of frames from the host, from event `from` on.
    fn frames_per_report(&self, from: usize) -> Vec<u64> {
        frames_per_report(&self.guest, &self.host_id, from)
    }
}

/// A relay restart mid-call: two members behind symmetric NATs talk through the relay's
/// TURN server, and their control plane runs through its circuits too. The relay is killed
/// and started again at once. Audio must flow again within 2 s of the relay being back (as
/// the media reports tell it: they come once a second), and keep flowing.
#[test]
fn a_relayed_call_recovers_within_two_seconds_of_a_relay_restart() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let mut call = RestartableRelayCall::new("rr", 4011, NatKind::Symmetric, None);
    let host_id = call.host_id.clone();
    assert_eq!(
        connected_to(&mut call.guest, &host_id, LIMIT)["path"],
        "relayed"
    );
    call.guest
        .wait_for(LIMIT, "audio from the host", |v| {
            v["event"] == "audio_started" && v["peer_id"] == host_id.as_str()
        })
        .unwrap();
    call.guest.drain_for(Duration::from_secs(3));
    let before = call.frames_per_report(0);
    assert!(
        before.iter().rev().take(2).all(|n| *n >= 40),
        "audio flows before the restart: {before:?}"
    );

    call.kill_relay();
    let mark = call.guest.seen.len();
    call.start_relay_again();
    #[allow(clippy::disallowed_methods)]
    let back = Instant::now();
    // Audio is back with the first report of new frames from the first short one on (a
    // report that counts fewer than a second's frames: the silence began there); reports
    // come every second, so this errs late by up to one. It must then keep flowing.
    let limit = Duration::from_secs(2);
    let mut resumed = None;
    while back.elapsed() < limit + Duration::from_secs(8) {
        call.guest.drain_for(Duration::from_millis(200));
        let reports = call.frames_per_report(mark);
        // Skip the reports that still count a whole second from before the kill.
        let gap = reports
            .iter()
            .position(|n| *n < 45)
            .unwrap_or(reports.len());
        match reports
            .iter()
            .skip(gap)
            .position(|n| *n > 0)
            .map(|i| i + gap)
        {
            Some(first) if resumed.is_none() => resumed = Some((back.elapsed(), first)),
            Some(first) if reports.len() >= first + 4 => break,
            _ => {}
        }
    }
    let reports = call.frames_per_report(mark);
    let Some((resumed, first)) = resumed else {
        panic!(
            "audio did not come back within {:?} of the relay restart; frames per report \
             since the kill: {reports:?}; other events: {:?}",
            back.elapsed(),
            call.guest.seen[mark..]
                .iter()
                .filter(|v| v["event"] != "media")
                .collect::<Vec<_>>()
        )
    };
    eprintln!(
        "relay restart: audio again {resumed:?} after the relay was back; frames per report \
         since the kill: {reports:?}"
    );
    assert!(
        resumed <= limit,
        "audio came back only {resumed:?} after the relay: {reports:?}"
    );
    assert!(
        reports.len() >= first + 4 && reports[first + 1..first + 4].iter().all(|n| *n >= 40),
        "audio keeps flowing after the recovery: {reports:?}"
    );
}

/// A relay restart mid-call on a pair that went direct: two port-restricted homes meet
/// directly (their control plane may still run through the relay's circuits); the relay
/// is killed and started again. The call does not notice: every media report from the kill
/// until well after the relay is back counts the frames of a whole second.
#[test]
fn a_direct_call_goes_on_through_a_relay_restart() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let mut call = RestartableRelayCall::new("rd", 4012, NatKind::PortRestricted, Some(&profile()));
    let host_id = call.host_id.clone();
    call.guest
        .wait_for(UPGRADE_LIMIT + LIMIT, "a direct media path", |v| {
            v["event"] == "connection"
                && v["state"] == "connected"
                && v["peer_id"] == host_id.as_str()
                && v["path"] == "direct"
        })
        .unwrap();
    // Past the retirement of a relayed connection it may have started on.
    call.guest.drain_for(Duration::from_secs(4));
    call.kill_relay();
    let mark = call.guest.seen.len();
    call.guest.drain_for(Duration::from_secs(2));
    call.start_relay_again();
    call.guest.drain_for(Duration::from_secs(5));
    let reports = call.frames_per_report(mark);
    eprintln!("direct call through a relay restart: frames per report {reports:?}");
    // The first report may count part of a second before the kill; every one is whole.
    assert!(reports.len() >= 5, "{reports:?}");
    assert!(
        reports.iter().all(|n| *n >= 45),
        "the call was interrupted: frames per report since the kill {reports:?}"
    );
    let lost: Vec<&Value> = call.guest.seen[mark..]
        .iter()
        .filter(|v| {
            v["event"] == "connection"
                && v["peer_id"] == host_id.as_str()
                && v["state"] != "connected"
        })
        .collect();
    assert!(lost.is_empty(), "the media connection broke: {lost:?}");
}

/// The longest run of near-silent 10 ms windows in `samples` (a 440 Hz tone played at
/// about -12 dBFS, so anything below -40 dBFS is a gap), in milliseconds.
fn longest_gap_ms(samples: &[i16]) -> u64 {
    let mut longest = 0u64;
    let mut run = 0u64;
    for window in samples.chunks(480) {
        let power = window.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / window.len() as f64;
        let dbfs = 10.0 * (power / f64::from(i16::MAX).powi(2)).max(1e-12).log10();
        if dbfs < -40.0 {
            run += 10;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// Relay first, direct later: two homes that cannot reach each other directly at first
/// (every packet between them dropped) meet over the relay; once the way opens, a direct
/// path attempt beside the relayed call finds it and takes over, the `connection` event
/// says so, and the guest's recording of the host's tone has no gap over 60 ms across the
/// switch.
#[test]
fn a_relayed_call_moves_to_a_direct_path_without_an_audio_gap() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let homes = two_full_cone_homes("up");
    let dir = homes.dir.path();
    // Home A's host drops every packet to and from home B: only the relay carries.
    cut_off(&homes.home_a, &homes.home_b);
    let (_host, host_id, invite) = host_meeting(&homes.home_a, dir, "up-host", &homes.relay);
    let recording = dir.join("guest.wav");
    let mut guest = homes
        .home_b
        .member(
            dir,
            "up-guest",
            &[
                "--audio-in",
                "silence",
                "--audio-out",
                &recording.display().to_string(),
                "join",
                &invite,
            ],
        )
        .unwrap();
    guest.wait_event("joined", LIMIT).unwrap();
    assert_eq!(connected_to(&mut guest, &host_id, LIMIT)["path"], "relayed");
    guest
        .wait_for(LIMIT, "audio from the host", |v| {
            v["event"] == "audio_started" && v["peer_id"] == host_id.as_str()
        })
        .unwrap();
    // Three seconds over the relay; then the way opens, and a direct path attempt finds it
    // (the one under way if its checks still go on, else the next).
    guest.drain_for(Duration::from_secs(3));
    reconnect(&homes.home_a);
    let switch = guest
        .wait_for(Duration::from_secs(45), "a switch to a direct path", |v| {
            v["event"] == "connection"
                && v["peer_id"] == host_id.as_str()
                && v["state"] == "connected"
                && v["path"] == "direct"
        })
        .unwrap();
    assert_eq!(switch["previous_path"], "relayed", "{switch}");
    assert!(switch["since_join_ms"].as_u64() > Some(0), "{switch}");
    // Past the relayed connection's retirement, then leave (the recording is finished).
    guest.drain_for(upgrade_settle());
    guest.send_line("/leave").unwrap();
    guest.wait_exit(LIMIT).unwrap();
    let frames = conclave_tests::wav_frames(&recording).unwrap();
    let samples: Vec<i16> = frames.concat();
    let first = samples
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("the host's tone was heard");
    // From 1 s into the tone to the last second (the leave ends the recording).
    let from = first + 48_000;
    let to = samples.len().saturating_sub(48_000);
    assert!(
        to > from + 5 * 48_000,
        "a recording of a few seconds at least"
    );
    let gap = longest_gap_ms(&samples[from..to]);
    eprintln!(
        "relayed → direct at {} ms after joining; longest gap in the tone {gap} ms",
        switch["since_join_ms"]
    );
    assert!(gap <= 60, "a gap of {gap} ms in the tone");
}

/// How long the guest stays after the switch: past the retirement of the relayed
/// connection, with room to spare.
fn upgrade_settle() -> Duration {
    Duration::from_secs(5)
}

/// How long, once a call went direct, its members' control connection may stay on a relay
/// circuit: a hole punching round (DCUtR, up to three attempts) and a retry, with room.
const CONTROL_FOLLOW_LIMIT: Duration = Duration::from_secs(15);

/// Whether `v` reports a direct control path towards `peer`.
fn is_direct_control(v: &Value, peer: &str) -> bool {
    v["event"] == "control_path" && v["peer_id"] == peer && v["path"] == "direct"
}

/// The control plane follows the media off the relay (relay first, direct later, item 4):
/// two port-restricted homes whose members listen on QUIC as well as TCP (as a client does
/// by default), behind a relay as sites run it (libp2p on TCP and QUIC, TURN). At first
/// every packet between the homes is dropped: the call and the control plane run through
/// the relay, and the control plane's hole punching fails. Then the way opens: once the
/// call is direct, each member's control connection is off the relay's circuit within
/// [`CONTROL_FOLLOW_LIMIT`] (a hole punching round still under way or retried, or the fresh
/// one started as the media went direct), stays off it, and chat goes on over it.
#[test]
fn the_control_plane_follows_a_call_that_went_direct_off_the_relay() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let mut internet = Internet::new("cf").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = relay_config(dir.path()).unwrap();
    let (_relay, relay_addr) = internet.relay_full(dir.path(), Some(&config)).unwrap();
    let homes = [
        internet
            .add_home_with(NatKind::PortRestricted, Some(&profile()))
            .unwrap(),
        internet
            .add_home_with(NatKind::PortRestricted, Some(&profile()))
            .unwrap(),
    ];
    cut_off(&homes[0], &homes[1]);
    let quic = homes
        .each_ref()
        .map(|home| format!("/ip4/{}/udp/0/quic-v1", home.addr));
    let (mut host, host_id, invite) = host_meeting_with(
        &homes[0],
        dir.path(),
        "host",
        &relay_addr,
        &["--listen", &quic[0]],
    );
    let mut guest = join_silently_with(
        &homes[1],
        dir.path(),
        "guest",
        &invite,
        &["--listen", &quic[1]],
    );
    let guest_id = peer_id_of(&mut guest).unwrap();
    assert_eq!(connected_to(&mut guest, &host_id, LIMIT)["path"], "relayed");
    // Three seconds over the relay (hole punching under way, failing); then the way opens.
    guest.drain_for(Duration::from_secs(3));
    host.drain_for(Duration::from_millis(100));
    reconnect(&homes[0]);
    guest
        .wait_for(Duration::from_secs(45), "a direct media path", |v| {
            v["event"] == "connection"
                && v["state"] == "connected"
                && v["peer_id"] == host_id.as_str()
                && v["path"] == "direct"
        })
        .unwrap();
    #[allow(clippy::disallowed_methods)]
    let media_direct = Instant::now();
    guest
        .wait_for(CONTROL_FOLLOW_LIMIT, "a direct control path", |v| {
            is_direct_control(v, &host_id)
        })
        .unwrap();
    host.wait_for(CONTROL_FOLLOW_LIMIT, "a direct control path", |v| {
        is_direct_control(v, &guest_id)
    })
    .unwrap();
    eprintln!(
        "control plane direct at both members {:?} after the media went direct",
        media_direct.elapsed()
    );
    guest.drain_for(Duration::from_secs(3));
    host.drain_for(Duration::from_millis(100));
    for (member, peer) in [(&guest, &host_id), (&host, &guest_id)] {
        let last = member
            .seen
            .iter()
            .rev()
            .find(|v| v["event"] == "control_path" && v["peer_id"] == peer.as_str())
            .unwrap();
        assert_eq!(last["path"], "direct", "{}: {last}", member.label);
        assert!(
            !last["remote"]
                .as_str()
                .unwrap_or_default()
                .contains("p2p-circuit"),
            "{last}"
        );
    }
    guest.send_line("over the direct control path").unwrap();
    host.wait_chat("over the direct control path", LIMIT)
        .unwrap();
}
