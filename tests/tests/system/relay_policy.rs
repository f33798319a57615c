//! The relay is no door into the site: a real `conclave-relay` in the emulated internet
//! (`conclave_tests::nat`, every address inside test namespaces), probed with the `turn`
//! crate's standard TURN client.
//!
//! - A credential holder asking for permissions (CreatePermission, and ChannelBind sent by
//!   hand on the client's 5-tuple) to the site's internal hosts (`10.99.0.1`,
//!   `192.168.77.1`, the cloud metadata address `169.254.169.254`, all behind the relay
//!   host), the relay host's loopback, the relay's own public and internal addresses, and the
//!   IPv4-mapped IPv6 form of each, is refused with 403 and counted; UDP listeners on all of
//!   them receive nothing, while a public peer is reached. After `allow_peers` names
//!   `10.99.0.0/24` (a config reload, the allocation staying up), that range works both ways
//!   and the others stay closed. A relay without a config warns that it is open to anyone.
//! - 2000 idle TCP connections from one source address do not stop a fresh client on another
//!   address from allocating over TCP (per-address cap); a connection that never speaks STUN
//!   and one that goes silent are closed by the handshake and idle timeouts; all counted.
//! - `conclave-relay allow remove` ends the removed identity's allocation within seconds
//!   while another identity's relayed traffic carries on (reload without dropping calls).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use conclave_tests::bin;
use conclave_tests::nat::{Internet, RELAY_ADDR, serial};
use conclave_tests::netns::available;
use conclave_tests::turn_client::{
    Login, Received, Tally, Tap, TcpConn, UdpSink, block_on_in, http_get, in_namespace, metric,
    raise_open_files, spawn_in,
};
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    BINDING_REQUEST, CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
    METHOD_CHANNEL_BIND, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use webrtc_util::Conn;

const LIMIT: Duration = Duration::from_secs(30);
const TURN_PORT: u16 = 3478;
/// The metrics endpoint, on the relay's public address so that test clients reach it.
const METRICS: &str = "198.51.100.1:9464";

fn turn_server() -> SocketAddr {
    SocketAddr::new(RELAY_ADDR.parse().unwrap(), TURN_PORT)
}

fn identity() -> String {
    conclave_core::identity::Identity::generate()
        .peer_id()
        .to_string()
}

/// Writes the relay's configuration: TURN and metrics on the public address, then `extra`.
fn write_config(path: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[turn]\nlisten = \"{RELAY_ADDR}:{TURN_PORT}\"\n{extra}\n[metrics]\nlisten = \"{METRICS}\"\n"
        ),
    )
    .unwrap();
}

/// The relay's `/metrics`, fetched from namespace `ns`.
fn metrics_from(ns: &str) -> String {
    in_namespace(ns, || http_get(METRICS, "/metrics"))
        .unwrap()
        .unwrap()
}

/// Waits (bounded) until `series` in the relay's metrics, seen from `ns`, satisfies `ok`.
fn wait_metric(ns: &str, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = metrics_from(ns);
        let value = metric(&text, series);
        if ok(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} = {value}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until `to` has received `count` datagrams carrying `payload` from each
/// of `from`.
async fn arrived(tally: &Tally, to: SocketAddr, from: &[SocketAddr], payload: &[u8], count: usize) {
    let deadline = Instant::now() + LIMIT;
    while from.iter().any(|f| tally.count(to, *f, payload) < count) {
        assert!(
            Instant::now() < deadline,
            "{payload:?} did not reach {to} {count} times from each of {from:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `addr` as an IPv4-mapped IPv6 address.
fn mapped(addr: SocketAddr) -> SocketAddr {
    let IpAddr::V4(v4) = addr.ip() else {
        return addr;
    };
    SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port())
}

fn secret(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("relay").join("turn.secret")).unwrap()
}

/// A ChannelBind request from `login` for `peer`, as a client would send it.
fn channel_bind(login: &Login, nonce: &str, channel: u16, peer: SocketAddr) -> Message {
    let mut msg = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(stun::agent::TransactionId::new()),
        Box::new(MessageType::new(METHOD_CHANNEL_BIND, CLASS_REQUEST)),
        Box::new(turn::proto::channum::ChannelNumber(channel)),
        Box::new(turn::proto::peeraddr::PeerAddress {
            ip: peer.ip(),
            port: peer.port(),
        }),
        Box::new(TextAttribute::new(ATTR_USERNAME, login.username.clone())),
        Box::new(TextAttribute::new(ATTR_REALM, "conclave".into())),
        Box::new(TextAttribute::new(ATTR_NONCE, nonce.into())),
        Box::new(MessageIntegrity::new_long_term_integrity(
            login.username.clone(),
            "conclave".into(),
            login.password.clone(),
        )),
        Box::new(FINGERPRINT),
    ];
    msg.build(&setters).unwrap();
    msg
}

fn error_code(answer: &Message) -> Option<u16> {
    if answer.typ.class != CLASS_ERROR_RESPONSE {
        return None;
    }
    let mut code = ErrorCodeAttribute::default();
    stun::message::Getter::get_from(&mut code, answer).ok()?;
    Some(code.code.0)
}

/// Receives what comes back on `relayed` for at most `limit` (or `want` datagrams).
async fn collect(relayed: &impl Conn, want: usize, limit: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < want {
        match tokio::time::timeout_at(deadline, relayed.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => got.push((from, buf[..n].to_vec())),
            _ => break,
        }
    }
    got
}

/// The datagrams `received` holds with `payload`, per listening address.
fn count(received: &Received, addr: SocketAddr, payload: &[u8]) -> usize {
    received
        .get(&addr)
        .map_or(0, |d| d.iter().filter(|(_, p)| p == payload).count())
}

#[test]
fn turn_refuses_internal_and_own_addresses_until_allow_peers_opens_a_range() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let _serial = serial();
    let mut internet = Internet::new("pol").unwrap();
    let site = internet.add_site().unwrap();
    let client = internet.add_public_host().unwrap();
    let peer = internet.add_public_host().unwrap();
    let relay_ns = internet.relay_namespace();
    let dir = tempfile::tempdir().unwrap();

    // No configuration, a non-loopback address: a clear warning that anyone gets credentials.
    {
        let open_dir = dir.path().join("open");
        std::fs::create_dir_all(&open_dir).unwrap();
        let (open_relay, _) = internet.relay(&open_dir, None).unwrap();
        let stderr = open_relay.stderr();
        assert!(
            stderr.contains("TURN credentials to ANYONE") && stderr.contains("no --config"),
            "{stderr}"
        );
    }

    let config = dir.path().join("relay.toml");
    write_config(&config, "");
    let (mut relay, _) = internet.relay(dir.path(), Some(&config)).unwrap();
    let login = Login::mint(turn_server(), &secret(dir.path()), &identity());

    let addr = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
    let internal = [
        addr(&site.addrs[0], 7001), // 10.99.0.1
        addr(&site.addrs[1], 7002), // 192.168.77.1
        addr(&site.addrs[2], 7003), // 169.254.169.254
    ];
    assert_eq!(internal[2].ip().to_string(), "169.254.169.254");
    let on_relay_host = [
        addr("127.0.0.1", 7004),
        addr(RELAY_ADDR, 7005),          // the relay's own public address
        addr(&site.relay_side[0], 7006), // and its own internal one
    ];
    let public_peer = addr(&peer.addr, 7000);
    let public_control = addr(&peer.addr, 7009);
    let site_sink = UdpSink::start(&site.ns, &internal, true).unwrap();
    let host_sink = UdpSink::start(&relay_ns, &on_relay_host, true).unwrap();
    let peer_sink = UdpSink::start(&peer.ns, &[public_peer], true).unwrap();
    let denied: Vec<SocketAddr> = internal
        .iter()
        .chain(&on_relay_host)
        .flat_map(|a| [*a, mapped(*a)])
        .collect();
    assert_eq!(denied.len(), 12);

    let client_addr: IpAddr = client.addr.parse().unwrap();
    let config_path = config.clone();
    let (echoes, refusals, binds, opened, still_closed) =
        block_on_in(&client.ns, move || async move {
            let tap = Tap::bind(SocketAddr::new(client_addr, 0)).await.unwrap();
            let turn = login.client(tap.clone()).await.unwrap();
            let relayed = turn.allocate().await.unwrap();
            // Control: a public peer is reached and answers.
            for _ in 0..10 {
                relayed.send_to(b"public", public_peer).await.unwrap();
            }
            let echoes = collect(&relayed, 10, Duration::from_secs(3)).await;
            // Every internal and own address, and its mapped form: CreatePermission refused.
            let mut refusals = Vec::new();
            for target in &denied {
                for _ in 0..3 {
                    let result = relayed.send_to(b"probe", *target).await;
                    refusals.push((*target, result.map_err(|e| e.to_string())));
                }
            }
            // ChannelBind sent by hand on the client's 5-tuple: refused too; to a public
            // address the client has no channel for, it succeeds (tap and credentials sound).
            let nonce = tap.nonce().expect("the client sent a nonce");
            let mut binds = Vec::new();
            for (i, target) in denied.iter().chain([&public_control]).enumerate() {
                let request = channel_bind(&login, &nonce, 0x4100 + i as u16, *target);
                let answer = tap.request(&request, login.server).await.unwrap();
                binds.push((
                    *target,
                    answer.typ.class == CLASS_SUCCESS_RESPONSE,
                    error_code(&answer),
                ));
            }
            // Open 10.99.0.0/24 by a config reload; the allocation stays up.
            write_config(&config_path, "allow_peers = [\"10.99.0.0/24\"]");
            let deadline = Instant::now() + LIMIT;
            while metric(
                &http_get(METRICS, "/metrics").unwrap(),
                "conclave_relay_config_reloads_total{result=\"ok\"}",
            ) < 1.0
            {
                assert!(
                    Instant::now() < deadline,
                    "the relay did not reload its config"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let site_host = SocketAddr::new("10.99.0.1".parse().unwrap(), 7001);
            for _ in 0..10 {
                relayed.send_to(b"opened", site_host).await.unwrap();
            }
            let opened = collect(&relayed, 10, Duration::from_secs(3)).await;
            let mut still_closed = Vec::new();
            for target in [
                SocketAddr::new("192.168.77.1".parse().unwrap(), 7002),
                SocketAddr::new("10.99.0.254".parse().unwrap(), 7006),
                SocketAddr::new("127.0.0.1".parse().unwrap(), 7004),
            ] {
                let result = relayed.send_to(b"probe", target).await;
                still_closed.push((target, result.map_err(|e| e.to_string())));
            }
            relayed.close().await.unwrap();
            turn.close().await.unwrap();
            (echoes, refusals, binds, opened, still_closed)
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let at_site = site_sink.stop().unwrap();
    let at_host = host_sink.stop().unwrap();
    let at_peer = peer_sink.stop().unwrap();

    assert_eq!(count(&at_peer, public_peer, b"public"), 10, "{at_peer:?}");
    assert_eq!(echoes.len(), 10, "the public peer's answers come back");
    for (target, result) in refusals.iter().chain(&still_closed) {
        let err = result
            .as_ref()
            .expect_err(&format!("{target} was permitted"));
        assert!(err.contains("403"), "{target}: {err}");
    }
    for (target, ok, code) in &binds {
        if *target == public_control {
            assert!(*ok, "ChannelBind to a public address: {code:?}");
        } else {
            assert_eq!(*code, Some(403), "ChannelBind to {target}");
        }
    }
    // Nothing the policy refused arrived anywhere.
    for (sink, received) in [
        ("site", &at_site),
        ("relay host", &at_host),
        ("peer", &at_peer),
    ] {
        for (listener, datagrams) in received.iter() {
            assert!(
                datagrams.iter().all(|(_, p)| p != b"probe"),
                "{sink} listener {listener} received a probe"
            );
        }
    }
    for listener in on_relay_host.iter().chain(&internal[1..]) {
        let got = at_host
            .get(listener)
            .or(at_site.get(listener))
            .map_or(0, Vec::len);
        assert_eq!(got, 0, "{listener} received {got} datagrams");
    }
    // After allow_peers: 10.99.0.1 got the datagrams and its answers came back.
    assert_eq!(count(&at_site, internal[0], b"opened"), 10, "{at_site:?}");
    assert_eq!(
        opened
            .iter()
            .filter(|(from, _)| *from == internal[0])
            .count(),
        10,
        "{opened:?}"
    );
    let text = metrics_from(&client.ns);
    // 12 addresses × 3 attempts (the client asks again on each send), and 12 ChannelBinds.
    let permissions = metric(
        &text,
        "conclave_relay_turn_denied_peer_requests_total{method=\"create_permission\"}",
    );
    assert!(permissions >= 36.0 + 3.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "conclave_relay_turn_denied_peer_requests_total{method=\"channel_bind\"}"
        ),
        12.0,
        "{text}"
    );
    let reloaded = relay.wait_event("reloaded", LIMIT).unwrap();
    assert_eq!(reloaded["changed"], serde_json::json!(["turn.allow_peers"]));
    assert_eq!(reloaded["ended_allocations"], 0);
}

#[test]
fn a_tcp_flood_from_one_address_does_not_lock_out_other_clients() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    const FLOOD: usize = 2000;
    // The flood's 2000 sockets, and the relay's (a child) up to its caps.
    let files = raise_open_files(8192).unwrap();
    assert!(files >= 4096, "RLIMIT_NOFILE hard limit {files} is too low");
    let _serial = serial();
    let mut internet = Internet::new("tcp").unwrap();
    let attacker = internet.add_public_host().unwrap();
    let client = internet.add_public_host().unwrap();
    let peer = internet.add_public_host().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    // Long timeouts first: only the per-address cap protects the others.
    write_config(
        &config,
        "tcp_handshake_timeout = \"60s\"\ntcp_idle_timeout = \"120s\"",
    );
    let (_relay, _) = internet.relay(dir.path(), Some(&config)).unwrap();
    let server = turn_server();

    // 2000 connections from one address that never send a byte, held open.
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let flood = spawn_in(&attacker.ns, move || {
        let mut streams = Vec::new();
        for _ in 0..FLOOD {
            if let Ok(stream) =
                std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3))
            {
                streams.push(stream);
            }
        }
        let _ = opened_tx.send(streams.len());
        let _ = release_rx.recv_timeout(Duration::from_secs(120));
        drop(streams);
    });
    let opened = opened_rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(opened, FLOOD, "the flood connected");
    // The relay holds at most 256 of them (max_tcp_connections_per_ip) and refused the rest.
    let refused = wait_metric(
        &client.ns,
        "conclave_relay_turn_tcp_limited_total{reason=\"per_ip\"}",
        |v| v >= (FLOOD - 256) as f64,
    );
    let text = metrics_from(&client.ns);
    let held = metric(
        &text,
        "conclave_relay_turn_tcp_connections{transport=\"tcp\"}",
    );
    eprintln!("flood: {opened} connected, {held} held, {refused} refused by the per-address cap");
    assert!((200.0..=256.0).contains(&held), "{text}");

    // A fresh client on another address allocates over TCP and relays.
    let login = Login::mint(server, &secret(dir.path()), &identity());
    let public_peer = SocketAddr::new(peer.addr.parse().unwrap(), 7000);
    let sink = UdpSink::start(&peer.ns, &[public_peer], true).unwrap();
    let client_addr: IpAddr = client.addr.parse().unwrap();
    let echoes = block_on_in(&client.ns, move || async move {
        let conn = TcpConn::connect(SocketAddr::new(client_addr, 0), server)
            .await
            .unwrap();
        let turn = tokio::time::timeout(LIMIT, login.client(conn))
            .await
            .unwrap()
            .unwrap();
        let relayed = tokio::time::timeout(LIMIT, turn.allocate())
            .await
            .expect("allocation over TCP within 20 s")
            .expect("allocation over TCP during the flood");
        for _ in 0..10 {
            relayed.send_to(b"tcp", public_peer).await.unwrap();
        }
        let echoes = collect(&relayed, 10, Duration::from_secs(5)).await;
        relayed.close().await.unwrap();
        turn.close().await.unwrap();
        echoes.len()
    })
    .unwrap();
    let received = sink.stop().unwrap();
    assert_eq!(count(&received, public_peer, b"tcp"), 10, "{received:?}");
    assert_eq!(echoes, 10);
    let _ = release_tx.send(());
    flood.join().unwrap().unwrap();

    // Short timeouts by a reload (new connections take them).
    write_config(
        &config,
        "tcp_handshake_timeout = \"2s\"\ntcp_idle_timeout = \"4s\"",
    );
    wait_metric(
        &client.ns,
        "conclave_relay_config_reloads_total{result=\"ok\"}",
        |v| v >= 1.0,
    );
    let (silent, after_stun) = in_namespace(&attacker.ns, move || {
        use std::io::{Read, Write};
        // Closed by the relay: how long after `from` the read saw the end.
        let closed_after = |stream: &mut std::net::TcpStream, from: Instant| {
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            let mut buf = [0u8; 512];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return from.elapsed(),
                    Ok(_) => {}
                }
            }
        };
        let mut silent = std::net::TcpStream::connect(server).unwrap();
        let silent_for = closed_after(&mut silent, Instant::now());
        let mut talker = std::net::TcpStream::connect(server).unwrap();
        let mut binding = Message::new();
        binding
            .build(&[
                Box::new(stun::agent::TransactionId::new()),
                Box::new(BINDING_REQUEST),
                Box::new(FINGERPRINT),
            ])
            .unwrap();
        talker.write_all(&binding.raw).unwrap();
        let mut header = [0u8; 20];
        talker.read_exact(&mut header).unwrap();
        assert_eq!(&header[4..8], &[0x21, 0x12, 0xa4, 0x42], "a STUN answer");
        let after_stun = closed_after(&mut talker, Instant::now());
        (silent_for, after_stun)
    })
    .unwrap();
    eprintln!("silent connection closed after {silent:?}, idle one after {after_stun:?}");
    // Not before the timeouts (2 s, 4 s; a little timer slack); and closed by the relay, not
    // by the read giving up at LIMIT (the upper bound leaves room for a loaded machine).
    let closed_by_the_relay = LIMIT - Duration::from_secs(5);
    assert!(
        (Duration::from_millis(1500)..closed_by_the_relay).contains(&silent),
        "{silent:?}"
    );
    assert!(
        (Duration::from_millis(3000)..closed_by_the_relay).contains(&after_stun),
        "{after_stun:?}"
    );
    let text = metrics_from(&client.ns);
    assert!(
        metric(
            &text,
            "conclave_relay_turn_tcp_limited_total{reason=\"handshake_timeout\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "conclave_relay_turn_tcp_limited_total{reason=\"idle_timeout\"}"
        ) >= 1.0,
        "{text}"
    );
}

/// `conclave-relay --config FILE allow ARGS --json`, which must succeed; its JSON answer.
fn allow(config: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(bin("conclave-relay"))
        .arg("--config")
        .arg(config)
        .arg("--json")
        .arg("allow")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "allow {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn removing_an_identity_ends_its_allocations_and_spares_the_others() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let _serial = serial();
    let mut internet = Internet::new("rev").unwrap();
    let client = internet.add_public_host().unwrap();
    let peer = internet.add_public_host().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    write_config(&config, "");
    let (alice, bob) = (identity(), identity());
    let added = allow(&config, &["add", &alice]);
    assert_eq!(added["closed"], true, "adding closes an open relay");
    allow(&config, &["add", &bob]);
    assert_eq!(
        allow(&config, &["list"])["allow"],
        serde_json::json!([alice, bob])
    );
    // Not an identity: refused with the usage exit code, the file untouched.
    let bad = Command::new(bin("conclave-relay"))
        .arg("--config")
        .arg(&config)
        .args(["allow", "add", "mallory"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let (mut relay, _) = internet.relay(dir.path(), Some(&config)).unwrap();
    let secret = secret(dir.path());
    let logins = [
        Login::mint(turn_server(), &secret, &alice),
        Login::mint(turn_server(), &secret, &bob),
    ];
    let public_peer = SocketAddr::new(peer.addr.parse().unwrap(), 7000);
    let sink = UdpSink::start(&peer.ns, &[public_peer], false).unwrap();
    let tally = sink.tally();
    let client_addr: IpAddr = client.addr.parse().unwrap();
    let config_path = config.clone();
    let (relayed_addrs, revoked_after) = block_on_in(&client.ns, move || async move {
        let mut clients = Vec::new();
        for login in &logins {
            let tap = Tap::bind(SocketAddr::new(client_addr, 0)).await.unwrap();
            let turn = login.client(tap).await.unwrap();
            let relayed = turn.allocate().await.unwrap();
            clients.push((turn, relayed));
        }
        let relayed_addrs: Vec<SocketAddr> = clients
            .iter()
            .map(|(_, r)| r.local_addr().unwrap())
            .collect();
        for (_, relayed) in &clients {
            for _ in 0..10 {
                relayed.send_to(b"before", public_peer).await.unwrap();
            }
        }
        // Every "before" is relayed before the removal.
        arrived(&tally, public_peer, &relayed_addrs, b"before", 10).await;
        let removed = Command::new(bin("conclave-relay"))
            .arg("--config")
            .arg(&config_path)
            .args(["allow", "remove", &alice])
            .output()
            .unwrap();
        assert!(removed.status.success(), "{removed:?}");
        let start = Instant::now();
        while metric(
            &http_get(METRICS, "/metrics").unwrap(),
            "conclave_relay_turn_revoked_allocations_total",
        ) < 1.0
        {
            assert!(start.elapsed() < LIMIT, "alice's allocation was not ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let revoked_after = start.elapsed();
        for (_, relayed) in &clients {
            for _ in 0..10 {
                // Alice's client may notice its allocation is gone; that is fine.
                let _ = relayed.send_to(b"after", public_peer).await;
            }
        }
        // Bob's are all through; Alice's, sent at the same time, would have been too.
        arrived(&tally, public_peer, &relayed_addrs[1..], b"after", 10).await;
        for (turn, relayed) in clients {
            let _ = relayed.close().await;
            let _ = turn.close().await;
        }
        (relayed_addrs, revoked_after)
    })
    .unwrap();
    let received = sink.stop().unwrap();
    let from = |relayed: SocketAddr, payload: &[u8]| {
        received[&public_peer]
            .iter()
            .filter(|(src, p)| *src == relayed && p == payload)
            .count()
    };
    // Bounded by the poll above (LIMIT); the figure is printed, not asserted: no issue set one.
    eprintln!("alice's allocation ended {revoked_after:?} after `allow remove`");
    let (alice_at, bob_at) = (relayed_addrs[0], relayed_addrs[1]);
    assert_eq!(from(alice_at, b"before"), 10);
    assert_eq!(from(bob_at, b"before"), 10);
    assert_eq!(
        from(alice_at, b"after"),
        0,
        "alice still relays after removal"
    );
    assert_eq!(
        from(bob_at, b"after"),
        10,
        "bob's call was dropped by the reload"
    );
    let reloaded = relay.wait_event("reloaded", LIMIT).unwrap();
    assert_eq!(reloaded["ended_allocations"], 1, "{reloaded}");
    assert_eq!(reloaded["changed"], serde_json::json!(["access"]));
}
