//! The system bench: real `conclave` / `conclave-relay` processes on loopback.
//!
//! ```text
//! cargo run --release -p conclave-tests --bin meeting-bench -- [join|idle|all]
//! ```
//! - `join`: time from starting `conclave join` to its `joined` event (admitted, MLS
//!   welcome processed, keys installed), with 1, 4 and 8 members already present.
//! - `kick`: in a 5-member meeting, time from the host's `/kick` to the new epoch being
//!   reported by every remaining member.
//! - `idle`: resident memory and CPU of one client and of the relay while 20 clients sit
//!   idle in one meeting.
//! - `audio`: with audio on (a tone from every member, WebRTC mesh on loopback), time from
//!   starting `conclave join` to its first decrypted audio frame (`audio_started`) with 1, 4
//!   and 8 members present; and CPU per participant in a 4- and a 6-person mesh.
//! - `video`: a 4-person mesh with audio and 360p testsrc video from everyone (and
//!   `--video-out`): CPU and RSS per participant, bytes per second per stream, frame rate,
//!   and glass-to-glass latency (testsrc capture → decoded picture at the receiver).
//! - `share`: the same mesh (without `--video-out`), then one member shares a 1280×720
//!   Xvfb screen of text: CPU and RSS per participant before and during the share, what
//!   the sharer sends of the screen, and what the others receive (needs Xvfb and
//!   ImageMagick, as `make test` installs).
//!
//! Figures go to `docs/performance.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use conclave_tests::{Proc, start_host, start_relay};

const RUNS: usize = 7;

fn main() -> anyhow::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if what == "join" || what == "all" {
        for present in [1usize, 4, 8] {
            join_latency(present)?;
        }
    }
    if what == "kick" || what == "all" {
        kick_latency(5)?;
    }
    if what == "idle" || what == "all" {
        idle_cost(20)?;
    }
    if what == "latency" || what == "all" {
        pipeline_latency()?;
    }
    if what == "video" || what == "all" {
        video_cost(4)?;
    }
    if what == "share" || what == "all" {
        share_cost(4)?;
    }
    if what == "audio" || what == "all" {
        for present in [1usize, 4, 8] {
            audio_join_latency(present)?;
        }
        for size in [4usize, 6] {
            audio_cpu(size)?;
        }
    }
    Ok(())
}

/// Starts a meeting with `present` members (host included) behind one relay.
fn meeting(dir: &Path, present: usize) -> anyhow::Result<(Proc, Vec<Proc>, String)> {
    let (relay, relay_addr) = start_relay(dir)?;
    let (host, invite, _) = start_host(dir, "m0", &["--relay", &relay_addr])?;
    let mut members = vec![host];
    for i in 1..present {
        let label = format!("m{i}");
        let mut member = Proc::conclave(&label, &dir.join(&label), &["join", &invite])?;
        member.wait_event("joined", Duration::from_secs(20))?;
        members.push(member);
    }
    // Let the mesh settle: everyone sees everyone.
    for member in &mut members {
        let others = present - 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        while member.members().len() < others && Instant::now() < deadline {
            member.drain_for(Duration::from_millis(100));
        }
    }
    Ok((relay, members, invite))
}

fn join_latency(present: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_relay, _members, invite) = meeting(dir.path(), present)?;
    let mut samples = Vec::new();
    for run in 0..RUNS {
        let label = format!("j{run}");
        let started = Instant::now();
        let mut joiner = Proc::conclave(&label, &dir.path().join(&label), &["join", &invite])?;
        joiner.wait_event("joined", Duration::from_secs(20))?;
        samples.push(started.elapsed());
        joiner.send_line("/leave")?;
        joiner.wait_exit(Duration::from_secs(10))?;
    }
    samples.sort();
    println!(
        "join -> joined (MLS keys installed), {present} member(s) present, {RUNS} runs: median {} ms, min {} ms, max {} ms (includes process start)",
        samples[RUNS / 2].as_millis(),
        samples[0].as_millis(),
        samples[RUNS - 1].as_millis()
    );
    Ok(())
}

fn epoch_of(proc: &Proc) -> u64 {
    proc.seen
        .iter()
        .rev()
        .find(|v| v["event"] == "epoch" || v["event"] == "joined")
        .and_then(|v| v["epoch"].as_u64())
        .unwrap_or(0)
}

fn kick_latency(size: usize) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let dir = tempfile::tempdir()?;
        let (_relay, mut members, _) = meeting(dir.path(), size)?;
        // Let the last joins settle so that every member is at the same epoch.
        for member in &mut members {
            member.drain_for(Duration::from_millis(300));
        }
        let victim = members.pop().context("members")?;
        let victim_id = conclave_tests::peer_id_of_seen(&victim).context("victim id")?;
        let before = members.iter().map(epoch_of).max().unwrap_or(0);
        let started = Instant::now();
        members[0].send_line(&format!("/kick {victim_id}"))?;
        for member in &mut members {
            member.wait_for(Duration::from_secs(20), "the new epoch", |v| {
                v["event"] == "epoch" && v["epoch"].as_u64().is_some_and(|e| e > before)
            })?;
        }
        samples.push(started.elapsed());
        drop(victim);
    }
    samples.sort();
    println!(
        "kick -> new epoch at all {} remaining members, {RUNS} runs: median {} ms, min {} ms, max {} ms",
        size - 1,
        samples[RUNS / 2].as_millis(),
        samples[0].as_millis(),
        samples[RUNS - 1].as_millis()
    );
    Ok(())
}

/// Capture-to-playout latency of the audio pipeline itself (no network): a click is sent
/// through Opus, SFrame, the jitter buffer and the decoder on a simulated 20 ms clock; the
/// delay is where the click comes out.
fn pipeline_latency() -> anyhow::Result<()> {
    use conclave_core::group::media_keys::sender_base_key;
    use conclave_core::media::audio::codec::{Decoder, Encoder};
    use conclave_core::media::audio::jitter::{JitterBuffer, JitterConfig};
    use conclave_core::media::audio::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
    use conclave_core::media::crypto::keyring::Opener;
    use conclave_core::media::crypto::sframe::Sealer;

    let start = Instant::now();
    let mut sealer = Sealer::new(1);
    sealer.install(1, 1, &sender_base_key(&[1; 32], 1))?;
    let mut opener = Opener::default();
    opener.install(start, 1, [1; 32]);
    let (mut encoder, mut decoder) = (Encoder::new()?, Decoder::new()?);
    let mut jitter = JitterBuffer::new(JitterConfig::default());
    let click_at = 50 * FRAME_SAMPLES + 123; // sample index of the click in the input
    let mut output: Vec<i16> = Vec::new();
    for slot in 0..120u32 {
        let now = start + Duration::from_millis(20) * slot;
        let mut frame: Frame = [0; FRAME_SAMPLES];
        for (i, sample) in frame.iter_mut().enumerate() {
            let index = slot as usize * FRAME_SAMPLES + i;
            if (click_at..click_at + 480).contains(&index) {
                *sample = if (index / 24).is_multiple_of(2) {
                    12_000
                } else {
                    -12_000
                };
            }
        }
        let sealed = sealer.seal(&encoder.encode(&frame)?)?;
        let opened = opener.open(now, &sealed)?;
        jitter.push(now, opened.counter, opened.payload);
        let mut pcm: Frame = [0; FRAME_SAMPLES];
        decoder.play(jitter.pop(now), &mut pcm)?;
        output.extend_from_slice(&pcm);
    }
    let heard_at = output
        .iter()
        .position(|s| s.unsigned_abs() > 4000)
        .context("the click came out")?;
    let delay_ms = (heard_at as f64 - click_at as f64) * 1000.0 / f64::from(SAMPLE_RATE);
    println!(
        "capture -> playout through Opus + SFrame + jitter buffer (min delay {} ms) + decoder, no network: {delay_ms:.1} ms",
        JitterConfig::default().min_delay.as_millis()
    );
    Ok(())
}

fn audio_member(dir: &Path, label: &str, hz: u32, command: &[&str]) -> anyhow::Result<Proc> {
    let tone = format!("tone:{hz}");
    let mut args = vec!["--media-bind", "127.0.0.1:0", "--audio-in", tone.as_str()];
    args.extend_from_slice(command);
    Proc::conclave(label, &dir.join(label), &args)
}

/// A meeting of `size` members, all sending a tone, everyone connected to everyone.
fn audio_meeting(dir: &Path, size: usize) -> anyhow::Result<(Proc, Vec<Proc>, String)> {
    let (relay, relay_addr) = start_relay(dir)?;
    let mut host = audio_member(dir, "a0", 300, &["new", "--relay", &relay_addr])?;
    let invite = host.wait_event("invite", Duration::from_secs(20))?["invite"]
        .as_str()
        .context("invite")?
        .to_owned();
    let mut members = vec![host];
    for i in 1..size {
        members.push(audio_member(
            dir,
            &format!("a{i}"),
            300 + 50 * i as u32,
            &["join", &invite],
        )?);
    }
    for member in &mut members {
        let deadline = Instant::now() + Duration::from_secs(30);
        while member
            .seen
            .iter()
            .filter(|v| v["event"] == "audio_started")
            .count()
            < size - 1
            && Instant::now() < deadline
        {
            member.drain_for(Duration::from_millis(100));
        }
    }
    Ok((relay, members, invite))
}

fn audio_join_latency(present: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_relay, _members, invite) = audio_meeting(dir.path(), present)?;
    let mut samples = Vec::new();
    for run in 0..3 {
        let label = format!("j{run}");
        let started = Instant::now();
        let mut joiner = audio_member(dir.path(), &label, 2000, &["join", &invite])?;
        joiner.wait_event("audio_started", Duration::from_secs(30))?;
        samples.push(started.elapsed());
        joiner.send_line("/leave")?;
        joiner.wait_exit(Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_secs(1));
    }
    samples.sort();
    println!(
        "join -> first decrypted audio frame, {present} member(s) present, 3 runs: median {} ms, min {} ms, max {} ms (includes process start)",
        samples[1].as_millis(),
        samples[0].as_millis(),
        samples[2].as_millis()
    );
    Ok(())
}

fn audio_cpu(size: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_relay, members, _) = audio_meeting(dir.path(), size)?;
    let window = Duration::from_secs(10);
    let before = cpu_ticks_of(&members)?;
    std::thread::sleep(window);
    let per = percent_of_a_core(&before, &cpu_ticks_of(&members)?, window);
    let mean = per.iter().sum::<f64>() / per.len() as f64;
    let rss: u64 = members
        .iter()
        .map(|m| rss_kib(m.pid()).unwrap_or(0))
        .sum::<u64>()
        / members.len() as u64;
    println!(
        "{size}-person audio mesh (tone from everyone), {}s window: CPU per participant mean {mean:.1} % (min {:.1}, max {:.1}) of one core, RSS {} MiB each",
        window.as_secs(),
        per.iter().cloned().fold(f64::MAX, f64::min),
        per.iter().cloned().fold(0.0, f64::max),
        rss / 1024
    );
    Ok(())
}

/// A `size`-person mesh, each member sending a tone and 360p testsrc video: CPU and RSS
/// per participant, and what the receivers measured over a 10 s window.
fn video_cost(size: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_relay, relay_addr) = start_relay(dir.path())?;
    let member = |label: &str, command: &[&str]| {
        let out = dir
            .path()
            .join(format!("{label}-video"))
            .display()
            .to_string();
        let mut args = vec![
            "--media-bind",
            "127.0.0.1:0",
            "--audio-in",
            "tone:440",
            "--video-in",
            "testsrc",
            "--video-out",
            out.as_str(),
        ];
        args.extend_from_slice(command);
        Proc::conclave(label, &dir.path().join(label), &args)
    };
    let mut host = member("v0", &["new", "--relay", &relay_addr])?;
    let invite = host.wait_event("invite", Duration::from_secs(20))?["invite"]
        .as_str()
        .context("invite")?
        .to_owned();
    let mut members = vec![host];
    for i in 1..size {
        members.push(member(&format!("v{i}"), &["join", &invite])?);
    }
    wait_started(&mut members, "camera", size - 1)?;
    // Let the first partial periods pass.
    for m in &mut members {
        m.drain_for(Duration::from_millis(1200 / size as u64));
        m.seen.clear();
    }
    let window = Duration::from_secs(10);
    let (cpu, rss) = cost_over(&mut members, window)?;
    let periods: Vec<&serde_json::Value> = members
        .iter()
        .flat_map(|m| m.seen.iter().filter(|v| v["event"] == "video"))
        .filter(|v| v["frames"].as_u64().unwrap_or(0) > 0)
        .collect();
    let mut p50: Vec<u64> = periods
        .iter()
        .filter_map(|v| v["latency_ms"]["p50"].as_u64())
        .collect();
    let mut p95: Vec<u64> = periods
        .iter()
        .filter_map(|v| v["latency_ms"]["p95"].as_u64())
        .collect();
    p50.sort_unstable();
    p95.sort_unstable();
    let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let fps = mean(periods.iter().filter_map(|v| v["fps"].as_f64()).collect());
    let kbps = mean(periods.iter().filter_map(|v| v["kbps"].as_f64()).collect());
    let psnr = mean(
        periods
            .iter()
            .filter_map(|v| v["psnr_db"]["mean"].as_f64())
            .collect(),
    );
    let skipped: u64 = periods.iter().filter_map(|v| v["lost"].as_u64()).sum();
    let freezes: u64 = periods.iter().filter_map(|v| v["freezes"].as_u64()).sum();
    println!(
        "{size}-person mesh, audio + 360p testsrc video from everyone, {}s window: CPU per participant mean {:.1} % (min {:.1}, max {:.1}) of one core, RSS {:?} MiB; per stream {fps:.1} fps, {kbps:.0} kbit/s ({:.0} KB/s), PSNR {psnr:.1} dB; glass-to-glass latency (capture → decoded) p50 {} ms (median of {} periods), p95 {} ms (median), worst period p95 {} ms",
        window.as_secs(),
        mean(cpu.clone()),
        cpu.iter().cloned().fold(f64::MAX, f64::min),
        cpu.iter().cloned().fold(0.0, f64::max),
        rss,
        kbps / 8.0,
        p50.get(p50.len() / 2).copied().unwrap_or(0),
        p50.len(),
        p95.get(p95.len() / 2).copied().unwrap_or(0),
        p95.last().copied().unwrap_or(0),
    );
    // Where the time goes: the sender's capture → sealed, the receiver's stages, and the
    // rest (send queue, RTP, SRTP, UDP, the forwarder) as what the total leaves over.
    let median_of = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let encode = median_of(
        members
            .iter()
            .flat_map(|m| m.seen.iter().filter(|v| v["event"] == "video_sent"))
            .filter_map(|v| v["encode_ms"]["p50"].as_f64())
            .collect(),
    );
    let stage = |name: &str| {
        median_of(
            periods
                .iter()
                .filter_map(|v| v["stages_ms"][name].as_f64())
                .collect(),
        )
    };
    let (assembly, waiting, decode) = (stage("assembly"), stage("waiting"), stage("decode"));
    let total = p50.get(p50.len() / 2).copied().unwrap_or(0) as f64;
    println!(
        "  glass-to-glass by stage (medians): capture → sealed {encode:.2} ms; first → last packet {assembly:.2} ms; last packet → decoding {waiting:.2} ms; open + decode {decode:.2} ms; the rest of the {total:.0} ms (send queue, RTP, SRTP, UDP, forwarder; the stamp has 1 ms steps) {:.2} ms",
        (total - encode - assembly - waiting - decode).max(0.0)
    );
    // Totals since the start, from each receiver's last report of each sender.
    let mut totals = [0u64; 5];
    for m in &members {
        let mut last: std::collections::HashMap<&str, &serde_json::Value> = Default::default();
        for v in m.seen.iter().filter(|v| v["event"] == "video") {
            last.insert(v["peer_id"].as_str().unwrap_or_default(), v);
        }
        for v in last.values() {
            for (total, key) in totals.iter_mut().zip([
                "decoded",
                "incomplete",
                "concealed",
                "keyframe_requests",
                "undecryptable",
            ]) {
                *total += v[key].as_u64().unwrap_or(0);
            }
        }
    }
    println!(
        "  all streams since the start: {} pictures decoded, {} frames given up, {} concealed, {} keyframe requests, {} undecryptable; in the window: {skipped} testsrc frames never shown, {freezes} freezes",
        totals[0], totals[1], totals[2], totals[3], totals[4]
    );
    for m in &mut members {
        let _ = m.send_line("/leave");
    }
    Ok(())
}

/// A `size`-person mesh with audio and 360p testsrc video from everyone, then the host
/// shares a 1280×720 Xvfb screen of text: CPU and RSS per participant in a 10 s window
/// before the share and one during it (the same run), what the sharer sends of its screen,
/// and what the others receive of it.
fn share_cost(size: usize) -> anyhow::Result<()> {
    use conclave_tests::xvfb::{Picture, Xvfb};
    let dir = tempfile::tempdir()?;
    let xvfb = Xvfb::start("1280x720x24")?;
    let page = Picture::text_page(&dir.path().join("page.png"), 1280, 720)?;
    let _shown = xvfb.show(&page)?;
    let (_relay, relay_addr) = start_relay(dir.path())?;
    let member = |label: &str, command: &[&str]| {
        let mut args = vec![
            "--media-bind",
            "127.0.0.1:0",
            "--audio-in",
            "tone:440",
            "--video-in",
            "testsrc",
        ];
        args.extend_from_slice(command);
        Proc::conclave_with_env(
            label,
            &dir.path().join(label),
            &[("DISPLAY", &xvfb.display)],
            &args,
        )
    };
    let mut host = member("s0", &["new", "--relay", &relay_addr])?;
    let invite = host.wait_event("invite", Duration::from_secs(20))?["invite"]
        .as_str()
        .context("invite")?
        .to_owned();
    let mut members = vec![host];
    for i in 1..size {
        members.push(member(&format!("s{i}"), &["join", &invite])?);
    }
    wait_started(&mut members, "camera", size - 1)?;
    let window = Duration::from_secs(10);
    let (cpu_before, rss_before) = cost_over(&mut members, window)?;
    members[0].send_line("/share on")?;
    wait_started(&mut members[1..], "screen", 1)?;
    for m in &mut members {
        m.drain_for(Duration::from_millis(1200 / size as u64));
        m.seen.clear();
    }
    let (cpu_during, rss_during) = cost_over(&mut members, window)?;
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let of_kind = |m: &Proc, event: &str, kind: &str| -> Vec<serde_json::Value> {
        m.seen
            .iter()
            .filter(|v| v["event"] == event && v["kind"] == kind)
            .cloned()
            .collect()
    };
    let sent = of_kind(&members[0], "video_sent", "screen");
    let field = |values: &[serde_json::Value], path: &[&str]| -> Vec<f64> {
        values
            .iter()
            .filter_map(|v| path.iter().fold(v, |v, key| &v[key]).as_f64())
            .collect()
    };
    let received: Vec<serde_json::Value> = members[1..]
        .iter()
        .flat_map(|m| of_kind(m, "video", "screen"))
        .collect();
    println!(
        "{size}-person mesh, audio + 360p testsrc video from everyone, {}s windows: CPU per participant mean {:.1} % of one core without a share, {:.1} % while one member shares a 1280x720 screen of text (the sharer {:.1} % → {:.1} %); RSS {rss_before:?} → {rss_during:?} MiB",
        window.as_secs(),
        mean(&cpu_before),
        mean(&cpu_during),
        cpu_before[0],
        cpu_during[0],
    );
    println!(
        "  the sharer's screen: {:.1} fps, {:.0} kbit/s per connection (aimed at {:.0}), capture → sealed p50 {:.1} ms; received: {:.1} fps, {:.0} kbit/s, {} freezes",
        mean(&field(&sent, &["fps"])),
        mean(&field(&sent, &["kbps"])),
        mean(&field(&sent, &["target_kbps"])),
        mean(&field(&sent, &["encode_ms", "p50"])),
        mean(&field(&received, &["fps"])),
        mean(&field(&received, &["kbps"])),
        field(&received, &["freezes"]).iter().sum::<f64>(),
    );
    for m in &mut members {
        let _ = m.send_line("/leave");
    }
    Ok(())
}

/// Waits until every member of `members` decoded a first picture of `kind` from `count`
/// others.
fn wait_started(members: &mut [Proc], kind: &str, count: usize) -> anyhow::Result<()> {
    for m in members {
        let deadline = Instant::now() + Duration::from_secs(30);
        while m
            .seen
            .iter()
            .filter(|v| v["event"] == "video_started" && v["kind"] == kind)
            .count()
            < count
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: {kind} video did not start",
                m.label
            );
            m.drain_for(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// CPU (% of one core) and RSS (MiB) of each member over `window`, reading their events
/// meanwhile.
fn cost_over(members: &mut [Proc], window: Duration) -> anyhow::Result<(Vec<f64>, Vec<u64>)> {
    let before = cpu_ticks_of(members)?;
    let end = Instant::now() + window;
    while Instant::now() < end {
        for m in members.iter_mut() {
            m.drain_for(Duration::from_millis(100));
        }
    }
    let cpu = percent_of_a_core(&before, &cpu_ticks_of(members)?, window);
    let rss = members
        .iter()
        .map(|m| rss_kib(m.pid()).unwrap_or(0) / 1024)
        .collect();
    Ok((cpu, rss))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS present")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// The CPU ticks each of `members` has used so far.
fn cpu_ticks_of(members: &[Proc]) -> anyhow::Result<Vec<u64>> {
    members.iter().map(|m| cpu_ticks(m.pid())).collect()
}

/// Per process, the share of one core used between two readings `window` apart, in %.
fn percent_of_a_core(before: &[u64], after: &[u64], window: Duration) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - b) as f64 / 100.0 / window.as_secs_f64() * 100.0)
        .collect()
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn idle_cost(clients: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (relay, members, _) = meeting(dir.path(), clients)?;
    let window = Duration::from_secs(10);
    let client_pid = members[clients / 2].pid();
    let (relay_before, client_before) = (cpu_ticks(relay.pid())?, cpu_ticks(client_pid)?);
    std::thread::sleep(window);
    let (relay_after, client_after) = (cpu_ticks(relay.pid())?, cpu_ticks(client_pid)?);
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let pct = |ticks: u64| ticks as f64 / ticks_per_sec / window.as_secs_f64() * 100.0;
    println!(
        "idle meeting of {clients} clients, {}s window: one client RSS {} MiB, CPU {:.2} %; relay RSS {} MiB, CPU {:.2} %",
        window.as_secs(),
        rss_kib(client_pid)? / 1024,
        pct(client_after - client_before),
        rss_kib(relay.pid())? / 1024,
        pct(relay_after - relay_before)
    );
    drop(members);
    Ok(())
}
