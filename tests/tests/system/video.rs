//! Encrypted video across real processes: VP8 under SFrame with MLS-derived keys over the
//! WebRTC mesh, `testsrc` at every member, each receiver measuring frame rate, freezes,
//! latency and quality against the exact reference, and writing what it saw
//! (`--video-out`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use conclave_tests::{Proc, peer_id_of, start_relay};

const LIMIT: Duration = Duration::from_secs(30);
/// Lowest acceptable frame rate of a reporting period once a sender's video runs.
const MIN_FPS: f64 = 25.0;
/// Lowest acceptable luma PSNR of a received picture against its reference.
const MIN_PSNR_DB: f64 = 32.0;

fn spawn(dir: &Path, label: &str, command: &[&str]) -> Proc {
    let out = dir.join(format!("{label}-video"));
    let mut args = vec![
        "--media-bind",
        "127.0.0.1:0",
        "--audio-in",
        "silence",
        "--video-in",
        "testsrc",
        "--video-out",
    ];
    let out = out.display().to_string();
    args.push(&out);
    args.extend_from_slice(command);
    Proc::conclave(label, &dir.join(label), &args).unwrap()
}

/// The `video` events in `seen`, by sender, in order.
fn video_events(seen: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_sender: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in seen.iter().filter(|v| v["event"] == "video") {
        let sender = event["peer_id"].as_str().unwrap_or_default().to_owned();
        by_sender.entry(sender).or_default().push(event.clone());
    }
    by_sender
}

/// Checks what `receiver` saw of each of `senders` (its events `seen` while everyone was
/// in the call): after the first period with pictures (partly before the first one), every
/// one-second period ran at ≥ 25 fps with no freeze, and every picture was within the PSNR
/// bound.
fn check_smooth(receiver: &str, seen: &[Value], senders: &[String]) {
    let events = video_events(seen);
    for sender in senders {
        let periods = events
            .get(sender)
            .unwrap_or_else(|| panic!("{receiver}: no video from {sender}"));
        let running: Vec<&Value> = periods
            .iter()
            .skip_while(|v| v["frames"].as_u64().unwrap_or(0) == 0)
            .skip(1)
            .collect();
        assert!(
            running.len() >= 6,
            "{receiver}: only {} full periods of video from {sender}: {periods:?}",
            running.len()
        );
        for period in &running {
            let fps = period["fps"].as_f64().unwrap();
            assert!(
                fps >= MIN_FPS,
                "{receiver}: {fps} fps from {sender}: {period}"
            );
            assert_eq!(period["freezes"], 0, "{receiver}: {period}");
            let psnr = period["psnr_db"]["min"].as_f64().unwrap_or(f64::INFINITY);
            assert!(
                psnr >= MIN_PSNR_DB,
                "{receiver}: PSNR {psnr} from {sender}: {period}"
            );
            assert!(period["latency_ms"]["p50"].as_u64().is_some(), "{period}");
        }
        let last = periods.last().unwrap();
        assert_eq!(last["undecryptable"], 0, "{receiver}: {last}");
    }
}

#[test]
fn three_members_see_each_other_smoothly_and_sharply() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let mut host = spawn(dir.path(), "host", &["new", "--relay", &relay_addr]);
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut second = spawn(dir.path(), "second", &["join", &invite]);
    let mut third = spawn(dir.path(), "third", &["join", &invite]);
    let ids: Vec<String> = [&mut host, &mut second, &mut third]
        .into_iter()
        .map(|p| peer_id_of(p).unwrap())
        .collect();
    // Joining → the first picture of each other member, reported.
    for proc in [&mut host, &mut second, &mut third] {
        for _ in 0..2 {
            proc.wait_for(LIMIT, "video started", |v| v["event"] == "video_started")
                .unwrap();
            proc.seen.retain(|v| v["event"] != "video_started");
        }
    }
    // Eight seconds of call; then what each saw while all were in it.
    host.drain_for(Duration::from_secs(8));
    let mut in_call = Vec::new();
    for proc in [&mut host, &mut second, &mut third] {
        proc.drain_for(Duration::from_millis(100));
        in_call.push(proc.seen.clone());
    }
    for proc in [&mut host, &mut second, &mut third] {
        proc.send_line("/leave").unwrap();
    }
    for proc in [&mut host, &mut second, &mut third] {
        assert_eq!(
            proc.wait_exit(LIMIT).unwrap().code(),
            Some(0),
            "{}",
            proc.label
        );
    }
    for (index, proc) in [&host, &second, &third].into_iter().enumerate() {
        let others: Vec<String> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, id)| id.clone())
            .collect();
        check_smooth(&proc.label, &in_call[index], &others);
        // What it saw is on disk: a line per picture, snapshots, frame numbers rising.
        for sender in &others {
            let sent = dir
                .path()
                .join(format!("{}-video", proc.label))
                .join(sender);
            let log = std::fs::read_to_string(sent.join("frames.tsv")).unwrap();
            let frames: Vec<u64> = log
                .lines()
                .skip(1)
                .filter_map(|line| line.split('\t').nth(1)?.parse().ok())
                .collect();
            assert!(
                frames.len() > 220,
                "{}: {} pictures from {sender}",
                proc.label,
                frames.len()
            );
            assert!(frames.windows(2).all(|w| w[0] < w[1]), "frame numbers rise");
            assert!(sent.join("snapshot-0005.png").exists());
        }
    }
}
