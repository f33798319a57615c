//! Encrypted audio across real processes on loopback: WebRTC between every pair, SFrame
//! with MLS-derived keys, Opus. A listener records what it hears to a WAV file.

use std::path::Path;
use std::time::{Duration, Instant};

use conclave_core::tones::tone_power;

use conclave_tests::{Proc, peer_id_of, start_relay, wav_frames};

const LIMIT: Duration = Duration::from_secs(30);

fn media_args(dir: &Path, label: &str, audio_in: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--media-bind", "127.0.0.1:0", "--audio-in", audio_in]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if label == "listener" {
        args.push("--audio-out".into());
        args.push(dir.join("listener.wav").display().to_string());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn spawn(dir: &Path, label: &str, audio_in: &str, command: &[&str]) -> Proc {
    let args = media_args(dir, label, audio_in, command);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::conclave(label, &dir.join(label), &args).unwrap()
}

#[test]
fn a_listener_hears_both_speakers_and_a_kicked_speaker_falls_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let mut host = spawn(
        dir.path(),
        "host",
        "tone:440",
        &["new", "--relay", &relay_addr],
    );
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut second = spawn(dir.path(), "second", "tone:660", &["join", &invite]);
    let mut kicked = spawn(dir.path(), "kicked", "tone:1200", &["join", &invite]);
    let mut listener = spawn(
        dir.path(),
        "listener",
        "silence",
        &["join", &invite, "--duration", "9"],
    );
    let kicked_id = peer_id_of(&mut kicked).unwrap();
    let started = Instant::now();
    // Audio flows once the listener has a connection to each speaker.
    let mut connected = Vec::new();
    for _ in 0..3 {
        let event = listener
            .wait_for(LIMIT, "connected", |v| {
                v["event"] == "connection" && v["state"] == "connected"
            })
            .unwrap();
        connected.push(event);
        listener
            .seen
            .retain(|v| !(v["event"] == "connection" && v["state"] == "connected"));
    }
    let connected_after = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let kick_at = started.elapsed();
    host.send_line(&format!("/kick {kicked_id}")).unwrap();
    let left = kicked.wait_event("left", LIMIT).unwrap();
    assert_eq!(left["reason"], "kicked");
    second.drain_for(Duration::from_millis(10));
    assert_eq!(listener.wait_exit(LIMIT).unwrap().code(), Some(0));

    let frames = wav_frames(&dir.path().join("listener.wav")).unwrap();
    let frame_at = |t: Duration| (t.as_millis() / 20) as usize;
    // From 1 s after all connections to the kick: all three tones.
    let before: Vec<i16> =
        frames[frame_at(connected_after + Duration::from_secs(1))..frame_at(kick_at)].concat();
    let (p440, p660, p1200, p1000) = (
        tone_power(&before, 440.0),
        tone_power(&before, 660.0),
        tone_power(&before, 1200.0),
        tone_power(&before, 1000.0),
    );
    assert!(
        p440 > 100.0 * p1000 && p660 > 100.0 * p1000 && p1200 > 100.0 * p1000,
        "before the kick: {p440} {p660} {p1200} {p1000}"
    );
    // From 1.5 s after the kick to the end: the two remaining speakers, not the kicked one.
    let after: Vec<i16> =
        frames[frame_at(kick_at + Duration::from_millis(1500))..frames.len() - 25].concat();
    let (p440, p660, p1200) = (
        tone_power(&after, 440.0),
        tone_power(&after, 660.0),
        tone_power(&after, 1200.0),
    );
    assert!(
        p440 > 100.0 * p1200 && p660 > 100.0 * p1200,
        "after the kick the kicked speaker is gone: {p440} {p660} {p1200}"
    );
    // No gap in the remaining speakers' audio across the epoch change: never 5 silent
    // frames (100 ms) in a row between the first second after connecting and the end.
    let window = &frames[frame_at(connected_after + Duration::from_secs(1))..frames.len() - 25];
    let mut run = 0;
    let mut longest = 0;
    for frame in window {
        let silent = frame.iter().all(|s| s.unsigned_abs() < 300);
        run = if silent { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    assert!(longest < 5, "a gap of {} ms in the audio", longest * 20);
    assert!(
        connected.iter().all(|v| v["path"] == "direct"),
        "loopback paths are direct: {connected:?}"
    );
    let rtts: Vec<f64> = listener
        .seen
        .iter()
        .filter(|v| v["event"] == "media")
        .filter_map(|v| v["rtt_ms"].as_f64())
        .collect();
    assert!(
        !rtts.is_empty() && rtts.iter().all(|rtt| (0.0..100.0).contains(rtt)),
        "round-trip times are measured: {rtts:?}"
    );
    let stats = listener
        .seen
        .iter()
        .rfind(|v| v["event"] == "media")
        .cloned()
        .expect("media stats were reported");
    assert!(stats["rx_frames"].as_u64().unwrap() > 100, "{stats}");
}

/// Asking for the sound devices on a machine without any (like CI) gives one clear message
/// per device and the meeting goes on, listen-only. (With devices present, audio flows.)
#[test]
fn missing_sound_devices_leave_the_meeting_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Proc::conclave(
        "host",
        &dir.path().join("host"),
        &[
            "--media-bind",
            "127.0.0.1:0",
            "--audio-in",
            "device",
            "--audio-out",
            "device",
            "new",
            "--duration",
            "3",
        ],
    )
    .unwrap();
    host.wait_event("joined", LIMIT).unwrap();
    let status = host.wait_exit(LIMIT).unwrap();
    assert_eq!(status.code(), Some(0));
    let warnings: Vec<String> = host
        .seen
        .iter()
        .filter(|v| v["event"] == "error" && v["kind"] == "media")
        .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    let has_devices = warnings.is_empty();
    if !has_devices {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("microphone") && w.contains("listen-only")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("speakers")),
            "{warnings:?}"
        );
    }
}
