//! Unit tests of the TURN server: the codec-independent parts of the gate (credentials,
//! quotas, the peer policy's 403), XOR-PEER-ADDRESS decoding, and servers on loopback.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, ErrorCodeAttribute};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, Message,
    MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use webrtc_util::Conn;

use crate::access::{self, Allowlist};
use crate::config::TurnConfig;
use crate::metrics::Metrics;

use super::gate::{Gate, Live, Pending, Relayed, xor_peer_addresses};
use super::*;

fn gate(max: usize) -> Gate {
    let own = HashSet::from(["198.51.100.1".parse().unwrap()]);
    let live = Live::new(&TurnConfig::default(), Allowlist::Open, own);
    Gate::new(Secret::new("s3cret"), live, max, Arc::new(Metrics::new()))
}

/// A `method` request naming `peers`, signed with `username` / `password`.
fn request_to(method: Method, peers: &[SocketAddr], username: &str, password: &str) -> Vec<u8> {
    let mut msg = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(MessageType::new(method, CLASS_REQUEST)),
        Box::new(stun::agent::TransactionId::new()),
    ];
    for peer in peers {
        setters.push(Box::new(turn::proto::peeraddr::PeerAddress {
            ip: peer.ip(),
            port: peer.port(),
        }));
    }
    setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, username.into())));
    setters.push(Box::new(TextAttribute::new(ATTR_REALM, "conclave".into())));
    setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
        username.into(),
        "conclave".into(),
        password.into(),
    )));
    msg.build(&setters).unwrap();
    msg.raw
}

fn error_code(answer: &[u8]) -> (u16, bool) {
    let mut msg = Message::new();
    msg.raw = answer.to_vec();
    msg.decode().unwrap();
    let mut code = ErrorCodeAttribute::default();
    stun::message::Getter::get_from(&mut code, &msg).unwrap();
    (code.code.0, msg.contains(ATTR_MESSAGE_INTEGRITY))
}

#[test]
fn xor_peer_addresses_decode_every_attribute() {
    let peers: Vec<SocketAddr> = ["203.0.113.5:4000", "[2001:db8::7]:5", "[::ffff:10.0.0.1]:9"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let raw = request_to(METHOD_CREATE_PERMISSION, &peers, "u", "p");
    let msg = decode_stun(&raw).unwrap();
    assert_eq!(xor_peer_addresses(&msg).unwrap(), peers);
}

#[test]
fn permissions_to_denied_peers_are_answered_403_and_counted() {
    let gate = gate(4);
    let pending = Pending::default();
    let creds = access::mint(
        b"s3cret",
        &PeerId::random(),
        unix_now(),
        Duration::from_secs(60),
    );
    let (user, pass) = (creds.username.as_str(), creds.password.as_str());
    let public: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    for method in [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND] {
        assert_eq!(
            gate.inspect(&request_to(method, &[public], user, pass), UDP, &pending),
            Verdict::Pass
        );
        for denied in [
            "10.99.0.1:9",
            "192.168.77.1:9",
            "169.254.169.254:80",
            "127.0.0.1:9464",
            "198.51.100.1:3478",
            "[::ffff:10.99.0.1]:9",
            "[::ffff:198.51.100.1]:4001",
            "[fd00::1]:9",
        ] {
            let denied: SocketAddr = denied.parse().unwrap();
            // Also when an allowed address comes first in the same request.
            let raw = request_to(method, &[public, denied], user, pass);
            let Verdict::Reply(answer) = gate.inspect(&raw, UDP, &pending) else {
                panic!("{denied} let through");
            };
            assert_eq!(error_code(&answer), (403, true), "{denied}");
        }
    }
    // Wrong credentials: the engine refuses them (no 403 that would reveal the policy).
    let raw = request_to(
        METHOD_CREATE_PERMISSION,
        &["10.0.0.1:1".parse().unwrap()],
        user,
        "x",
    );
    assert_eq!(gate.inspect(&raw, UDP, &pending), Verdict::Pass);
    let text = gate.metrics.encode();
    assert!(
        text.contains("turn_denied_peer_requests_total{method=\"create_permission\"} 8"),
        "{text}"
    );
    assert!(
        text.contains("turn_denied_peer_requests_total{method=\"channel_bind\"} 8"),
        "{text}"
    );
    // Another allocation's relayed address on this relay is a permitted peer.
    gate.relayed.lock().unwrap().insert(
        50000,
        Relayed {
            peer: PeerId::random(),
            username: "x".into(),
        },
    );
    let hairpin = request_to(
        METHOD_CREATE_PERMISSION,
        &["198.51.100.1:50000".parse().unwrap()],
        user,
        pass,
    );
    assert_eq!(gate.inspect(&hairpin, UDP, &pending), Verdict::Pass);
}

fn allocate(username: &str, password: &str) -> Vec<u8> {
    let mut msg = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(stun::agent::TransactionId::new()),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
        Box::new(TextAttribute::new(ATTR_REALM, "conclave".into())),
        Box::new(MessageIntegrity::new_long_term_integrity(
            username.into(),
            "conclave".into(),
            password.into(),
        )),
    ];
    msg.build(&setters).unwrap();
    msg.raw
}

#[test]
fn gate_checks_credentials_and_quota() {
    let gate = gate(1);
    let pending = Pending::default();
    assert_eq!(
        gate.inspect(b"\xffhello world, not stun", UDP, &pending),
        Verdict::Drop
    );
    assert_eq!(gate.inspect(&[], UDP, &pending), Verdict::Drop);
    assert_eq!(gate.inspect(&[0x40, 0, 0, 0], UDP, &pending), Verdict::Pass);
    let peer = PeerId::random();
    let creds = access::mint(b"s3cret", &peer, unix_now(), Duration::from_secs(60));
    // Wrong password: counted, still handed on (the engine answers with its error).
    assert_eq!(
        gate.inspect(&allocate(&creds.username, "nope"), UDP, &pending),
        Verdict::Pass
    );
    assert!(pending.lock().unwrap().is_none());
    let expired = access::mint(b"s3cret", &peer, 1000, Duration::from_secs(60));
    gate.inspect(
        &allocate(&expired.username, &expired.password),
        UDP,
        &pending,
    );
    assert!(pending.lock().unwrap().is_none());
    // Good credentials: the identity is remembered for the allocator.
    let good = allocate(&creds.username, &creds.password);
    assert_eq!(gate.inspect(&good, UDP, &pending), Verdict::Pass);
    assert_eq!(pending.lock().unwrap().as_ref().map(|r| r.peer), Some(peer));
    gate.counts.lock().unwrap().acquire(&peer).unwrap();
    // Over quota: answered 486 here.
    let Verdict::Reply(answer) = gate.inspect(&good, UDP, &pending) else {
        panic!("expected a 486 answer");
    };
    let mut msg = Message::new();
    msg.raw = answer;
    msg.decode().unwrap();
    let mut code = ErrorCodeAttribute::default();
    stun::message::Getter::get_from(&mut code, &msg).unwrap();
    assert!(code.code == CODE_ALLOC_QUOTA_REACHED);
    let text = gate.metrics.encode();
    assert!(text.contains("reason=\"wrong_password\"} 1"), "{text}");
    assert!(text.contains("reason=\"expired\"} 1"), "{text}");
    assert!(text.contains("turn_refused_allocations_total 1"), "{text}");
    assert!(text.contains("transport=\"udp\"} 2"), "{text}");
}

/// A `turn` crate client of `server` with fresh credentials for a new identity.
async fn client_of(server: &TurnServer, dir: &Path) -> turn::client::Client {
    client_at(server.udp_addr(), dir).await
}

/// A `turn` crate client of the server at `addr` (UDP) with fresh credentials for a new
/// identity, minted from the secret in `dir`.
async fn client_at(addr: SocketAddr, dir: &Path) -> turn::client::Client {
    let secret = std::fs::read_to_string(dir.join(SECRET_FILE)).unwrap();
    let creds = access::mint(
        secret.trim().as_bytes(),
        &PeerId::random(),
        unix_now(),
        Duration::from_secs(600),
    );
    let addr = addr.to_string();
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: addr.clone(),
        turn_serv_addr: addr,
        username: creds.username,
        password: creds.password,
        realm: "conclave".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

/// The relay-wide caps fire and are counted: allocations held at once, new allocations
/// per second (both answered 508), and the total bandwidth; a reload moves them.
#[tokio::test]
async fn relay_wide_caps_refuse_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TurnConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        allow_loopback_peers: true,
        max_allocations: 1,
        bandwidth_per_identity: 0,
        max_bandwidth: 20_000,
        ..TurnConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let server = TurnServer::start(&config, dir.path(), Allowlist::Open, Arc::clone(&metrics))
        .await
        .unwrap();
    let first = client_of(&server, dir.path()).await;
    let relayed = first.allocate().await.unwrap();
    let second = client_of(&server, dir.path()).await;
    let err = second.allocate().await.err().expect("over max_allocations");
    assert!(err.to_string().contains("508"), "{err}");
    // Relay-wide bandwidth: 200 kB at once against 20 kB/s, for an identity without a
    // quota of its own.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..200 {
        relayed
            .send_to(&[7u8; 1000], peer.local_addr().unwrap())
            .await
            .unwrap();
    }
    let mut received = 0;
    let mut buf = [0u8; 2048];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await
    {
        received += 1;
    }
    assert!(
        (1..50).contains(&received),
        "{received} datagrams got through"
    );
    // A reload lifts the total and sets one new allocation per second.
    config.max_allocations = 10;
    config.max_allocations_per_second = 1;
    assert_eq!(server.reload(&config, Allowlist::Open).await, 0);
    let third = client_of(&server, dir.path()).await;
    let fourth = client_of(&server, dir.path()).await;
    let results = [
        third.allocate().await.is_ok(),
        fourth.allocate().await.is_ok(),
    ];
    assert_eq!(
        results,
        [true, false],
        "the second within a second is refused"
    );
    let text = metrics.encode();
    assert!(
        text.contains("conclave_relay_turn_capped_allocations_total{reason=\"total\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("conclave_relay_turn_capped_allocations_total{reason=\"rate\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("conclave_relay_turn_capped_packets_total{direction=\"to_peer\"}"),
        "{text}"
    );
    for client in [first, second, third, fourth] {
        client.close().await.unwrap();
    }
}

/// A standard TURN client (the `turn` crate's) through a real server on loopback: the
/// identity's bandwidth quota drops what exceeds it, counted, and the allocation's
/// quota slot comes back when the client deletes it.
#[tokio::test]
async fn bandwidth_quota_drops_the_excess() {
    let dir = tempfile::tempdir().unwrap();
    let config = TurnConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        bandwidth_per_identity: 20_000,
        allow_loopback_peers: true,
        ..TurnConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let server = TurnServer::start(&config, dir.path(), Allowlist::Open, Arc::clone(&metrics))
        .await
        .unwrap();
    let client = client_of(&server, dir.path()).await;
    let relayed = client.allocate().await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = peer.local_addr().unwrap();
    // 200 kB at once against 20 kB/s with a 5 kB burst.
    for _ in 0..200 {
        relayed.send_to(&[7u8; 1000], target).await.unwrap();
    }
    let mut received = 0;
    let mut buf = [0u8; 2048];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf)).await
    {
        received += 1;
    }
    assert!(
        (1..50).contains(&received),
        "{received} datagrams got through"
    );
    let text = metrics.encode();
    assert!(
        text.contains("conclave_relay_turn_dropped_packets_total{direction=\"to_peer\"} 1"),
        "{text}"
    );
    assert!(text.contains("conclave_relay_turn_allocations 1"), "{text}");
    relayed.close().await.unwrap();
    client.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !metrics
        .encode()
        .contains("conclave_relay_turn_allocations 0")
    {
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 5 s) until `series` is at least `min` in the metrics.
async fn wait_for_metric(metrics: &Metrics, series: &str, min: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics.encode();
        let value = text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        });
        if value.is_some_and(|v| v >= min) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} < {min} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server on loopback (any ports) with TURN over TLS, not shared with libp2p, relaying
/// to loopback peers.
fn tls_config() -> TurnConfig {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    TurnConfig {
        listen: loopback,
        allow_loopback_peers: true,
        tls: Some(crate::config::TlsConfig {
            listen: loopback,
            cert_file: None,
            key_file: None,
            libp2p: false,
        }),
        ..TurnConfig::default()
    }
}

/// TURN over TLS through the client's bridge (Conclave's, in front of a standard TURN
/// client): with the relay's pin it allocates and relays both ways (the server named by
/// host name); with another pin the bridge refuses the server once, pauses instead of
/// retrying each retransmission, and nothing is allocated. The self-signed certificate is
/// made once, its key private.
#[tokio::test]
async fn turn_over_tls_works_with_the_pinned_certificate_and_only_with_it() {
    use conclave_core::media::transport::turn_tcp::{BridgeTarget, TcpTurnBridge};
    use conclave_core::proto::turn::CertificatePin;

    let dir = tempfile::tempdir().unwrap();
    let config = tls_config();
    let metrics = Arc::new(Metrics::new());
    let server = TurnServer::start(&config, dir.path(), Allowlist::Open, Arc::clone(&metrics))
        .await
        .unwrap();
    let tls = server.tls_addr().unwrap();
    let pin = server.issued().tls_pin.unwrap();
    let url = format!("turns:127.0.0.1:{}?transport=tcp", tls.port());
    assert!(
        server.issued().urls.contains(&url),
        "{:?}",
        server.issued().urls
    );
    let cert = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    // By name: the bridge resolves it and sends it as SNI; the pin alone decides.
    let bridge = TcpTurnBridge::start(BridgeTarget {
        server: format!("localhost:{}", tls.port()),
        tls: Some(pin),
    })
    .await
    .unwrap();
    let client = client_at(bridge.local_addr(), dir.path()).await;
    let relayed = client.allocate().await.unwrap();
    let relayed_addr = relayed.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    relayed
        .send_to(b"through TLS", peer.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"through TLS"[..], relayed_addr));
    peer.send_to(b"and back", relayed_addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), relayed.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"and back");
    wait_for_metric(
        &metrics,
        "conclave_relay_turn_tcp_connections{transport=\"tls\"}",
        1.0,
    )
    .await;

    let wrong = TcpTurnBridge::start(BridgeTarget {
        server: tls.to_string(),
        tls: Some(CertificatePin::of(b"another certificate")),
    })
    .await
    .unwrap();
    let impostor_client = client_at(wrong.local_addr(), dir.path()).await;
    let attempt = tokio::time::timeout(Duration::from_secs(3), impostor_client.allocate()).await;
    assert!(!matches!(attempt, Ok(Ok(_))), "allocated with a wrong pin");
    wait_for_metric(
        &metrics,
        "conclave_relay_turn_tls_handshake_failures_total",
        1.0,
    )
    .await;
    // The TURN client's retransmissions did not each try again: the bridge pauses after a
    // refusal.
    let text = metrics.encode();
    assert!(
        text.contains("conclave_relay_turn_tls_handshake_failures_total 1\n"),
        "{text}"
    );
    assert!(text.contains("conclave_relay_turn_allocations 1"), "{text}");

    // A restart keeps the certificate (clients' pins stay valid).
    relayed.close().await.unwrap();
    client.close().await.unwrap();
    impostor_client.close().await.unwrap();
    drop(server);
    let again = TurnServer::start(
        &config,
        dir.path(),
        Allowlist::Open,
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap();
    assert_eq!(again.issued().tls_pin, Some(pin));
    assert_eq!(std::fs::read(dir.path().join(CERT_FILE)).unwrap(), cert);
    drop(again);

    // A key without its certificate (a first start cut short) gives way to a new pair.
    std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
    let renewed = TurnServer::start(
        &config,
        dir.path(),
        Allowlist::Open,
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap();
    assert_ne!(renewed.issued().tls_pin, Some(pin));
}

/// On a port shared with libp2p, TLS connections that fill the TURN table (here two from
/// one address, half-way through their handshakes) do not lock libp2p out: a libp2p
/// connection from the same address is still handed to the node, while a third TLS one is
/// refused by the per-address limit.
#[tokio::test]
async fn tls_connections_filling_the_turn_table_do_not_lock_libp2p_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = tls_config();
    config.max_tcp_connections_per_ip = 2;
    if let Some(tls) = config.tls.as_mut() {
        tls.libp2p = true;
    }
    let metrics = Arc::new(Metrics::new());
    let server = TurnServer::start(&config, dir.path(), Allowlist::Open, Arc::clone(&metrics))
        .await
        .unwrap();
    let mut libp2p = server.take_libp2p_connections().unwrap();
    let addr = server.tls_addr().unwrap();
    // A TLS record header with no record yet: the handshake waits, holding the place.
    let client_hello_start = [0x16, 0x03, 0x01];
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(&client_hello_start).await.unwrap();
        held.push(stream);
    }
    wait_for_metric(
        &metrics,
        "conclave_relay_turn_tcp_connections{transport=\"tls\"}",
        2.0,
    )
    .await;

    let mut libp2p_client = tokio::net::TcpStream::connect(addr).await.unwrap();
    libp2p_client
        .write_all(b"\x13/multistream/1.0.0\n")
        .await
        .unwrap();
    let (_, from) = tokio::time::timeout(Duration::from_secs(5), libp2p.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, libp2p_client.local_addr().unwrap());

    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third.write_all(&client_hello_start).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    wait_for_metric(
        &metrics,
        "conclave_relay_turn_tcp_limited_total{reason=\"per_ip\"}",
        1.0,
    )
    .await;
    drop(held);
}

/// A connection to a TLS port not shared with libp2p that does not open with TLS is closed
/// and counted as malformed.
#[tokio::test]
async fn plain_bytes_on_an_unshared_tls_port_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config();
    let metrics = Arc::new(Metrics::new());
    let server = TurnServer::start(&config, dir.path(), Allowlist::Open, Arc::clone(&metrics))
        .await
        .unwrap();
    assert!(server.take_libp2p_connections().is_none());
    let mut stream = tokio::net::TcpStream::connect(server.tls_addr().unwrap())
        .await
        .unwrap();
    stream.write_all(b"\x13/multistream/1.0.0\n").await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    wait_for_metric(
        &metrics,
        "conclave_relay_turn_malformed_total{transport=\"tls\"}",
        1.0,
    )
    .await;
}

#[test]
fn secret_file_is_created_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join(SECRET_FILE);
    let first = load_or_create_secret(&path).unwrap();
    let again = load_or_create_secret(&path).unwrap();
    assert_eq!(first.bytes(), again.bytes());
    assert_eq!(first.bytes().len(), 64);
    assert_eq!(format!("{first:?}"), "Secret(..)");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
