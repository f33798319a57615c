//! The core never waits for the application: a member whose app stops reading events keeps
//! its meeting going — heartbeats, commits, chat acknowledgements, audio — and, when it
//! reads again, is told it lagged and re-reads the roster.
//!
//! The member with the stalled app is an in-process [`conclave_core::Client`] whose event
//! stream is left unread (with a small backlog, so that it overflows within the test); the
//! others are `conclave` processes on loopback with a relay.

use std::time::{Duration, Instant};

use conclave_core::Config as ClientConfig;
use conclave_core::{Event, KeySource, MediaConfig, MeetingEvent};
use conclave_tests::{Proc, peer_id_of, start_host, start_relay};

const LIMIT: Duration = Duration::from_secs(30);

/// Frames received from `peer` in `proc`'s media reports seen so far, newest last.
fn frames_from(proc: &Proc, peer: &str) -> Vec<u64> {
    proc.seen
        .iter()
        .filter(|v| v["event"] == "media" && v["peer_id"] == peer)
        .filter_map(|v| v["rx_frames"].as_u64())
        .collect()
}

#[test]
fn an_app_that_never_reads_its_events_stalls_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let audio = ["--audio-in", "tone:440", "--audio-out", "null"];
    let mut host_args = vec!["--relay", relay_addr.as_str()];
    host_args.extend_from_slice(&audio);
    let (mut host, invite, _host_id) = start_host(dir.path(), "A", &host_args).unwrap();

    // The stalled member: joins, and its app never reads an event from here on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ClientConfig::new(dir.path().join("X"))
        .with_store_key(KeySource::InsecureKeyFile)
        .with_name("X")
        .with_listen(vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ])
        .with_relays(vec![relay_addr.parse().unwrap()])
        .with_mdns(false)
        .with_event_backlog(16)
        .with_media(MediaConfig {
            audio_in: "tone:660".into(),
            audio_out: None,
            udp_addrs: vec!["127.0.0.1:0".into()],
            ..MediaConfig::default()
        });
    let (client, mut events) = runtime
        .block_on(conclave_core::Client::start(config))
        .unwrap();
    let stalled = client.peer_id().to_string();
    runtime
        .block_on(client.join(invite.parse().unwrap()))
        .unwrap();
    host.wait_for(LIMIT, "the stalled member in", |v| {
        v["event"] == "member_joined" && v["peer_id"] == stalled.as_str()
    })
    .unwrap();
    host.wait_for(LIMIT, "audio from the stalled member", |v| {
        v["event"] == "audio_started" && v["peer_id"] == stalled.as_str()
    })
    .unwrap();

    // Someone joins, 400 lines of chat, and the newcomer is kicked: every step needs the
    // stalled member's machine (acknowledgements, commits) while its app reads nothing.
    let mut b = Proc::conclave(
        "B",
        &dir.path().join("B"),
        &[
            "join",
            &invite,
            "--audio-in",
            "tone:550",
            "--audio-out",
            "null",
        ],
    )
    .unwrap();
    let b_id = peer_id_of(&mut b).unwrap();
    b.wait_event("joined", LIMIT).unwrap();
    host.wait_for(LIMIT, "the epoch with B", |v| {
        v["event"] == "epoch" && v["members"].as_array().is_some_and(|m| m.len() == 3)
    })
    .unwrap();
    for line in 0..400 {
        host.send_line(&format!("line {line}")).unwrap();
    }
    b.wait_chat("line 399", LIMIT).unwrap();
    // The host's last line delivered = acknowledged by the stalled member too.
    host.wait_for(Duration::from_secs(60), "the last line delivered", |v| {
        v["event"] == "chat_delivered" && v["id"] == 400
    })
    .unwrap();
    let kicked_from = host.seen.len();
    host.send_line(&format!("/kick {b_id}")).unwrap();
    let last_epoch = host
        .wait_for_since(kicked_from, LIMIT, "the epoch without B", |v| {
            v["event"] == "epoch"
                && v["members"]
                    .as_array()
                    .is_some_and(|m| m.len() == 2 && m.iter().any(|p| p == stalled.as_str()))
        })
        .unwrap();

    // Ten more seconds: nobody removed, and the stalled member's audio keeps coming.
    let before = frames_from(&host, &stalled).last().copied().unwrap_or(0);
    host.drain_for(Duration::from_secs(10));
    let after = frames_from(&host, &stalled).last().copied().unwrap_or(0);
    assert!(
        after >= before + 300,
        "audio from the stalled member: {before} → {after} frames in 10 s"
    );
    assert!(
        !host
            .seen
            .iter()
            .any(|v| v["event"] == "member_left" && v["peer_id"] == stalled.as_str()),
        "the stalled member was removed"
    );

    // The app reads again: it is told it lagged, and the newest events it still gets end
    // on the host's epoch; the roster is read again from the client.
    let (lagged, epochs) = runtime.block_on(async {
        let mut lagged = 0;
        let mut epochs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
                Ok(Some(Event::Lagged { missed })) => lagged += missed,
                Ok(Some(Event::Meeting(MeetingEvent::Epoch {
                    epoch,
                    security_code,
                    ..
                }))) => epochs.push((epoch, security_code.to_string())),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        (lagged, epochs)
    });
    assert!(lagged > 0, "the app was not told it lagged");
    let host_epoch = (
        last_epoch["epoch"].as_u64().unwrap(),
        last_epoch["security_code"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        epochs.last(),
        Some(&host_epoch),
        "the stalled member ended on other keys"
    );
    let roster = runtime.block_on(client.members()).unwrap();
    let ids: Vec<String> = roster.iter().map(|(p, _)| p.to_string()).collect();
    let host_id = host.seen[0]["peer_id"].as_str().unwrap().to_owned();
    assert_eq!(ids, vec![host_id]);
    client.shutdown();
}
