//! The relay's STUN/TURN server with a standard, independent TURN client: coturn's
//! `turnutils_uclient` (Debian package `coturn`), on loopback only.
//!
//! - REST-API credentials derived from the relay's secret allocate and relay, over UDP and
//!   over TCP, and the traffic shows in `/metrics`;
//! - wrong and expired credentials are refused and counted; garbage datagrams and TCP
//!   streams are dropped and counted while the relay keeps serving;
//! - an allocation flood from one identity stops at its quota while others are served;
//! - a Conclave client fetches credentials over libp2p (and uses them with the standard
//!   client); an identity off the allowlist is refused with a clear error.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conclave_core::Config as ClientConfig;
use conclave_core::net::turn::IceServer;
use conclave_tests::{Proc, bin};

const LIMIT: Duration = Duration::from_secs(15);

struct Relay {
    proc: Proc,
    dir: PathBuf,
    port: u16,
    metrics: String,
    addr: String,
}

fn start(dir: &Path, toml: &str) -> Relay {
    let data = dir.join("relay");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(&config, toml).unwrap();
    let mut command = Command::new(bin("conclave-relay"));
    command
        .args(["--json", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--turn-listen",
            "127.0.0.1:0",
            "--turn-allow-loopback-peers",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
    let mut proc = Proc::spawn("relay", command, dir).unwrap();
    let listening = proc.wait_event("listening", LIMIT).unwrap();
    let udp: std::net::SocketAddr = listening["turn_udp"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        listening["turn_tcp"].as_str(),
        Some(udp.to_string().as_str())
    );
    Relay {
        proc,
        dir: data,
        port: udp.port(),
        metrics: listening["metrics"].as_str().unwrap().to_owned(),
        addr: listening["addrs"][0].as_str().unwrap().to_owned(),
    }
}

impl Relay {
    fn secret(&self) -> String {
        std::fs::read_to_string(self.dir.join("turn.secret"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `GET path` on the metrics endpoint.
    fn http(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(&self.metrics).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    /// The value of one metric line (`name{labels}`), 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let text = self.http("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Runs `turnutils_uclient` against this relay.
    fn uclient(&self, args: &[&str]) -> Output {
        let mut command = Command::new("turnutils_uclient");
        command
            .args(args)
            .args(["-p", &self.port.to_string(), "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_bounded(command, Duration::from_secs(30))
    }
}

fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .spawn()
        .expect("turnutils_uclient runs (apt install coturn)");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn lost_none(output: &Output) -> bool {
    String::from_utf8_lossy(&output.stdout).contains("Total lost packets 0 (")
}

fn describe(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = stdout.lines().rev().take(8).collect();
    format!("{:?}: {}", output.status, tail.join(" | "))
}

fn peer_id() -> String {
    // Any well-formed identity: the relay is open in these tests.
    conclave_core::identity::Identity::generate()
        .peer_id()
        .to_string()
}

fn have_uclient() -> bool {
    Command::new("turnutils_uclient")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn standard_turn_client_relays_over_udp_and_tcp() {
    assert!(
        have_uclient(),
        "turnutils_uclient missing: apt install coturn (make deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), "");
    let (user, secret) = (peer_id(), relay.secret());
    // Two clients relaying to each other through their allocations, channels off and on.
    for extra in [&["-c"][..], &[][..], &["-t"][..]] {
        let mut args = vec![
            "-y", "-n", "20", "-m", "2", "-l", "400", "-u", &user, "-W", &secret,
        ];
        args.extend_from_slice(extra);
        let output = relay.uclient(&args);
        assert!(
            output.status.success() && lost_none(&output),
            "{extra:?}: {}",
            describe(&output)
        );
    }
    assert!(relay.metric("conclave_relay_turn_allocations_created_total") >= 6.0);
    let to_peer = relay.metric("conclave_relay_turn_relayed_packets_total{direction=\"to_peer\"}");
    let bytes = relay.metric("conclave_relay_turn_relayed_bytes_total{direction=\"from_peer\"}");
    assert!(to_peer >= 3.0 * 40.0, "{to_peer}");
    assert!(bytes >= 3.0 * 40.0 * 400.0, "{bytes}");
    assert!(relay.http("/healthz").contains("200 OK"));
}

#[test]
fn bad_credentials_and_garbage_are_refused_counted_and_survived() {
    assert!(
        have_uclient(),
        "turnutils_uclient missing: apt install coturn (make deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), "");
    let (user, secret) = (peer_id(), relay.secret());

    let wrong = relay.uclient(&[
        "-y",
        "-c",
        "-n",
        "2",
        "-m",
        "1",
        "-u",
        &user,
        "-W",
        "not-the-secret",
    ]);
    assert!(!wrong.status.success(), "{}", describe(&wrong));
    assert!(
        relay.metric("conclave_relay_turn_refused_credentials_total{reason=\"wrong_password\"}")
            >= 1.0
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let username = format!("{}:{user}", now - 60);
    let password = conclave_relay::access::password_for(secret.as_bytes(), &username);
    let expired = relay.uclient(&[
        "-y", "-c", "-n", "2", "-m", "1", "-u", &username, "-w", &password,
    ]);
    assert!(!expired.status.success(), "{}", describe(&expired));
    assert!(
        relay.metric("conclave_relay_turn_refused_credentials_total{reason=\"expired\"}") >= 1.0
    );

    // Garbage: random datagrams, a truncated STUN header, a TCP stream of nonsense.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{}", relay.port);
    let mut seed = 0x9e37_79b9_u32;
    for i in 0..500u32 {
        let len = 1 + (i as usize * 7) % 600;
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed & 0xff) as u8 | 0x80
            })
            .collect();
        socket.send_to(&datagram, &target).unwrap();
        if i % 20 == 0 {
            // Paced, so the kernel's receive buffer never overflows.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    socket
        .send_to(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42], &target)
        .unwrap();
    let mut tcp = TcpStream::connect(&target).unwrap();
    tcp.write_all(&[0xffu8; 64]).unwrap();
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(
        tcp.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "the relay closes a garbage stream"
    );
    let deadline = Instant::now() + LIMIT;
    while relay.metric("conclave_relay_turn_malformed_total{transport=\"udp\"}") < 501.0 {
        assert!(
            Instant::now() < deadline,
            "garbage not counted:\n{}",
            relay.http("/metrics")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(relay.metric("conclave_relay_turn_malformed_total{transport=\"tcp\"}") >= 1.0);

    let good = relay.uclient(&[
        "-y", "-c", "-n", "10", "-m", "2", "-u", &user, "-W", &secret,
    ]);
    assert!(
        good.status.success() && lost_none(&good),
        "{}",
        describe(&good)
    );
    assert!(relay.http("/healthz").contains("200 OK"));
    drop(relay.proc);
}

#[test]
fn allocation_flood_from_one_identity_stops_at_the_quota() {
    assert!(
        have_uclient(),
        "turnutils_uclient missing: apt install coturn (make deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), "[turn]\nmax_allocations_per_identity = 4\n");
    let (greedy, secret) = (peer_id(), relay.secret());
    // Ten client pairs of one identity: at most four allocations, the rest refused (486).
    let flood = relay.uclient(&[
        "-y", "-c", "-n", "50", "-m", "10", "-u", &greedy, "-W", &secret,
    ]);
    assert!(!flood.status.success(), "{}", describe(&flood));
    assert!(
        String::from_utf8_lossy(&flood.stdout).contains("486"),
        "{}",
        describe(&flood)
    );
    assert!(relay.metric("conclave_relay_turn_refused_allocations_total") >= 1.0);
    // Slots free again as the flood's clients give up, so only the current count is bounded.
    assert!(relay.metric("conclave_relay_turn_allocations") <= 4.0);
    // Another identity is served meanwhile (uclient -y -m 1 takes three allocations).
    let other = peer_id();
    let output = relay.uclient(&[
        "-y", "-c", "-n", "10", "-m", "1", "-u", &other, "-W", &secret,
    ]);
    assert!(
        output.status.success() && lost_none(&output),
        "{}",
        describe(&output)
    );
}

fn identity_of(dir: &Path) -> String {
    let mut id = Proc::conclave("id", dir, &["id"]).unwrap();
    let event = id.wait_event("identity", LIMIT).unwrap();
    event["peer_id"].as_str().unwrap().to_owned()
}

async fn fetch(data_dir: &Path, relay: &str) -> Result<Vec<IceServer>, conclave_core::Error> {
    let config = ClientConfig::new(data_dir)
        .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
        .with_relays(vec![relay.parse().unwrap()])
        .with_mdns(false);
    let (client, _events) = conclave_core::Client::start(config).await?;
    let result = tokio::time::timeout(LIMIT, client.ice_servers())
        .await
        .expect("credential fetch is bounded");
    client.shutdown();
    result
}

#[test]
fn credentials_over_libp2p_only_for_allowed_identities() {
    assert!(
        have_uclient(),
        "turnutils_uclient missing: apt install coturn (make deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (alice_dir, mallory_dir) = (dir.path().join("alice"), dir.path().join("mallory"));
    let alice = identity_of(&alice_dir);
    let relay = start(
        dir.path(),
        &format!("[access]\nopen = false\nallow = [\"{alice}\"]\n"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let servers = runtime.block_on(fetch(&alice_dir, &relay.addr)).unwrap();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let server = &servers[0];
    let port = relay.port;
    assert_eq!(
        server.urls,
        vec![
            format!("stun:127.0.0.1:{port}"),
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp"),
        ]
    );
    assert!(
        server.username.ends_with(&format!(":{alice}")),
        "{}",
        server.username
    );
    let output = relay.uclient(&[
        "-y",
        "-c",
        "-n",
        "10",
        "-m",
        "2",
        "-u",
        &server.username,
        "-w",
        &server.credential,
    ]);
    assert!(
        output.status.success() && lost_none(&output),
        "{}",
        describe(&output)
    );

    identity_of(&mallory_dir);
    let refused = runtime
        .block_on(fetch(&mallory_dir, &relay.addr))
        .unwrap_err();
    assert!(
        matches!(refused, conclave_core::Error::TurnRefused { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("not on the relay's allowlist"),
        "{refused}"
    );
    assert_eq!(relay.metric("conclave_relay_credentials_issued_total"), 1.0);
    assert_eq!(
        relay.metric("conclave_relay_credentials_refused_total"),
        1.0
    );
}
