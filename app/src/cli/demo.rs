//! `conclave demo`: a real encrypted meeting on this machine with no devices.
//!
//! Starts a relay and N participants on loopback (real libp2p nodes with their own data
//! directories, DHT discovery through the relay, hello handshakes proving the meeting
//! secret, one MLS group), then tells the story: everybody shows the same security code,
//! a chat line crosses the group end to end encrypted, the host removes someone (keys
//! rotate), and a participant that vanishes without a word is detected and removed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use conclave_core::meeting::MeetingEvent;
use conclave_core::{Client, Config, Event, Events, Multiaddr, PeerId};
use serde_json::json;

use super::output::Output;

const NAMES: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Barbara",
    "Edsger",
    "Frances",
    "Donald",
    "Radia",
    "Ken",
    "Margaret",
    "Dennis",
    "Leslie",
    "Tony",
    "Shafi",
    "Whitfield",
    "Martin",
];
const STEP_LIMIT: Duration = Duration::from_secs(20);

struct Participant {
    client: Client,
    events: Events,
    label: String,
    members: HashSet<PeerId>,
    epoch: Option<(u64, String)>,
    chats: Vec<String>,
    removed: bool,
}

impl Participant {
    fn apply(&mut self, event: &MeetingEvent) {
        match event {
            MeetingEvent::MemberJoined { peer_id, .. } => {
                self.members.insert(*peer_id);
            }
            MeetingEvent::MemberLeft { peer_id, .. } => {
                self.members.remove(peer_id);
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
                self.epoch = Some((*epoch, security_code.to_string()));
            }
            MeetingEvent::Chat { text, .. } => self.chats.push(text.clone()),
            MeetingEvent::Removed { .. } => self.removed = true,
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
                Some(Event::Meeting(event)) => self.apply(&event),
                Some(_) => {}
                None => anyhow::bail!("{} stopped unexpectedly", self.label),
            }
        }
        Ok(())
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

/// Waits until every participant is in the same epoch (at least `min_epoch`) with
/// everyone else as members.
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
                    p.members == others && p.epoch.as_ref().is_some_and(|(e, _)| *e >= min_epoch)
                })
                .await?;
        }
        let first = people[0].epoch.clone();
        if people.iter().all(|p| p.epoch == first) {
            return first.context("in a group");
        }
        for person in people.iter_mut() {
            // Someone is one commit behind: let events flow a little.
            let _ = person.until(Duration::from_millis(100), |_| false).await;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "participants did not agree on one epoch"
        );
    }
}

/// Runs the demo and prints its story.
pub(crate) async fn run(participants: usize, seconds: u64, out: Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        (2..=16).contains(&participants),
        "--participants must be between 2 and 16"
    );
    let workdir = tempfile::Builder::new()
        .prefix("conclave-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    let relay_config = conclave_relay::Config {
        listen: loopback(),
        ..conclave_relay::Config::default()
    };
    let relay = conclave_relay::Relay::start(&relay_config, &workdir.path().join("relay")).await?;
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

    let mut people = Vec::new();
    for name in NAMES.iter().take(participants) {
        let config = Config::new(workdir.path().join(name.to_lowercase()))
            .with_name(*name)
            .with_listen(loopback())
            .with_relays(tcp_relay.clone())
            .with_mdns(false);
        let (client, events) = Client::start(config)
            .await
            .with_context(|| format!("cannot start {name}"))?;
        out.event("participant", json!({ "name": name, "peer_id": client.peer_id().to_string(), "safety_number": client.safety_number().to_string() }), || {
            format!("{name:<8} peer {}  safety number {}", client.peer_id(), client.safety_number())
        });
        people.push(Participant {
            client,
            events,
            label: (*name).to_owned(),
            members: HashSet::new(),
            epoch: None,
            chats: Vec::new(),
            removed: false,
        });
    }

    let invite = people[0].client.create_meeting(false).await?;
    people[0].until(STEP_LIMIT, |p| p.epoch.is_some()).await?;
    out.event(
        "meeting",
        json!({ "meeting_id": invite.meeting_id.to_string(), "host": people[0].label }),
        || {
            format!(
                "{} created meeting {} (only holders of its 256-bit secret can find it on the DHT)",
                people[0].label, invite.meeting_id
            )
        },
    );

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
    let (mut epoch, code) = agreement(&mut people, 0).await?;
    out.event(
        "security_code",
        json!({ "epoch": epoch, "security_code": code, "members": people.len() }),
        || {
            format!(
                "all {} show security code {code} (epoch {epoch}): nobody sits in the middle",
                people.len()
            )
        },
    );

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

    tokio::time::sleep(Duration::from_secs(seconds)).await;

    let mut kick_ms = None;
    if people.len() >= 3 {
        let mut kicked = people.pop().context("participants")?;
        let started = Instant::now();
        people[0].client.kick(kicked.client.peer_id()).await?;
        kicked.until(STEP_LIMIT, |p| p.removed).await?;
        let code;
        (epoch, code) = agreement(&mut people, epoch + 1).await?;
        let took = started.elapsed();
        kick_ms = Some(took.as_millis() as u64);
        out.event("kicked", json!({ "name": kicked.label, "ms": took.as_millis() as u64, "epoch": epoch, "security_code": code }), || {
            format!("{} removed {}; new keys at everyone in {} ms (epoch {epoch}, code {code}) — {} can no longer decrypt anything", people[0].label, kicked.label, took.as_millis(), kicked.label)
        });
    }

    let mut vanish_ms = None;
    if people.len() >= 3 {
        let ghost = people.pop().context("participants")?;
        let started = Instant::now();
        ghost.client.shutdown();
        drop(ghost.client);
        let code;
        (epoch, code) = agreement(&mut people, epoch + 1).await?;
        let took = started.elapsed();
        vanish_ms = Some(took.as_millis() as u64);
        out.event("vanished", json!({ "name": ghost.label, "ms": took.as_millis() as u64, "epoch": epoch, "security_code": code }), || {
            format!("{} vanished without a goodbye; the others removed it and rotated keys in {} ms", ghost.label, took.as_millis())
        });
    }

    let mean_join =
        join_times.iter().sum::<Duration>() / u32::try_from(join_times.len().max(1)).unwrap_or(1);
    out.event("summary", json!({ "participants": participants, "mean_join_ms": mean_join.as_millis() as u64, "kick_to_new_epoch_ms": kick_ms, "vanish_to_new_epoch_ms": vanish_ms }), || {
        format!("demo complete: {participants} participants, mean join {} ms. (Audio over WebRTC with SFrame is the next milestone.)", mean_join.as_millis())
    });
    for person in &people {
        let _ = person.client.leave().await;
    }
    Ok(())
}
