//! Audio through real packet loss: four hosts on a private LAN (network namespaces), and
//! the listener's host drops 5 % of incoming UDP at random (nftables `numgen`; `tc netem`
//! is not available on this kernel). Audio must go on, with FEC and concealment filling the
//! holes.

use std::time::Duration;

use conclave_core::tones::tone_power;

use conclave_tests::lan_audio::{recording_listener, tone_host};
use conclave_tests::netns::{Lan, available};
use conclave_tests::{tone_heard, wav_frames};

#[test]
fn audio_goes_on_through_five_percent_loss() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let lan = Lan::new("al", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let (relay, relay_addr) = lan.relay(0, dir.path()).unwrap();
    let (host, invite) = tone_host(&lan, 1, dir.path(), "host", 440, &relay_addr).unwrap();
    let _second = lan
        .member(
            2,
            dir.path(),
            "second",
            &["--audio-in", "tone:660", "join", &invite],
        )
        .unwrap();
    // The listener's host loses 5 % of the UDP (media) it receives.
    lan.nft(3, "add table inet loss").unwrap();
    lan.nft(
        3,
        "add chain inet loss incoming { type filter hook input priority 0 ; }",
    )
    .unwrap();
    lan.nft(
        3,
        "add rule inet loss incoming meta l4proto udp numgen random mod 100 < 5 counter drop",
    )
    .unwrap();
    let (mut listener, wav) = recording_listener(&lan, 3, dir.path(), &invite, 16).unwrap();
    assert_eq!(
        listener.wait_exit(Duration::from_secs(40)).unwrap().code(),
        Some(0),
        "{}",
        listener.stderr_tail()
    );

    let ruleset = lan.nft(3, "list table inet loss").unwrap();
    let dropped: u64 = ruleset
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 20, "the network really lost packets: {ruleset}");

    let lost: u64 = listener
        .seen
        .iter()
        .filter(|v| v["event"] == "media")
        .map(|v| v["lost_frames"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let recovered: u64 = listener
        .seen
        .iter()
        .filter(|v| v["event"] == "media")
        .map(|v| v["recovered_frames"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0);
    assert!(lost > 0, "losses reached the jitter buffer");
    assert!(recovered > 0, "FEC recovered some of them");

    let frames = wav_frames(&wav).unwrap();
    // From one second after both speakers are heard to the end (connections may come up a
    // little later under loss and load; from then on nothing may be missing).
    let heard = |hz: f64| {
        frames
            .iter()
            .position(|f| tone_heard(f, hz))
            .unwrap_or_else(|| {
                let events: Vec<_> = listener
                    .seen
                    .iter()
                    .filter(|v| v["event"] != "media")
                    .collect();
                panic!(
                    "the {hz} Hz speaker was never heard in {} frames; \
                     the listener saw {events:?}{}",
                    frames.len(),
                    listener.stderr_tail()
                )
            })
    };
    let (from440, from660) = (heard(440.0), heard(660.0));
    eprintln!(
        "440 Hz heard from frame {from440}, 660 Hz from frame {from660}, of {}",
        frames.len()
    );
    let first = from440.max(from660) + 50;
    assert!(
        first < frames.len() - 25 - 250,
        "both speakers heard for at least 5 s (from frame {first} of {})",
        frames.len()
    );
    let body: Vec<i16> = frames[first..frames.len() - 25].concat();
    let (p440, p660, p1000) = (
        tone_power(&body, 440.0),
        tone_power(&body, 660.0),
        tone_power(&body, 1000.0),
    );
    assert!(
        p440 > 100.0 * p1000 && p660 > 100.0 * p1000,
        "both speakers clear through loss: {p440} {p660} {p1000}"
    );
    let silent = frames[first..frames.len() - 25]
        .iter()
        .filter(|f| f.iter().all(|s| s.unsigned_abs() < 300))
        .count();
    assert!(
        silent <= 2,
        "{silent} silent frames: loss must be filled by FEC/PLC"
    );
    drop(host);
    drop(relay);
}
