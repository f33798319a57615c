//! `conclave demo`: a real meeting on this machine with no devices.
//!
//! Starts a relay and N participants on loopback (real libp2p nodes, separate data
//! directories, DHT discovery through the relay, hello handshakes proving the meeting
//! secret), then shows presence: one participant leaves politely, another vanishes without a
//! word and is detected by the liveness timeout. Prints what happened and how long it took.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use conclave_core::meeting::MeetingEvent;
use conclave_core::{Client, Config, Event, Events, Multiaddr, PeerId};
use serde_json::json;

use super::output::Output;

struct Participant {
    client: Client,
    events: Events,
    label: String,
    members: HashSet<PeerId>,
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

/// Waits until `participant` has `count` other members, at most `limit`.
async fn wait_for_members(
    participant: &mut Participant,
    count: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    if participant.members.len() >= count {
        return Ok(());
    }
    wait_for(participant, limit, |_| false, count)
        .await
        .map(|_| ())
}

/// Waits until `participant` reports an event matching `want` (or, if `members_wanted` is
/// reached first, returns), at most `limit`. Every event updates the member set.
async fn wait_for(
    participant: &mut Participant,
    limit: Duration,
    mut want: impl FnMut(&MeetingEvent) -> bool,
    members_wanted: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, participant.events.next())
            .await
            .with_context(|| {
                format!(
                    "{} did not see the expected event within {limit:?}",
                    participant.label
                )
            })?;
        match event {
            Some(Event::Meeting(event)) => {
                match &event {
                    MeetingEvent::MemberJoined { peer_id, .. } => {
                        participant.members.insert(*peer_id);
                    }
                    MeetingEvent::MemberLeft { peer_id, .. } => {
                        participant.members.remove(peer_id);
                    }
                    _ => {}
                }
                if want(&event) || participant.members.len() >= members_wanted {
                    return Ok(started.elapsed());
                }
            }
            Some(_) => {}
            None => anyhow::bail!("{} stopped unexpectedly", participant.label),
        }
    }
}

fn member_left(peer: PeerId) -> impl FnMut(&MeetingEvent) -> bool {
    move |e| matches!(e, MeetingEvent::MemberLeft { peer_id, .. } if *peer_id == peer)
}

/// Runs the demo and prints its story.
pub(crate) async fn run(participants: usize, seconds: u64, out: Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        (2..=16).contains(&participants),
        "--participants must be between 2 and 16"
    );
    let names = [
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
        || format!("relay {} on {}", relay.peer_id(), relay_addrs.join(", ")),
    );
    let tcp_relay: Vec<Multiaddr> = relay
        .addrs()
        .iter()
        .filter(|a| a.to_string().contains("/tcp/"))
        .cloned()
        .collect();

    let mut people = Vec::new();
    for name in names.iter().take(participants) {
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
        });
    }

    let invite = people[0].client.create_meeting(false).await?;
    wait_for(
        &mut people[0],
        Duration::from_secs(5),
        |e| matches!(e, MeetingEvent::Joined { .. }),
        usize::MAX,
    )
    .await?;
    out.event("meeting", json!({ "meeting_id": invite.meeting_id.to_string(), "host": people[0].label }), || {
        format!("{} created meeting {} (the invite carries a 256-bit secret; only invitees can find it on the DHT)", people[0].label, invite.meeting_id)
    });

    let mut join_times = Vec::new();
    for person in people.iter_mut().skip(1) {
        let started = Instant::now();
        person.client.join(invite.clone()).await?;
        wait_for(
            person,
            Duration::from_secs(20),
            |e| matches!(e, MeetingEvent::Joined { .. }),
            usize::MAX,
        )
        .await?;
        let took = started.elapsed();
        join_times.push(took);
        let label = person.label.clone();
        out.event(
            "joined",
            json!({ "name": label, "ms": took.as_millis() as u64 }),
            || {
                format!(
                    "{label} found the meeting on the DHT and proved the secret in {} ms",
                    took.as_millis()
                )
            },
        );
    }

    // Everyone must see everyone else.
    let started = Instant::now();
    let others = people.len() - 1;
    for person in &mut people {
        wait_for_members(person, others, Duration::from_secs(15)).await?;
    }
    out.event(
        "full_mesh",
        json!({ "members": people.len(), "ms": started.elapsed().as_millis() as u64 }),
        || format!("all {} participants see each other", people.len()),
    );

    tokio::time::sleep(Duration::from_secs(seconds)).await;

    // A polite goodbye, then a participant that vanishes without a word.
    let leaver = people.pop().context("at least two participants")?;
    let leaver_id = leaver.client.peer_id();
    leaver.client.leave().await?;
    let took = wait_for(
        &mut people[0],
        Duration::from_secs(5),
        member_left(leaver_id),
        usize::MAX,
    )
    .await?;
    out.event(
        "member_left",
        json!({ "name": leaver.label, "reason": "left", "ms": took.as_millis() as u64 }),
        || {
            format!(
                "{} left; {} saw it in {} ms",
                leaver.label,
                people[0].label,
                took.as_millis()
            )
        },
    );
    drop(leaver);

    if people.len() >= 3 {
        let ghost = people.pop().context("at least three participants")?;
        let ghost_id = ghost.client.peer_id();
        ghost.client.shutdown();
        drop(ghost.client);
        let took = wait_for(
            &mut people[0],
            Duration::from_secs(15),
            member_left(ghost_id),
            usize::MAX,
        )
        .await?;
        out.event(
            "member_left",
            json!({ "name": ghost.label, "reason": "timed out", "ms": took.as_millis() as u64 }),
            || {
                format!(
                    "{} vanished without a goodbye; detected after {} ms",
                    ghost.label,
                    took.as_millis()
                )
            },
        );
    }

    let mean_join =
        join_times.iter().sum::<Duration>() / u32::try_from(join_times.len().max(1)).unwrap_or(1);
    out.event("summary", json!({ "participants": participants, "mean_join_ms": mean_join.as_millis() as u64 }), || {
        format!(
            "demo complete: {participants} participants, mean join {} ms. Audio, MLS keys and chat arrive with the next milestones.",
            mean_join.as_millis()
        )
    });
    for person in &people {
        let _ = person.client.leave().await;
    }
    Ok(())
}
