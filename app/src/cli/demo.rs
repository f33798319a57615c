//! `conclave demo`: a real end-to-end encrypted audio and video meeting on this machine, no
//! devices.
//!
//! Starts a relay and N participants on loopback (real libp2p nodes with their own data
//! directories, DHT discovery through the relay, one MLS group, a WebRTC connection between
//! every pair). Each participant speaks its own tone and sends the `testsrc` video pattern,
//! both sealed with SFrame under keys exported from the MLS group; it records what it hears
//! to a WAV file and writes what it sees to a directory (`--video-out`). The story: everybody
//! shows the same security code, a chat line crosses the group, a late joiner arrives, the
//! host removes someone (keys rotate, audio and video go on), and at the end each recording
//! is analysed to show who was heard by whom, and each video stream's frame rate, latency
//! and quality (PSNR against the exact testsrc picture) are printed per pair.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use conclave_core::media::video::source::VideoSpec;
use conclave_core::{
    Client, Config, Event, Events, Invite, KeySource, MediaConfig, MeetingEvent, Multiaddr, PeerId,
    VideoStats, tones,
};
use serde_json::json;

use super::output::Output;
use crate::media::{self, Connection, MediaSink, Stats};

const NAMES: [&str; 8] = [
    "Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Radia",
];
/// Each participant's tone (Hz): distinct, none a harmonic of another.
const TONES: [f64; 8] = [440.0, 523.0, 659.0, 784.0, 932.0, 1109.0, 1319.0, 1568.0];
const STEP_LIMIT: Duration = Duration::from_secs(20);
/// Size of each participant's testsrc video.
const VIDEO_SIZE: (u32, u32) = (640, 360);

/// What one participant saw of one sender's video, over the whole call.
#[derive(Debug, Default)]
struct Seen {
    /// Frame rate of each full reporting period after the first picture.
    fps: Vec<f64>,
    /// Median capture → shown latency of each period, ms.
    latency_p50: Vec<u32>,
    /// Worst 95th percentile latency of a period, ms.
    latency_p95: u32,
    /// Mean and lowest PSNR per period, dB.
    psnr_mean: Vec<f64>,
    psnr_min: f64,
    freezes: u32,
    undecryptable: u64,
}
struct Participant {
    client: Client,
    events: Events,
    label: String,
    tone: f64,
    wav: PathBuf,
    members: HashSet<PeerId>,
    connected: HashSet<PeerId>,
    epoch: Option<(u64, String)>,
    chats: Vec<String>,
    removed: bool,
    stats: HashMap<PeerId, (u64, u64, u64, u64)>,
    /// Where its received video goes.
    video_dir: PathBuf,
    seen: HashMap<PeerId, Seen>,
}

impl Participant {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Meeting(event) => match event {
                MeetingEvent::MemberJoined { peer_id, .. } => {
                    self.members.insert(peer_id);
                }
                MeetingEvent::MemberLeft { peer_id, .. } => {
                    self.members.remove(&peer_id);
                    self.connected.remove(&peer_id);
                }
                MeetingEvent::Joined {
                    epoch,
                    security_code,
                    ..
                }
                | MeetingEvent::Epoch {
                    epoch,
                    security_code,
                    ..
                } => {
                    self.epoch = Some((epoch, security_code.to_string()));
                }
                MeetingEvent::Chat { text, .. } => self.chats.push(text),
                MeetingEvent::Removed { .. } => self.removed = true,
                _ => {}
            },
            Event::Media(event) => media::dispatch(event, self),
            _ => {}
        }
    }

    /// Processes events until `done(self)` holds, at most `limit`.
    async fn until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(self) {
            let event = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .with_context(|| format!("{} did not get there within {limit:?}", self.label))?;
            match event {
                Some(event) => self.apply(event),
                None => anyhow::bail!("{} stopped unexpectedly", self.label),
            }
        }
        Ok(())
    }

    /// Lets events flow for `duration` (media keeps running in the background).
    async fn listen(&mut self, duration: Duration) {
        let _ = self.until(duration, |_| false).await;
    }
}

impl MediaSink for Participant {
    fn connection(&mut self, connection: Connection) {
        if connection.is_connected() {
            self.connected.insert(connection.peer_id);
        } else {
            self.connected.remove(&connection.peer_id);
        }
    }

    fn stats(&mut self, stats: Stats) {
        self.stats.insert(
            stats.peer_id,
            (
                stats.rx_frames,
                stats.lost_frames,
                stats.recovered_frames,
                stats.decrypt_failures,
            ),
        );
    }

    fn video(&mut self, stats: VideoStats) {
        let VideoStats {
            peer_id,
            report,
            counts,
            ..
        } = stats;
        let seen = self.seen.entry(peer_id).or_insert_with(|| Seen {
            psnr_min: f64::INFINITY,
            ..Seen::default()
        });
        seen.undecryptable = counts.undecryptable;
        // The first period with pictures is partly before the first one: not counted.
        if report.frames == 0 || counts.decoded == u64::from(report.frames) {
            return;
        }
        seen.fps.push(report.fps);
        seen.freezes += report.freezes;
        if let Some((p50, p95)) = report.latency_ms {
            seen.latency_p50.push(p50);
            seen.latency_p95 = seen.latency_p95.max(p95);
        }
        if let Some((min, mean)) = report.psnr_db {
            seen.psnr_min = seen.psnr_min.min(min);
            if mean.is_finite() {
                seen.psnr_mean.push(mean);
            }
        }
    }
}

fn loopback() -> Vec<Multiaddr> {
    vec![
        "/ip4/127.0.0.1/udp/0/quic-v1"
            .parse()
            .expect("valid multiaddr literal"),
        "/ip4/127.0.0.1/tcp/0"
            .parse()
            .expect("valid multiaddr literal"),
    ]
}

/// Waits until every participant is in the same epoch (at least `min_epoch`), lists
/// everyone else as a member, and has a media connection to each of them.
async fn agreement(people: &mut [Participant], min_epoch: u64) -> anyhow::Result<(u64, String)> {
    let ids: Vec<PeerId> = people.iter().map(|p| p.client.peer_id()).collect();
    let deadline = tokio::time::Instant::now() + STEP_LIMIT;
    loop {
        for person in people.iter_mut() {
            let me = person.client.peer_id();
            let others: HashSet<PeerId> = ids.iter().copied().filter(|id| *id != me).collect();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            person
                .until(left, |p| {
                    p.members == others
                        && p.connected.is_superset(&others)
                        && p.epoch.as_ref().is_some_and(|(e, _)| *e >= min_epoch)
                })
                .await?;
        }
        let first = people[0].epoch.clone();
        if people.iter().all(|p| p.epoch == first) {
            return first.context("in a group");
        }
        for person in people.iter_mut() {
            person.listen(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "participants did not agree on one epoch"
        );
    }
}

async fn all_listen(people: &mut [Participant], duration: Duration) {
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        for person in people.iter_mut() {
            person.listen(Duration::from_millis(50)).await;
        }
    }
}

/// Which of `speakers` (name, tone) can be heard in the recording at `path`, and its length.
fn heard_in(path: &Path, speakers: &[(String, f64)]) -> anyhow::Result<(Vec<String>, f64)> {
    let mut source = tones::WavSource::open(path)?;
    let mut samples = Vec::with_capacity(source.len());
    let mut frame = [0i16; tones::FRAME_SAMPLES];
    while tones::AudioSource::next_frame(&mut source, &mut frame) {
        samples.extend_from_slice(&frame);
    }
    let noise_floor = tones::tone_power(&samples, 2_017.0).max(1e-9);
    let heard = speakers
        .iter()
        .filter(|(_, hz)| tones::tone_power(&samples, *hz) > 1000.0 * noise_floor)
        .map(|(name, _)| name.clone())
        .collect();
    Ok((heard, samples.len() as f64 / f64::from(tones::SAMPLE_RATE)))
}

/// Runs the demo and prints its story.
pub(crate) async fn run(participants: usize, seconds: u64, out: Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        (2..=NAMES.len()).contains(&participants),
        "--participants must be between 2 and {}",
        NAMES.len()
    );
    let workdir = tempfile::Builder::new()
        .prefix("conclave-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let recordings = std::env::temp_dir().join(format!("conclave-demo-{}", std::process::id()));
    std::fs::create_dir_all(&recordings)
        .with_context(|| format!("cannot create {}", recordings.display()))?;

    // The relay runs until the demo ends.
    let (_relay, relays) = start_relay(workdir.path(), out).await?;
    let mut people = Vec::new();
    for (name, tone) in NAMES.iter().zip(TONES).take(participants) {
        people
            .push(start_participant(name, tone, workdir.path(), &recordings, &relays, out).await?);
    }
    let speakers: Vec<(String, f64)> = people.iter().map(|p| (p.label.clone(), p.tone)).collect();
    let names: BTreeMap<PeerId, String> = people
        .iter()
        .map(|p| (p.client.peer_id(), p.label.clone()))
        .collect();

    let invite = create_meeting(&mut people[0], out).await?;
    // Everyone but the last participant joins now; the last one arrives late.
    let late = if participants >= 3 {
        people.pop()
    } else {
        None
    };
    let join_times = join_everyone(&mut people, &invite, out).await?;
    let mut epoch = chat_across(&mut people, out).await?;
    all_listen(&mut people, Duration::from_secs(seconds)).await;
    if let Some(newcomer) = late {
        epoch = join_late(&mut people, newcomer, &invite, epoch, out).await?;
    }
    let kick_ms = if people.len() >= 3 {
        Some(kick_one(&mut people, epoch, out).await?)
    } else {
        None
    };
    leave_all(&mut people).await;
    report_recordings(&people, &speakers, &names, out);
    report_video(&people, &names, out);

    let mean_join =
        join_times.iter().sum::<Duration>() / u32::try_from(join_times.len().max(1)).unwrap_or(1);
    out.event("summary", json!({ "participants": participants, "mean_join_ms": mean_join.as_millis() as u64, "kick_to_new_epoch_ms": kick_ms, "recordings": recordings.display().to_string() }), || {
        format!("demo complete: {participants} participants, mean join {} ms; recordings and received video in {}", mean_join.as_millis(), recordings.display())
    });
    Ok(())
}

/// Starts the relay on loopback; returns it (it stops when dropped) and its TCP addresses.
async fn start_relay(
    workdir: &Path,
    out: Output,
) -> anyhow::Result<(conclave_relay::Relay, Vec<Multiaddr>)> {
    let mut relay_config = conclave_relay::Config {
        listen: loopback(),
        ..conclave_relay::Config::default()
    };
    // Loopback only, on ports the system picks, so demos never collide with a real relay.
    relay_config.turn.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    relay_config.turn.allow_loopback_peers = true;
    relay_config.metrics.enabled = false;
    let relay = conclave_relay::Relay::start(&relay_config, &workdir.join("relay")).await?;
    let relay_addrs: Vec<String> = relay.addrs().iter().map(ToString::to_string).collect();
    out.event(
        "relay",
        json!({ "peer_id": relay.peer_id().to_string(), "addrs": relay_addrs }),
        || {
            format!(
                "relay {} on {} (it only ever carries ciphertext)",
                relay.peer_id(),
                relay_addrs.join(", ")
            )
        },
    );
    let tcp_relay: Vec<Multiaddr> = relay
        .addrs()
        .iter()
        .filter(|a| a.to_string().contains("/tcp/"))
        .cloned()
        .collect();
    Ok((relay, tcp_relay))
}

/// Starts one participant speaking `tone` and recording into `recordings`.
async fn start_participant(
    name: &str,
    tone: f64,
    workdir: &Path,
    recordings: &Path,
    relays: &[Multiaddr],
    out: Output,
) -> anyhow::Result<Participant> {
    let wav = recordings.join(format!("{}.wav", name.to_lowercase()));
    let video_dir = recordings.join(format!("{}-video", name.to_lowercase()));
    let media = MediaConfig {
        audio_in: format!("tone:{tone}"),
        audio_out: Some(wav.clone()),
        video_in: Some(VideoSpec::TestSource {
            width: VIDEO_SIZE.0,
            height: VIDEO_SIZE.1,
        }),
        video_out: Some(video_dir.clone()),
        udp_addrs: vec!["127.0.0.1:0".to_owned()],
        // Test tones are exactly the steady sound noise suppression removes.
        noise_suppression: false,
        ..MediaConfig::default()
    };
    // Demo participants live in a temporary directory: their store key file is fine.
    let config = Config::new(workdir.join(name.to_lowercase()))
        .with_store_key(KeySource::InsecureKeyFile)
        .with_name(name)
        .with_listen(loopback())
        .with_relays(relays.to_vec())
        .with_mdns(false)
        .with_media(media);
    let (client, events) = Client::start(config)
        .await
        .with_context(|| format!("cannot start {name}"))?;
    out.event("participant", json!({ "name": name, "peer_id": client.peer_id().to_string(), "safety_number": client.safety_number().to_string(), "tone_hz": tone }), || {
        format!("{name:<8} speaks a {tone} Hz tone; peer {}  safety number {}", client.peer_id(), client.safety_number())
    });
    Ok(Participant {
        client,
        events,
        label: name.to_owned(),
        tone,
        wav,
        members: HashSet::new(),
        connected: HashSet::new(),
        epoch: None,
        chats: Vec::new(),
        removed: false,
        stats: HashMap::new(),
        video_dir,
        seen: HashMap::new(),
    })
}

/// `host` creates the meeting; returns its invite.
async fn create_meeting(host: &mut Participant, out: Output) -> anyhow::Result<Invite> {
    let invite = host.client.create_meeting(false).await?;
    host.until(STEP_LIMIT, |p| p.epoch.is_some()).await?;
    out.event(
        "meeting",
        json!({ "meeting_id": invite.meeting_id.to_string(), "host": host.label }),
        || {
            format!(
                "{} created meeting {} (only holders of its 256-bit secret can find it on the DHT)",
                host.label, invite.meeting_id
            )
        },
    );
    Ok(invite)
}

/// Everyone after the host joins, one by one; returns how long each join took.
async fn join_everyone(
    people: &mut [Participant],
    invite: &Invite,
    out: Output,
) -> anyhow::Result<Vec<Duration>> {
    let mut join_times = Vec::new();
    for person in people.iter_mut().skip(1) {
        let started = Instant::now();
        person.client.join(invite.clone()).await?;
        person.until(STEP_LIMIT, |p| p.epoch.is_some()).await?;
        let took = started.elapsed();
        join_times.push(took);
        let label = person.label.clone();
        out.event(
            "joined",
            json!({ "name": label, "ms": took.as_millis() as u64 }),
            || {
                format!(
                    "{label} found the meeting, proved the secret and got the MLS keys in {} ms",
                    took.as_millis()
                )
            },
        );
    }
    Ok(join_times)
}

/// Waits until everyone agrees and hears everyone, then the second participant says a
/// line that all others must read; returns the epoch agreed on.
async fn chat_across(people: &mut [Participant], out: Output) -> anyhow::Result<u64> {
    let started = Instant::now();
    let (epoch, code) = agreement(people, 0).await?;
    out.event("security_code", json!({ "epoch": epoch, "security_code": code, "members": people.len(), "media_ms": started.elapsed().as_millis() as u64 }), || {
        format!("all {} show security code {code} (epoch {epoch}) and hear each other over WebRTC: nobody sits in the middle", people.len())
    });

    let line = "Hello everyone, this line is end-to-end encrypted.";
    people[1].client.send_chat(line).await?;
    for person in people.iter_mut().filter(|p| p.label != NAMES[1]) {
        person
            .until(STEP_LIMIT, |p| p.chats.iter().any(|c| c == line))
            .await?;
    }
    out.event(
        "chat",
        json!({ "from": NAMES[1], "text": line, "delivered_to": people.len() - 1 }),
        || {
            format!(
                "{} said {line:?}; all {} others read it",
                NAMES[1],
                people.len() - 1
            )
        },
    );
    Ok(epoch)
}

/// `newcomer` joins the running meeting: keys rotate; returns the new epoch.
async fn join_late(
    people: &mut Vec<Participant>,
    mut newcomer: Participant,
    invite: &Invite,
    epoch: u64,
    out: Output,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    newcomer.client.join(invite.clone()).await?;
    newcomer.until(STEP_LIMIT, |p| p.epoch.is_some()).await?;
    let label = newcomer.label.clone();
    people.push(newcomer);
    let (epoch, code) = agreement(people, epoch + 1).await?;
    out.event("late_joiner", json!({ "name": label, "ms": started.elapsed().as_millis() as u64, "epoch": epoch, "security_code": code }), || {
        format!("{label} joined late; keys rotated (epoch {epoch}, code {code}) and everyone hears {label} within {} ms", started.elapsed().as_millis())
    });
    all_listen(people, Duration::from_secs(2)).await;
    Ok(epoch)
}

/// The host removes the third participant: keys rotate without it; returns how long
/// until everyone agreed on the new epoch, in ms.
async fn kick_one(people: &mut Vec<Participant>, epoch: u64, out: Output) -> anyhow::Result<u64> {
    let mut kicked = people.remove(2);
    let started = Instant::now();
    people[0].client.kick(kicked.client.peer_id()).await?;
    kicked.until(STEP_LIMIT, |p| p.removed).await?;
    let (epoch, code) = agreement(people, epoch + 1).await?;
    let took = started.elapsed();
    out.event("kicked", json!({ "name": kicked.label, "ms": took.as_millis() as u64, "epoch": epoch, "security_code": code }), || {
        format!("{} removed {}; new keys at everyone in {} ms (epoch {epoch}, code {code}); {} can no longer decrypt a frame", people[0].label, kicked.label, took.as_millis(), kicked.label)
    });
    let _ = kicked.client.leave().await;
    kicked.client.shutdown();
    all_listen(people, Duration::from_secs(2)).await;
    Ok(took.as_millis() as u64)
}

/// Everyone leaves and stops; the recordings are finalised when this returns.
async fn leave_all(people: &mut [Participant]) {
    for person in people.iter() {
        let _ = person.client.leave().await;
    }
    all_listen(people, Duration::from_millis(300)).await;
    for person in people.iter() {
        person.client.shutdown();
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // recordings are finalised
}

/// Prints, for each participant, how long it recorded, whom it heard and its statistics.
fn report_recordings(
    people: &[Participant],
    speakers: &[(String, f64)],
    names: &BTreeMap<PeerId, String>,
    out: Output,
) {
    for person in people {
        let stats: Vec<String> = person
            .stats
            .iter()
            .map(|(peer, (rx, lost, recovered, failures))| {
                format!("{}: {rx} frames, {lost} lost ({recovered} recovered), {failures} undecryptable", names.get(peer).map_or("?", String::as_str))
            })
            .collect();
        let (heard, secs) = match heard_in(&person.wav, speakers) {
            Ok(result) => result,
            Err(err) => {
                out.error(
                    "recording",
                    &format!("cannot read {}: {err}", person.wav.display()),
                );
                continue;
            }
        };
        let heard: Vec<String> = heard
            .into_iter()
            .filter(|name| *name != person.label)
            .collect();
        let wav = person.wav.display().to_string();
        out.event("recording", json!({ "name": person.label, "wav": wav, "seconds": secs, "heard": heard, "stats": stats }), || {
            format!("{} recorded {secs:.1} s to {wav}; heard {}; {}", person.label, heard.join(", "), stats.join("; "))
        });
    }
}

/// Prints, for each pair, what the receiver saw of the sender's video over the call.
fn report_video(people: &[Participant], names: &BTreeMap<PeerId, String>, out: Output) {
    for person in people {
        let mut senders: Vec<(&PeerId, &Seen)> = person.seen.iter().collect();
        senders.sort_by_key(|(peer, _)| names.get(peer));
        for (peer, seen) in senders {
            let from = names.get(peer).map_or("?", String::as_str);
            let fps = mean(seen.fps.iter().copied());
            let latency = median(&seen.latency_p50);
            let psnr = mean(seen.psnr_mean.iter().copied());
            let dir = person
                .video_dir
                .join(peer.to_string())
                .display()
                .to_string();
            out.event(
                "video",
                json!({ "receiver": person.label, "sender": from, "fps": fps, "latency_p50_ms": latency, "latency_p95_ms": seen.latency_p95, "psnr_mean_db": psnr, "psnr_min_db": seen.psnr_min.is_finite().then_some(seen.psnr_min), "freezes": seen.freezes, "undecryptable": seen.undecryptable, "dir": dir }),
                || {
                    format!(
                        "{} saw {from}: {} fps, latency {} ms (p95 {} ms), PSNR {} dB, {} freezes; pictures in {dir}",
                        person.label,
                        fps.map_or("-".into(), |v| format!("{v:.1}")),
                        latency.map_or("-".into(), |v| v.to_string()),
                        seen.latency_p95,
                        psnr.map_or("-".into(), |v| format!("{v:.1}")),
                        seen.freezes,
                    )
                },
            );
        }
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0u32), |(sum, count), v| (sum + v, count + 1));
    (count > 0).then(|| sum / f64::from(count))
}

fn median(values: &[u32]) -> Option<u32> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}
