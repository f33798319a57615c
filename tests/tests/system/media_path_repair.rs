//! A media path that breaks mid-call is repaired by an ICE restart, without anyone leaving;
//! a connection whose DTLS handshake stalls is replaced by a new one.
//!
//! Two members on a private LAN (network namespaces); the control plane runs over TCP, so
//! dropping every UDP packet of the listener's host cuts only the media path. The block
//! lasts longer than ICE's failure timeout, so the connection cannot simply resume: the
//! offering side must restart ICE (retrying while the path stays down). After the block
//! is lifted the listener must hear the speaker again within a few seconds, with the same
//! connection (`ice_restarts` ≥ 1) and nobody reported as gone.

use std::time::{Duration, Instant};

use conclave_tests::lan_audio::{recording_listener, tone_host};
use conclave_tests::netns::{Lan, available};
use conclave_tests::{tone_heard, wav_frames};

const LIMIT: Duration = Duration::from_secs(20);
/// Longer than ICE_DISCONNECTED_TIMEOUT + ICE_FAILED_TIMEOUT (3 s + 4 s).
const BLOCK: Duration = Duration::from_secs(10);
/// How long the ServerHellos stay blocked after the first one was dropped: long enough to
/// lose the flight's retransmission too (1 s later), over before the engine's
/// HANDSHAKE_TIMEOUT (4 s) replaces the connection.
const HANDSHAKE_BLOCK: Duration = Duration::from_millis(1500);
/// Longest wait for the first DTLS handshake to begin (joining on a loaded machine).
const HANDSHAKE_START_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a_broken_media_path_is_repaired_by_ice_restart() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let lan = Lan::new("pr", 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (relay, relay_addr) = lan.relay(0, dir.path()).unwrap();
    let (speaker, invite) = tone_host(&lan, 1, dir.path(), "speaker", 440, &relay_addr).unwrap();
    let (mut listener, wav) = recording_listener(&lan, 2, dir.path(), &invite, 30).unwrap();
    listener.wait_event("audio_started", LIMIT).unwrap();
    listener.drain_for(Duration::from_secs(2));

    // Cut every UDP packet in and out of the listener's host.
    lan.nft(2, "add table inet cut").unwrap();
    for hook in ["input", "output"] {
        lan.nft(
            2,
            &format!("add chain inet cut {hook} {{ type filter hook {hook} priority 0 ; }}"),
        )
        .unwrap();
        lan.nft(
            2,
            &format!("add rule inet cut {hook} meta l4proto udp drop"),
        )
        .unwrap();
    }
    #[allow(clippy::disallowed_methods)]
    let cut = Instant::now();
    listener.drain_for(BLOCK);
    lan.nft(2, "delete table inet cut").unwrap();
    let restored_after = cut.elapsed();

    assert_eq!(
        listener.wait_exit(Duration::from_secs(40)).unwrap().code(),
        Some(0),
        "{}",
        listener.stderr_tail()
    );
    let connection_states: Vec<(String, u64)> = listener
        .seen
        .iter()
        .filter(|v| v["event"] == "connection")
        .map(|v| {
            (
                v["state"].as_str().unwrap_or_default().to_owned(),
                v["ice_restarts"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let broke = connection_states
        .iter()
        .position(|(state, _)| state == "disconnected" || state == "failed")
        .unwrap_or_else(|| panic!("the cut was noticed: {connection_states:?}"));
    assert!(
        connection_states[broke..]
            .iter()
            .any(|(state, restarts)| state == "connected" && *restarts >= 1),
        "the same connection came back through an ICE restart: {connection_states:?}"
    );
    assert!(
        !listener.seen.iter().any(|v| v["event"] == "member_left"),
        "nobody left the meeting"
    );

    // The recording: the tone before the cut, silence during it, the tone again after.
    let frames = wav_frames(&wav).unwrap();
    let heard = |frame: &Vec<i16>| tone_heard(frame, 440.0);
    let first = frames.iter().position(heard).expect("audio arrived");
    // The longest run of frames without the tone after it started: the cut.
    let (mut silent_from, mut silent_len, mut run_start) = (first, 0, None);
    for (i, frame) in frames.iter().enumerate().skip(first) {
        match (heard(frame), run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(start)) => {
                if i - start > silent_len {
                    (silent_from, silent_len) = (start, i - start);
                }
                run_start = None;
            }
            _ => {}
        }
    }
    assert!(
        silent_len > 100,
        "the cut silenced the speaker, and the speaker was heard again after the repair"
    );
    let back = silent_from + silent_len;
    let gap = Duration::from_millis(20 * silent_len as u64);
    eprintln!("silent for {gap:?}; path restored after {restored_after:?}");
    assert!(
        gap < restored_after + Duration::from_secs(8),
        "audio came back {gap:?} after the cut, the path was restored after {restored_after:?}"
    );
    let tail = &frames[back..];
    assert!(
        tail.len() > 100 && tail.iter().filter(|f| heard(f)).count() > tail.len() * 9 / 10,
        "audio keeps flowing after the repair"
    );
    drop(speaker);
    drop(relay);
}

/// The DTLS server's second flight (ServerHello, Certificate, ..., in one or more datagrams)
/// is lost, and lost again when sent again: webrtc-rs then stops sending it for good once
/// the client's repeat of its own flight arrives, so the handshake would never complete
/// (rtc-dtls 0.21). The offering side must notice the stalled handshake and start over
/// with a new connection, and the listener must hear the speaker a few seconds later.
#[test]
fn a_stalled_dtls_handshake_is_replaced_by_a_new_connection() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let lan = Lan::new("hs", 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (relay, relay_addr) = lan.relay(0, dir.path()).unwrap();
    let (speaker, invite) = tone_host(&lan, 1, dir.path(), "speaker", 440, &relay_addr).unwrap();

    // Drop every datagram that starts a DTLS ServerHello (record type 22 = handshake, and
    // handshake type 2 right after the 13-byte record header), in and out of the
    // listener's host: whichever side is the DTLS server, its second flight is lost.
    lan.nft(2, "add table inet hello").unwrap();
    for hook in ["input", "output"] {
        lan.nft(
            2,
            &format!("add chain inet hello {hook} {{ type filter hook {hook} priority 0 ; }}"),
        )
        .unwrap();
        lan.nft(
            2,
            &format!(
                "add rule inet hello {hook} meta l4proto udp @th,64,8 0x16 @th,168,8 0x02 \
                 counter drop"
            ),
        )
        .unwrap();
    }
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let (mut listener, wav) = recording_listener(&lan, 2, dir.path(), &invite, 16).unwrap();
    // The block lasts from the first dropped ServerHello (whenever the joining listener
    // gets that far) for HANDSHAKE_BLOCK.
    let dropped = |lan: &Lan| -> u64 {
        let ruleset = lan.nft(2, "list table inet hello").unwrap_or_default();
        ruleset
            .split_whitespace()
            .zip(ruleset.split_whitespace().skip(1))
            .filter(|(word, _)| *word == "packets")
            .filter_map(|(_, n)| n.parse::<u64>().ok())
            .sum()
    };
    while dropped(&lan) == 0 {
        assert!(
            started.elapsed() < HANDSHAKE_START_LIMIT,
            "no DTLS handshake began within {HANDSHAKE_START_LIMIT:?}"
        );
        listener.drain_for(Duration::from_millis(50));
    }
    let first_drop = started.elapsed();
    listener.drain_for(HANDSHAKE_BLOCK);
    let lost = dropped(&lan);
    lan.nft(2, "delete table inet hello").unwrap();
    eprintln!("{lost} ServerHello datagrams dropped, the first {first_drop:?} after the start");

    assert_eq!(
        listener.wait_exit(Duration::from_secs(40)).unwrap().code(),
        Some(0),
        "{}",
        listener.stderr_tail()
    );
    let frames = wav_frames(&wav).unwrap();
    let first = frames
        .iter()
        .position(|f| tone_heard(f, 440.0))
        .unwrap_or_else(|| {
            panic!(
                "the speaker was never heard in {} frames (started {:?} ago){}",
                frames.len(),
                started.elapsed(),
                listener.stderr_tail()
            )
        });
    let heard_after = Duration::from_millis(20 * first as u64);
    eprintln!("heard {heard_after:?} after the listener started");
    // HANDSHAKE_TIMEOUT after ICE found its path, plus a new negotiation.
    assert!(
        heard_after < first_drop + Duration::from_secs(7),
        "the speaker was heard only {heard_after:?} after the listener started \
         (the handshake began {first_drop:?} after it)"
    );
    let tail = &frames[first..];
    assert!(
        tail.iter().filter(|f| tone_heard(f, 440.0)).count() > tail.len() * 9 / 10,
        "audio keeps flowing once the new connection is up"
    );
    drop(speaker);
    drop(relay);
}
