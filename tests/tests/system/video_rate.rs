//! Video that adapts to the path: three members in homes between cities (`continental`);
//! one home's uplink is capped at 800 kbit/s mid-call, then freed. That member's encoder
//! follows its send estimate (TWCC feedback into GCC, `core::media::transport::estimate`)
//! under the cap within 5 s, its audio keeps arriving, its video goes on at a lower layer;
//! once the cap is lifted it is back at its top layer within 15 s. And one member's uplink
//! losing 5 % of its packets: its video goes on without a freeze over 500 ms (1 s under
//! `CONCLAVE_WAN_PROFILE=intercontinental`, which `make soak` runs). And one member's
//! *downlink* capped at 500 kbit/s: the others send it what fits (their low layer where
//! needed), and go on sending each other 360p (simulcast: each receiver gets the layer its
//! own path carries).
//!
//! Bounded in time; the namespaces go even when the test fails.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use conclave_tests::nat::{Home, Internet, NatKind, relay_config, serial};
use conclave_tests::netns::available;
use conclave_tests::wan::Profile;
use conclave_tests::{Proc, peer_id_of};

const LIMIT: Duration = Duration::from_secs(30);
/// The capped uplink's rate.
const CAP_KBPS: u32 = 800;
/// How long the sender may take to fit under the cap, and to climb back once it is gone.
const ADAPT_DOWN: Duration = Duration::from_secs(5);
const ADAPT_UP: Duration = Duration::from_secs(15);
/// What the capped member's audio needs, per receiver, with its packets' overhead.
const AUDIO_KBPS: u32 = 60;

/// An event and when (since the test's start) the test read it.
struct Timed {
    at: Duration,
    event: Value,
}

/// Reads every member's events for `span`, stamping each with when it was read.
fn watch(members: &mut [Proc], logs: &mut [Vec<Timed>], start: Instant, span: Duration) {
    #[allow(clippy::disallowed_methods)]
    let end = Instant::now() + span;
    #[allow(clippy::disallowed_methods)]
    while Instant::now() < end {
        for (m, log) in members.iter_mut().zip(logs.iter_mut()) {
            let before = m.seen.len();
            m.drain_for(Duration::from_millis(100));
            let at = start.elapsed();
            log.extend(m.seen[before..].iter().map(|event| Timed {
                at,
                event: event.clone(),
            }));
        }
    }
}

/// A member in `home` sending testsrc video and `audio`, writing what it receives to
/// `dir/<label>-video`, then running `command`.
fn member(dir: &Path, home: &Home, label: &str, audio: &str, command: &[&str]) -> Proc {
    let out = dir.join(format!("{label}-video")).display().to_string();
    let mut args = vec![
        "--audio-in",
        audio,
        "--video-in",
        "testsrc",
        "--video-out",
        out.as_str(),
    ];
    args.extend_from_slice(command);
    home.member(dir, label, &args).unwrap()
}

/// Three members sending testsrc, each in its own home (behind a port-restricted NAT, on
/// its profile, sending its audio), labelled `<prefix>0..2`, the first hosting; returns
/// the relay, the homes, the members once each sees both others, and their peer ids.
pub(crate) fn meeting_of_three(
    internet: &mut Internet,
    dir: &Path,
    homes: [(&Profile, &str); 3],
    prefix: &str,
) -> (Proc, Vec<Home>, Vec<Proc>, Vec<String>) {
    let config = relay_config(dir).unwrap();
    let (relay, relay_addr) = internet.relay_full(dir, Some(&config)).unwrap();
    let audios: Vec<&str> = homes.iter().map(|(_, audio)| *audio).collect();
    let homes: Vec<Home> = homes
        .iter()
        .map(|(profile, _)| {
            internet
                .add_home_with(NatKind::PortRestricted, Some(profile))
                .unwrap()
        })
        .collect();
    let mut host = member(
        dir,
        &homes[0],
        &format!("{prefix}0"),
        audios[0],
        &["new", "--relay", &relay_addr],
    );
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut members = vec![host];
    for i in 1..3 {
        let label = format!("{prefix}{i}");
        members.push(member(
            dir,
            &homes[i],
            &label,
            audios[i],
            &["join", &invite],
        ));
    }
    let ids: Vec<String> = members.iter_mut().map(|p| peer_id_of(p).unwrap()).collect();
    for m in &mut members {
        super::video::wait_video_started(m, 2);
    }
    (relay, homes, members, ids)
}

/// The capped member's own video reports (`video_sent`) from `from` on.
fn sent_from(log: &[Timed], from: Duration) -> Vec<&Timed> {
    log.iter()
        .filter(|t| t.at >= from && t.event["event"] == "video_sent")
        .collect()
}

/// One line per `video_sent` from `from` on: when, the rate aimed at, the rate sent.
fn rate_report(log: &[Timed], from: Duration) -> Vec<String> {
    sent_from(log, from)
        .iter()
        .map(|t| {
            format!(
                "{:.1}s target {} sent {}",
                (t.at - from).as_secs_f64(),
                t.event["target_kbps"],
                t.event["kbps"]
            )
        })
        .collect()
}

#[test]
fn a_capped_uplink_brings_the_video_rate_under_the_cap_and_back() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let profile = Profile::CONTINENTAL;
    let dir = tempfile::tempdir().unwrap();
    let mut internet = Internet::new("vrt").unwrap();
    // The member whose uplink gets capped speaks (a tone), so its audio can be counted.
    let (_relay, homes, mut members, ids) = meeting_of_three(
        &mut internet,
        dir.path(),
        [
            (&profile, "silence"),
            (&profile, "silence"),
            (&profile, "tone:440"),
        ],
        "r",
    );
    let capped_id = ids[2].clone();
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut logs: Vec<Vec<Timed>> = (0..3).map(|_| Vec::new()).collect();

    // A free path: the encoder aims at full 360p quality.
    watch(&mut members, &mut logs, start, Duration::from_secs(4));
    let before_cap = sent_from(&logs[2], Duration::ZERO)
        .last()
        .expect("video_sent before the cap")
        .event
        .clone();
    let full = before_cap["target_kbps"].as_u64().unwrap();
    assert!(full >= 700, "full quality at first: {full} kbit/s");

    // The cap: two receivers' video and audio must fit in 800 kbit/s.
    let capped_at = start.elapsed();
    internet
        .impair(&homes[2], Some(&profile.with_rate_kbps(CAP_KBPS)))
        .unwrap();
    watch(&mut members, &mut logs, start, Duration::from_secs(15));
    let fits = u64::from((CAP_KBPS - 2 * AUDIO_KBPS) / 2);
    let report = rate_report(&logs[2], capped_at);
    eprintln!("under the cap:\n{}", report.join("\n"));
    let estimates: Vec<String> = logs[2]
        .iter()
        .filter(|t| t.at >= capped_at && t.event["event"] == "media")
        .map(|t| {
            format!(
                "{:.1}s estimate {} loss {} rtt {}",
                (t.at - capped_at).as_secs_f64(),
                t.event["send_estimate_kbps"],
                t.event["send_loss"],
                t.event["rtt_ms"]
            )
        })
        .collect();
    eprintln!("its estimates:\n{}", estimates.join("\n"));
    let fitted = sent_from(&logs[2], capped_at)
        .into_iter()
        .find(|t| t.event["target_kbps"].as_u64().is_some_and(|k| k <= fits))
        .unwrap_or_else(|| panic!("never under {fits} kbit/s:\n{}", report.join("\n")))
        .at
        - capped_at;
    assert!(
        fitted <= ADAPT_DOWN,
        "under {fits} kbit/s only after {fitted:?}"
    );
    // Once adapted, it stays under, its video keeps coming, and its audio is whole.
    let settled = capped_at + ADAPT_DOWN + Duration::from_secs(2);
    for t in sent_from(&logs[2], settled) {
        let sent = t.event["kbps"].as_u64().unwrap_or(0);
        assert!(
            sent <= fits + fits / 5,
            "sending {sent} kbit/s under the cap: {}",
            t.event
        );
    }
    let capped_end = start.elapsed();
    for (receiver, log) in logs.iter().enumerate().take(2) {
        let of_capped = |name: &str| -> Vec<&Value> {
            log.iter()
                .filter(|t| t.at >= settled && t.at <= capped_end)
                .map(|t| &t.event)
                .filter(|v| v["event"] == name && v["peer_id"] == capped_id.as_str())
                .collect()
        };
        let video = of_capped("video");
        assert!(video.len() >= 4, "r{receiver}: {video:?}");
        for period in &video {
            assert!(
                period["fps"].as_f64() >= Some(15.0),
                "r{receiver}: video from the capped member: {period}"
            );
        }
        let audio = of_capped("media");
        let (first, last) = (audio.first().unwrap(), audio.last().unwrap());
        let count = |v: &Value, key: &str| v[key].as_u64().unwrap_or(0);
        let lost = count(last, "lost_frames") - count(first, "lost_frames");
        let heard = count(last, "rx_frames") - count(first, "rx_frames");
        assert!(
            heard > 200 && lost * 100 <= heard * 2,
            "r{receiver}: audio from the capped member: {lost} lost, {heard} heard"
        );
    }

    // The cap goes: the rate climbs back.
    let freed_at = start.elapsed();
    internet.impair(&homes[2], Some(&profile)).unwrap();
    watch(
        &mut members,
        &mut logs,
        start,
        ADAPT_UP + Duration::from_secs(2),
    );
    let report = rate_report(&logs[2], freed_at);
    eprintln!("after the cap:\n{}", report.join("\n"));
    // Back to the top layer (the source's own size) within 15 s.
    let top = before_cap["width"].clone();
    let back = sent_from(&logs[2], freed_at)
        .into_iter()
        .find(|t| t.event["width"] == top)
        .unwrap_or_else(|| panic!("never back to {top} wide:\n{}", report.join("\n")));
    assert!(
        back.at - freed_at <= ADAPT_UP,
        "back only after {:?}",
        back.at - freed_at
    );
    let full_again = sent_from(&logs[2], freed_at)
        .into_iter()
        .find(|t| t.event["target_kbps"].as_u64() >= Some(full * 9 / 10))
        .map(|t| format!("{:.1} s", (t.at - freed_at).as_secs_f64()));
    eprintln!(
        "adaptation: under {fits} kbit/s {:.1} s after the cap; top layer {:.1} s after it went, 90 % of full rate after {}",
        fitted.as_secs_f64(),
        (back.at - freed_at).as_secs_f64(),
        full_again.as_deref().unwrap_or("more than the wait")
    );
    for m in &mut members {
        let _ = m.send_line("/leave");
    }
}

/// The longest gap between two pictures allowed after the first second: 500 ms between
/// cities, 1 s across the world (`CONCLAVE_WAN_PROFILE=intercontinental`, `make soak`).
pub(crate) fn freeze_bound(profile: &Profile) -> Duration {
    if profile.home_to_home_rtt() >= Duration::from_millis(200) {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(500)
    }
}

/// The random loss added to the lossy uplink: 5 %, or `CONCLAVE_VIDEO_LOSS` (percent; the
/// loss sweep of `make soak` runs 1, 5 and 10).
fn added_loss_pct() -> f64 {
    std::env::var("CONCLAVE_VIDEO_LOSS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0)
}

/// One member's uplink loses 5 % of its packets at random (on top of its profile): its
/// video goes on at both receivers through NACK and keyframe repair, with no gap between
/// pictures over 500 ms after the first second (1 s under `intercontinental`). With
/// `CONCLAVE_VIDEO_LOSS` above 5 % it only reports the freezes (the issue bounds them up
/// to 5 %), and checks that the video goes on.
#[test]
fn video_from_a_lossy_uplink_goes_on_without_freezing() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let profile = Profile::from_env_or(Profile::CONTINENTAL);
    let added = added_loss_pct();
    let lossy = Profile {
        loss_pct: profile.loss_pct + added,
        ..profile
    };
    let dir = tempfile::tempdir().unwrap();
    let mut internet = Internet::new("vls").unwrap();
    let (_relay, _homes, mut members, ids) = meeting_of_three(
        &mut internet,
        dir.path(),
        [
            (&profile, "silence"),
            (&profile, "silence"),
            (&lossy, "silence"),
        ],
        "l",
    );
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut logs: Vec<Vec<Timed>> = (0..3).map(|_| Vec::new()).collect();
    watch(&mut members, &mut logs, start, Duration::from_secs(12));
    let bound = freeze_bound(&profile);
    for (receiver, log) in logs.iter().enumerate().take(2) {
        let periods: Vec<&Value> = log
            .iter()
            .map(|t| &t.event)
            .filter(|v| v["event"] == "video" && v["peer_id"] == ids[2].as_str())
            .skip(1)
            .collect();
        assert!(periods.len() >= 8, "l{receiver}: {periods:?}");
        let longest = periods
            .iter()
            .filter_map(|v| v["longest_gap_ms"].as_u64())
            .max()
            .unwrap_or(u64::MAX);
        let fps = periods
            .iter()
            .filter_map(|v| v["fps"].as_f64())
            .sum::<f64>()
            / periods.len() as f64;
        let freezes: u64 = periods.iter().filter_map(|v| v["freezes"].as_u64()).sum();
        let last = periods.last().unwrap();
        eprintln!(
            "figure: {} + {added} % loss, l{receiver} from l2: {fps:.1} fps, {freezes} freezes (> 500 ms) in {} s, longest gap {longest} ms, {} incomplete, {} keyframe requests",
            profile.name,
            periods.len(),
            last["incomplete"],
            last["keyframe_requests"]
        );
        assert!(
            periods.iter().all(|v| v["frames"].as_u64() > Some(0)),
            "l{receiver}: a whole second without a picture: {periods:?}"
        );
        if added <= 5.0 {
            assert!(
                Duration::from_millis(longest) <= bound,
                "l{receiver}: a {longest} ms freeze: {periods:?}"
            );
            assert!(fps >= 20.0, "l{receiver}: {fps:.1} fps: {periods:?}");
        }
    }
    for m in &mut members {
        let _ = m.send_line("/leave");
    }
}

/// The downlink cap of the receiver whose path is the weak one.
const DOWNLINK_KBPS: u32 = 500;
/// How long two senders take to share the capped line: both overflow its buffer at first
/// (a sudden cap to a third of what they send), back off on the loss, and settle on the
/// low layer (about 8 s in the runs here).
const SETTLE: Duration = Duration::from_secs(12);

/// The widths at which `receiver` decoded each sender's pictures in the periods logged from
/// `from` on, by sender.
fn widths_seen(log: &[Timed], from: Duration) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut widths = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for t in log
        .iter()
        .filter(|t| t.at >= from && t.event["event"] == "video" && t.event["kind"] == "camera")
        .filter(|t| t.event["frames"].as_u64().unwrap_or(0) > 0)
    {
        let sender = t.event["peer_id"].as_str().unwrap_or_default().to_owned();
        widths
            .entry(sender)
            .or_default()
            .push(t.event["width"].as_u64().unwrap_or(0));
    }
    widths
}

#[test]
fn a_receiver_on_a_slow_line_gets_a_smaller_picture_and_the_others_do_not() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let profile = Profile::CONTINENTAL;
    let dir = tempfile::tempdir().unwrap();
    let mut internet = Internet::new("vsc").unwrap();
    let (_relay, homes, mut members, ids) =
        meeting_of_three(&mut internet, dir.path(), [(&profile, "silence"); 3], "s");
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut logs: Vec<Vec<Timed>> = (0..3).map(|_| Vec::new()).collect();
    watch(&mut members, &mut logs, start, Duration::from_secs(3));
    // Member 2's line is slow one way: what it receives is capped.
    let capped_at = start.elapsed();
    let slow_line = Profile {
        name: "slow downlink",
        one_way_delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss_pct: 0.0,
        rate_kbps: Some(DOWNLINK_KBPS),
    };
    internet
        .impair_downlink(&homes[2], Some(&slow_line))
        .unwrap();
    watch(
        &mut members,
        &mut logs,
        start,
        SETTLE + Duration::from_secs(8),
    );
    // The two members on good lines see each other at 360p throughout: the slow line
    // does not drag them down (with one layer for all, the weakest path decided for all).
    for (receiver, sender) in [(0, 1), (1, 0)] {
        let seen = widths_seen(&logs[receiver], capped_at + Duration::from_secs(2));
        let widths = seen
            .get(ids[sender].as_str())
            .expect("video between the good lines");
        eprintln!("s{receiver} sees s{sender} at {widths:?}");
        assert!(
            widths.len() >= 10 && widths.iter().all(|&w| w == 640),
            "s{receiver} saw s{sender} at {widths:?}: the slow line must not drag it down"
        );
    }
    // The slow line gets what fits it, from both, and its video goes on.
    let settled = capped_at + SETTLE;
    let mut total_kbps = 0.0;
    let mut periods = 0;
    for t in logs[2]
        .iter()
        .filter(|t| t.at >= settled && t.event["event"] == "video" && t.event["kind"] == "camera")
    {
        let fps = t.event["fps"].as_f64().unwrap_or(0.0);
        assert!(fps >= 15.0, "the slow line's video stalls: {}", t.event);
        total_kbps += t.event["kbps"].as_f64().unwrap_or(0.0);
        periods += 1;
    }
    let per_second = total_kbps / (f64::from(periods) / 2.0).max(1.0);
    eprintln!(
        "the slow line's receiver, from {SETTLE:?} after the cap: {:?}, {per_second:.0} kbit/s of video",
        widths_seen(&logs[2], settled)
    );
    assert!(periods >= 6, "{periods} periods");
    assert!(
        per_second <= f64::from(DOWNLINK_KBPS),
        "{per_second:.0} kbit/s of video into a {DOWNLINK_KBPS} kbit/s line"
    );
    for m in &mut members {
        m.send_line("/leave").unwrap();
    }
}

/// Three homes between continents (`intercontinental` unless `CONCLAVE_WAN_PROFILE` says
/// otherwise; 250 ms RTT, 1 % loss per uplink): one member turns incoming video off and
/// both others' cameras end at it while its own video still reaches them; turned on
/// again, both pictures come back. A camera turned off ends at once at the others (told,
/// not timed out). `make soak`.
#[test]
#[ignore = "soak: make soak"]
fn no_incoming_video_and_a_camera_off_work_across_the_world() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    let _serial = serial();
    let profile = Profile::from_env_or(Profile::INTERCONTINENTAL);
    let dir = tempfile::tempdir().unwrap();
    let mut internet = Internet::new("niv").unwrap();
    let (_relay, _homes, mut members, ids) =
        meeting_of_three(&mut internet, dir.path(), [(&profile, "silence"); 3], "n");
    let is_camera = |v: &Value, what: &str, peer: &str| {
        v["event"] == what && v["kind"] == "camera" && v["peer_id"] == peer
    };
    // n2 is on a weak link: it asks for no video.
    let mark = members[2].seen.len();
    members[2].send_line("/incoming-video off").unwrap();
    for sender in &ids[..2] {
        members[2]
            .wait_for_since(mark, LIMIT, "a camera ended", |v| {
                is_camera(v, "video_stopped", sender)
            })
            .unwrap();
    }
    // Its own camera still reaches the others.
    for receiver in &mut members[..2] {
        let mark = receiver.seen.len();
        receiver
            .wait_for_since(mark, LIMIT, "n2's video", |v| {
                v["event"] == "video"
                    && v["peer_id"] == ids[2].as_str()
                    && v["frames"].as_u64() > Some(10)
            })
            .unwrap();
    }
    let mark = members[2].seen.len();
    members[2].send_line("/incoming-video on").unwrap();
    for sender in &ids[..2] {
        members[2]
            .wait_for_since(mark, LIMIT, "a camera again", |v| {
                is_camera(v, "video_started", sender)
            })
            .unwrap();
    }
    // n0 turns its camera off: the others hear it in well under the 3 s of silence after
    // which a camera counts as ended anyway.
    let marks: Vec<usize> = members.iter().map(|m| m.seen.len()).collect();
    #[allow(clippy::disallowed_methods)]
    let off = Instant::now();
    members[0].send_line("/camera off").unwrap();
    for receiver in 1..3 {
        members[receiver]
            .wait_for_since(marks[receiver], LIMIT, "n0's camera ended", |v| {
                is_camera(v, "video_stopped", &ids[0])
            })
            .unwrap();
    }
    let took = off.elapsed();
    eprintln!(
        "{}: a camera's end reached both others in {took:?}",
        profile.name
    );
    assert!(
        took < conclave_core::media::video::VIDEO_GONE_AFTER,
        "{took:?}: told, not timed out"
    );
    for m in &mut members {
        let _ = m.send_line("/leave");
    }
}
