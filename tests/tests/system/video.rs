//! Encrypted video across real processes: VP8 under SFrame with MLS-derived keys over the
//! WebRTC mesh, `testsrc` at every member, each receiver measuring frame rate, freezes,
//! latency and quality against the exact reference, and writing what it saw
//! (`--video-out`). And a sender whose CPU cannot keep up sends a smaller picture rather
//! than fewer frames.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use conclave_tests::cgroup::CpuLimit;
use conclave_tests::nat::{Internet, serial};
use conclave_tests::netns::available;
use conclave_tests::wan::Profile;
use conclave_tests::{Proc, peer_id_of, start_relay};

const LIMIT: Duration = Duration::from_secs(30);
/// Lowest acceptable frame rate over the call once a sender's video runs.
const MIN_FPS: f64 = 25.0;
/// Lowest acceptable frame rate of one one-second period.
const MIN_PERIOD_FPS: f64 = 15.0;
/// Lowest acceptable luma PSNR of a received picture against its reference. Three members
/// at 30 fps on two loaded cores dip to 31 dB for a frame now and then (the encoder trades
/// quality for time under CPU pressure: seen with a core taken by another process, before
/// and after the relay-first change alike); a broken picture is far below 20 dB.
const MIN_PSNR_DB: f64 = 30.0;

/// The media flags of a member sending testsrc and writing what it receives to
/// `dir/<label>-video`, then `command`.
fn video_args(dir: &Path, label: &str, video_in: &str, command: &[&str]) -> Vec<String> {
    let out = dir.join(format!("{label}-video")).display().to_string();
    let mut args: Vec<String> = [
        "--audio-in",
        "silence",
        "--video-in",
        video_in,
        "--video-out",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.push(out);
    args.extend(command.iter().map(|s| (*s).to_owned()));
    args
}

fn spawn(dir: &Path, label: &str, command: &[&str]) -> Proc {
    spawn_with(dir, label, "testsrc", command)
}

fn spawn_with(dir: &Path, label: &str, video_in: &str, command: &[&str]) -> Proc {
    let mut args = vec!["--media-bind".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(video_args(dir, label, video_in, command));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::conclave(label, &dir.join(label), &args).unwrap()
}

/// A relay on loopback, and a host (sending testsrc) that created a meeting; returns them
/// and the invite.
fn relay_and_host(dir: &Path) -> (Proc, Proc, String) {
    let (relay, relay_addr) = start_relay(dir).unwrap();
    let mut host = spawn(dir, "host", &["new", "--relay", &relay_addr]);
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    (relay, host, invite)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits until `proc` decoded a first picture from each of `count` members.
pub(crate) fn wait_video_started(proc: &mut Proc, count: usize) {
    for _ in 0..count {
        proc.wait_for(LIMIT, "video started", |v| v["event"] == "video_started")
            .unwrap();
        proc.seen.retain(|v| v["event"] != "video_started");
    }
}

/// Runs the call for `hold` and returns what each member saw meanwhile; then everybody
/// leaves.
fn hold_and_leave(members: &mut [Proc], hold: Duration) -> Vec<Vec<Value>> {
    let end = std::time::Instant::now() + hold;
    while std::time::Instant::now() < end {
        for m in members.iter_mut() {
            m.drain_for(Duration::from_millis(200));
        }
    }
    let seen = members.iter().map(|m| m.seen.clone()).collect();
    for m in members.iter_mut() {
        m.send_line("/leave").unwrap();
    }
    for m in members.iter_mut() {
        assert_eq!(m.wait_exit(LIMIT).unwrap().code(), Some(0), "{}", m.label);
    }
    seen
}

/// The others of member `index`.
fn others(ids: &[String], index: usize) -> Vec<String> {
    ids.iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, id)| id.clone())
        .collect()
}

/// What `receiver` wrote of each picture of `sender`: when it was shown (Unix ms), its
/// testsrc frame number and capture time (Unix ms, low 32 bits).
fn frames_written(dir: &Path, receiver: &str, sender: &str) -> Vec<(u64, u64, u32)> {
    let log = dir
        .join(format!("{receiver}-video"))
        .join(sender)
        .join("frames.tsv");
    std::fs::read_to_string(&log)
        .unwrap_or_else(|err| panic!("{}: {err}", log.display()))
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let at = fields.next()?.parse().ok()?;
            let frame = fields.next()?.parse().ok()?;
            let captured = fields.next()?.parse().ok()?;
            Some((at, frame, captured))
        })
        .collect()
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
/// in the call): after the first period with pictures (partly before the first one), ≥ 25
/// fps over the call, no one-second period below 15 fps (a repaired loss moves a few frames
/// into the next period, which then has more), no freeze over 500 ms, and every picture
/// within the PSNR bound.
fn check_smooth(receiver: &str, seen: &[Value], senders: &[String]) {
    check_smooth_within(receiver, seen, senders, Duration::from_millis(500));
}

/// As [`check_smooth`], with gaps up to `freeze_bound` allowed (over 500 ms: a path across
/// the world, where a keyframe after a loss takes more than a round trip to come; a second
/// with such a gap may then fall under 15 fps).
fn check_smooth_within(receiver: &str, seen: &[Value], senders: &[String], freeze_bound: Duration) {
    let far = freeze_bound > Duration::from_millis(500);
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
        let mean_fps = running
            .iter()
            .filter_map(|p| p["fps"].as_f64())
            .sum::<f64>()
            / running.len() as f64;
        assert!(
            mean_fps >= MIN_FPS,
            "{receiver}: {mean_fps:.1} fps from {sender}: {running:?}"
        );
        for period in &running {
            let fps = period["fps"].as_f64().unwrap();
            let gap = period["longest_gap_ms"].as_u64().unwrap_or(u64::MAX);
            if far {
                assert!(
                    gap <= freeze_bound.as_millis() as u64,
                    "{receiver}: a {gap} ms gap from {sender}: {period}"
                );
            } else {
                assert!(
                    fps >= MIN_PERIOD_FPS,
                    "{receiver}: {fps} fps from {sender}: {period}"
                );
                assert_eq!(period["freezes"], 0, "{receiver}: {period}");
            }
            let psnr = period["psnr_db"]["min"].as_f64().unwrap_or(f64::INFINITY);
            assert!(
                psnr >= MIN_PSNR_DB,
                "{receiver}: PSNR {psnr} from {sender}: {period}"
            );
            assert!(period["latency_ms"]["p50"].as_u64().is_some(), "{period}");
            let decode = period["stages_ms"]["decode"].as_f64();
            assert!(
                decode.is_some_and(|ms| ms > 0.0),
                "{receiver}: no decode time measured: {period}"
            );
        }
        let last = periods.last().unwrap();
        assert_eq!(last["undecryptable"], 0, "{receiver}: {last}");
    }
}

#[test]
fn three_members_see_each_other_smoothly_and_sharply() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, host, invite) = relay_and_host(dir.path());
    let second = spawn(dir.path(), "second", &["join", &invite]);
    let third = spawn(dir.path(), "third", &["join", &invite]);
    let mut members = vec![host, second, third];
    let ids: Vec<String> = members.iter_mut().map(|p| peer_id_of(p).unwrap()).collect();
    // Joining → the first picture of each other member, reported.
    for m in &mut members {
        wait_video_started(m, 2);
    }
    let seen = hold_and_leave(&mut members, Duration::from_secs(8));
    for (index, m) in members.iter().enumerate() {
        let others = others(&ids, index);
        check_smooth(&m.label, &seen[index], &others);
        // Its own video as sent: 30 fps at 360p, each frame timed from capture to sealed.
        let sent: Vec<&Value> = seen[index]
            .iter()
            .filter(|v| v["event"] == "video_sent" && v["frames"].as_u64() > Some(0))
            .collect();
        assert!(sent.len() >= 6, "{}: {sent:?}", m.label);
        for period in sent.iter().skip(1) {
            assert_eq!(
                (&period["width"], &period["height"]),
                (&json!(640), &json!(360))
            );
            assert!(period["fps"].as_f64() >= Some(MIN_FPS), "{period}");
            let encode = period["encode_ms"]["p50"].as_f64().unwrap_or(0.0);
            assert!(encode > 0.0 && encode < 33.0, "{}: {period}", m.label);
        }
        // What it saw is on disk: a line per picture, snapshots, frame numbers rising.
        for sender in &others {
            let frames = frames_written(dir.path(), &m.label, sender);
            assert!(
                frames.len() > 220,
                "{}: {} pictures from {sender}",
                m.label,
                frames.len()
            );
            assert!(
                frames.windows(2).all(|w| w[0].1 < w[1].1),
                "frame numbers rise"
            );
            let snapshots = dir.path().join(format!("{}-video", m.label)).join(sender);
            assert!(snapshots.join("snapshot-0005.png").exists());
        }
    }
}

/// The same three members, each in its own home behind a port-restricted NAT, between
/// cities (`continental`, 100 ms RTT home to home; `CONCLAVE_WAN_PROFILE` picks another):
/// after the first second, ≥ 25 fps from each other member and no freeze over 500 ms
/// (1 s across the world, `intercontinental`, as the issue allows).
#[test]
fn three_members_far_apart_see_each_other_smoothly() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let profile = Profile::from_env_or(Profile::CONTINENTAL);
    let dir = tempfile::tempdir().unwrap();
    let mut internet = Internet::new("vid").unwrap();
    let (_relay, _homes, mut members, ids) = super::video_rate::meeting_of_three(
        &mut internet,
        dir.path(),
        [(&profile, "silence"); 3],
        "m",
    );
    let seen = hold_and_leave(&mut members, Duration::from_secs(10));
    eprintln!("{}: video held", profile.name);
    let bound = super::video_rate::freeze_bound(&profile);
    for (index, m) in members.iter().enumerate() {
        check_smooth_within(&m.label, &seen[index], &others(&ids, index), bound);
    }
}

/// The host removes a member: the removed member decodes no picture captured after the
/// others moved to the epoch without it (nothing sealed under the new keys opens for it),
/// while the two others go on seeing each other.
#[test]
fn a_kicked_member_sees_no_new_picture() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, mut host, invite) = relay_and_host(dir.path());
    let mut second = spawn(dir.path(), "second", &["join", &invite]);
    let mut kicked = spawn(dir.path(), "kicked", &["join", &invite]);
    let host_id = peer_id_of(&mut host).unwrap();
    let second_id = peer_id_of(&mut second).unwrap();
    let kicked_id = peer_id_of(&mut kicked).unwrap();
    for m in [&mut host, &mut second, &mut kicked] {
        wait_video_started(m, 2);
    }
    host.drain_for(Duration::from_secs(2));
    host.seen.clear();
    second.seen.clear();
    host.send_line(&format!("/kick {kicked_id}")).unwrap();
    // When each sender is in the epoch without the kicked member (seen here a little
    // after it happened: the bound below is, if anything, generous).
    let mut rekeyed_at = Vec::new();
    for m in [&mut host, &mut second] {
        m.wait_for(LIMIT, "the epoch without the kicked member", |v| {
            v["event"] == "epoch" && v["members"].as_array().is_some_and(|a| a.len() == 2)
        })
        .unwrap();
        rekeyed_at.push(unix_ms());
    }
    let left = kicked.wait_event("left", LIMIT).unwrap();
    assert_eq!(left["reason"], "kicked");
    host.drain_for(Duration::from_secs(3));
    second.drain_for(Duration::from_millis(100));
    for (sender, &rekeyed_at) in [&host_id, &second_id].into_iter().zip(&rekeyed_at) {
        let frames = frames_written(dir.path(), "kicked", sender);
        assert!(
            frames.len() > 30,
            "the kicked member saw {sender} before the kick"
        );
        let (_, frame, captured) = *frames.last().unwrap();
        let after = (captured).wrapping_sub(rekeyed_at as u32) as i32;
        assert!(
            after <= 0,
            "frame {frame} of {sender}, captured {after} ms after it re-keyed, reached the kicked member"
        );
    }
    // The other two still see each other, after the kick too.
    let host_saw = frames_written(dir.path(), "host", &second_id);
    let (_, _, last) = *host_saw.last().unwrap();
    let since_kick = last.wrapping_sub(rekeyed_at[1] as u32) as i32;
    assert!(
        since_kick > 2_000,
        "the host saw the second member {since_kick} ms after the kick"
    );
    for m in [&mut host, &mut second] {
        m.send_line("/leave").unwrap();
        assert_eq!(m.wait_exit(LIMIT).unwrap().code(), Some(0));
    }
    let _ = kicked.wait_exit(LIMIT);
}

/// A Y4M file with a broken header is refused in one sentence; the member joins and sees
/// the others anyway (it sends no video).
#[test]
fn a_broken_video_file_is_refused_and_the_meeting_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.y4m");
    std::fs::write(&broken, b"YUV4MPEG2 W640 HXYZ F30:1\nFRAME\n").unwrap();
    let (_relay, mut host, invite) = relay_and_host(dir.path());
    let mut guest = spawn_with(
        dir.path(),
        "guest",
        &broken.display().to_string(),
        &["join", &invite],
    );
    let refused = guest
        .wait_for(LIMIT, "the refusal", |v| {
            v["event"] == "error" && v["kind"] == "media"
        })
        .unwrap();
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("broken.y4m") && message.contains("Y4M"),
        "{message}"
    );
    wait_video_started(&mut guest, 1);
    host.drain_for(Duration::from_secs(2));
    assert!(
        !host.seen.iter().any(|v| v["event"] == "video_started"),
        "the guest sends no video"
    );
    for m in [&mut host, &mut guest] {
        m.send_line("/leave").unwrap();
        assert_eq!(m.wait_exit(LIMIT).unwrap().code(), Some(0));
    }
}

/// A sender whose machine cannot keep up — its process held to 15 % of one core while it
/// sends 720p — sends a smaller picture rather than fewer frames, and says why
/// (`video_sent.cpu_limited`): its viewer gets smooth video again.
#[test]
fn a_sender_short_of_cpu_sends_a_smaller_picture_instead_of_fewer() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let limit = CpuLimit::new(&format!("conclave-test-{}", std::process::id()), 0.15)
        .expect("a CPU limit (needs root and the cgroup cpu controller)");
    let mut slow = spawn_with(
        dir.path(),
        "slow",
        "testsrc:1280x720",
        &["new", "--relay", &relay_addr],
    );
    limit.add(slow.pid()).unwrap();
    let invite = slow.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let slow_id = peer_id_of(&mut slow).unwrap();
    let mut viewer = spawn(dir.path(), "viewer", &["join", &invite]);
    wait_video_started(&mut viewer, 1);
    let limited = slow
        .wait_for(LIMIT, "the CPU limiting its picture", |v| {
            v["event"] == "video_sent" && v["kind"] == "camera" && v["cpu_limited"] == true
        })
        .unwrap();
    assert!(limited["width"].as_u64() < Some(1280), "{limited}");
    // Once smaller, the picture comes at (nearly) the full frame rate: over the next five
    // seconds at least 25 fps on average, and no second under 15 (a keyframe on a sender
    // this starved may still cost one second a few frames). Without the guard: 15–20 fps
    // every second.
    viewer.drain_for(Duration::from_secs(2));
    viewer.seen.clear();
    viewer.drain_for(Duration::from_millis(5_500));
    let periods: Vec<&Value> = viewer
        .seen
        .iter()
        .filter(|v| v["event"] == "video" && v["peer_id"] == slow_id.as_str())
        .collect();
    assert!(periods.len() >= 4, "{periods:?}");
    let rates: Vec<f64> = periods
        .iter()
        .map(|p| p["fps"].as_f64().unwrap_or(0.0))
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    assert!(
        mean >= 25.0,
        "{mean:.1} fps on average from the slow sender: {rates:?}"
    );
    for period in &periods {
        let fps = period["fps"].as_f64().unwrap_or(0.0);
        assert!(fps >= 15.0, "{fps:.1} fps from the slow sender: {period}");
    }
    eprintln!(
        "slow sender: {}x{} at {:?} fps",
        limited["width"],
        limited["height"],
        periods
            .iter()
            .map(|p| p["fps"].as_f64().unwrap_or(0.0))
            .collect::<Vec<_>>()
    );
    Proc::leave_all(&mut [&mut slow, &mut viewer], LIMIT).unwrap();
}

/// A member on a weak link turns incoming video off (`/incoming-video off`): the other
/// member stops sending it video — its camera goes quiet at the member (`video_stopped`)
/// and, with nobody else to send to, it encodes nothing — while its own video still
/// reaches the other. Turned on again, the picture comes back.
#[test]
fn a_member_that_turns_incoming_video_off_is_sent_none() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, mut host, invite) = relay_and_host(dir.path());
    let mut weak = spawn(dir.path(), "weak", &["join", &invite]);
    let host_id = peer_id_of(&mut host).unwrap();
    let weak_id = peer_id_of(&mut weak).unwrap();
    wait_video_started(&mut host, 1);
    wait_video_started(&mut weak, 1);

    let mark = weak.seen.len();
    weak.send_line("/incoming-video off").unwrap();
    weak.wait_for_since(mark, LIMIT, "incoming video off", |v| {
        v["event"] == "incoming_video" && v["on"] == false
    })
    .unwrap();
    weak.wait_for_since(mark, LIMIT, "the host's camera stopped", |v| {
        v["event"] == "video_stopped" && v["peer_id"] == host_id.as_str() && v["kind"] == "camera"
    })
    .unwrap();
    // Nobody wants the host's video now: it captures, but encodes nothing.
    let host_mark = host.seen.len();
    host.wait_for_since(host_mark, LIMIT, "a period of nothing encoded", |v| {
        v["event"] == "video_sent" && v["frames"] == 0
    })
    .unwrap();
    // The weak member's own video still reaches the host.
    host.wait_for_since(host_mark, LIMIT, "the weak member's video", |v| {
        v["event"] == "video" && v["peer_id"] == weak_id.as_str() && v["frames"].as_u64() > Some(10)
    })
    .unwrap();

    let mark = weak.seen.len();
    weak.send_line("/incoming-video on").unwrap();
    weak.wait_for_since(mark, LIMIT, "the host's camera again", |v| {
        v["event"] == "video_started" && v["peer_id"] == host_id.as_str() && v["kind"] == "camera"
    })
    .unwrap();

    // The weak member turns its camera off: the host hears it at once (the member says
    // so), not only once no picture came for 3 s.
    let host_mark = host.seen.len();
    #[allow(clippy::disallowed_methods)]
    let off = std::time::Instant::now();
    weak.send_line("/camera off").unwrap();
    host.wait_for_since(host_mark, LIMIT, "the weak member's camera stopped", |v| {
        v["event"] == "video_stopped" && v["peer_id"] == weak_id.as_str() && v["kind"] == "camera"
    })
    .unwrap();
    let took = off.elapsed();
    assert!(
        took < conclave_core::media::video::VIDEO_GONE_AFTER,
        "the camera's end took {took:?}: told, not timed out"
    );
    for m in [&mut host, &mut weak] {
        m.send_line("/leave").unwrap();
        assert_eq!(m.wait_exit(LIMIT).unwrap().code(), Some(0), "{}", m.label);
    }
}
