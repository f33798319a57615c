//! The relay's STUN/TURN server with a standard, independent TURN client: coturn's
//! `turnutils_uclient` (Debian package `coturn`), on loopback only.
//!
//! - REST-API credentials derived from the relay's secret allocate and relay, over UDP, TCP
//!   and TLS, and the traffic shows in `/metrics`;
//! - wrong and expired credentials are refused and counted; garbage datagrams and TCP
//!   streams are dropped and counted while the relay keeps serving;
//! - an allocation flood from one identity stops at its quota while others are served;
//! - a Conclave client fetches credentials over libp2p (and uses them with the standard
//!   client); an identity off the allowlist is refused with a clear error;
//! - the relay cannot read what it forwards: a capture of everything it received and sent
//!   during a relayed call (conclave-core's WebRTC connections) holds the call's media but
//!   no Opus frame, no SFrame frame, and nothing that opens under the call's SFrame keys.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conclave_core::Config as ClientConfig;
use conclave_core::IceServer;
use conclave_tests::{Proc, bin, relay_with_config};

const LIMIT: Duration = Duration::from_secs(30);

struct Relay {
    proc: Proc,
    dir: PathBuf,
    port: u16,
    /// The TURN-over-TLS port, when the configuration has `[turn.tls]`.
    tls_port: Option<u16>,
    metrics: String,
    addr: String,
}

fn start(dir: &Path, toml: &str) -> Relay {
    let data = dir.join("relay");
    let (proc, listening) = relay_with_config(
        dir,
        toml,
        &[
            "--turn-listen",
            "127.0.0.1:0",
            "--turn-allow-loopback-peers",
        ],
    )
    .unwrap();
    let udp: std::net::SocketAddr = listening["turn_udp"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        listening["turn_tcp"].as_str(),
        Some(udp.to_string().as_str())
    );
    let tls_port = listening["turn_tls"]
        .as_str()
        .map(|a| a.parse::<std::net::SocketAddr>().unwrap().port());
    Relay {
        proc,
        dir: data,
        port: udp.port(),
        tls_port,
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
        self.uclient_at(self.port, args)
    }

    /// Runs `turnutils_uclient` against this relay's `port`.
    fn uclient_at(&self, port: u16, args: &[&str]) -> Output {
        let mut command = Command::new("turnutils_uclient");
        command
            .args(args)
            .args(["-p", &port.to_string(), "127.0.0.1"])
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
    conclave_core::Identity::generate().peer_id().to_string()
}

fn have_uclient() -> bool {
    Command::new("turnutils_uclient")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// coturn's client allocates and relays with REST credentials minted from the relay's
/// secret over UDP (without and with channels), TCP and TLS (the relay's self-signed
/// certificate: the standard client does not verify it; Conclave's clients pin it).
#[test]
fn standard_turn_client_relays_over_udp_tcp_and_tls() {
    assert!(
        have_uclient(),
        "turnutils_uclient missing: apt install coturn (make deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    let relay = start(
        dir.path(),
        "[turn.tls]\nlisten = \"127.0.0.1:0\"\nlibp2p = false\n",
    );
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
    // TLS: the client tries TLS 1.0 and 1.1 first, which the relay refuses (counted).
    let tls_port = relay.tls_port.expect("the relay listens for TLS");
    let output = relay.uclient_at(
        tls_port,
        &[
            "-y", "-t", "-S", "-n", "20", "-m", "2", "-l", "400", "-u", &user, "-W", &secret,
        ],
    );
    assert!(
        output.status.success() && lost_none(&output),
        "TLS: {}",
        describe(&output)
    );
    assert!(relay.metric("conclave_relay_turn_allocations_created_total") >= 8.0);
    let to_peer = relay.metric("conclave_relay_turn_relayed_packets_total{direction=\"to_peer\"}");
    let bytes = relay.metric("conclave_relay_turn_relayed_bytes_total{direction=\"from_peer\"}");
    assert!(to_peer >= 4.0 * 40.0, "{to_peer}");
    assert!(bytes >= 4.0 * 40.0 * 400.0, "{bytes}");
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
        .with_store_key(conclave_core::KeySource::InsecureKeyFile)
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

/// The relay's own loopback address in the capture test: everything to or from it is the
/// relay's traffic, and nothing else (other tests use 127.0.0.1).
const CAPTURE_IP: &str = "127.0.0.87";
/// Frames each side sends in the captured call (6 s).
const CALL_FRAMES: usize = 300;

/// `tcpdump` writing everything to or from `host` on the loopback interface to `file`.
struct Capture {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Capture {
    fn start(file: &Path, host: &str) -> Self {
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "-s", "0", "-n", "-Z", "root", "-w"])
            .arg(file)
            .args(["host", host])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump runs (apt install tcpdump; make deps)");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let capture = Self { child, stderr: rx };
        let line = capture
            .stderr
            .recv_timeout(LIMIT)
            .expect("tcpdump reports that it listens");
        assert!(line.contains("listening on lo"), "tcpdump: {line}");
        capture
    }

    /// Stops the capture (SIGINT, so it finishes the file) and returns its summary lines.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + LIMIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "tcpdump did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut summary = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            summary.push(line);
        }
        summary.join("\n")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One captured UDP datagram.
struct Datagram {
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    payload: Vec<u8>,
}

/// The IPv4/UDP datagrams of a pcap file taken on `lo` (Ethernet framing).
fn udp_datagrams(pcap: &[u8]) -> Vec<Datagram> {
    use std::net::{Ipv4Addr, SocketAddrV4};
    assert!(pcap.len() >= 24, "a pcap file has a header");
    assert_eq!(
        u32::from_le_bytes(pcap[0..4].try_into().unwrap()),
        0xa1b2_c3d4,
        "little-endian pcap with microseconds"
    );
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "Ethernet link type"
    );
    let u16_at = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let mut datagrams = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let captured = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let original = u32::from_le_bytes(pcap[at + 12..at + 16].try_into().unwrap()) as usize;
        assert_eq!(captured, original, "packets are captured whole");
        let frame = &pcap[at + 16..at + 16 + captured];
        at += 16 + captured;
        // Ethernet header, then IPv4 carrying UDP.
        if frame.len() < 14 + 20 || u16_at(frame, 12) != 0x0800 {
            continue;
        }
        let ip = &frame[14..];
        let header = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 || ip.len() < header + 8 {
            continue;
        }
        let address = |i: usize| Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]);
        let udp = &ip[header..];
        datagrams.push(Datagram {
            src: SocketAddrV4::new(address(12), u16_at(udp, 0)),
            dst: SocketAddrV4::new(address(16), u16_at(udp, 2)),
            payload: udp[8..].to_vec(),
        });
    }
    datagrams
}

/// Whether any of `needles` (each at least 16 bytes) occurs in `haystack`.
fn find_any(haystack: &[u8], needles: &[Vec<u8>]) -> Option<usize> {
    let prefixes: std::collections::HashMap<&[u8], Vec<usize>> =
        needles
            .iter()
            .enumerate()
            .fold(std::collections::HashMap::new(), |mut map, (i, n)| {
                map.entry(&n[..16]).or_insert_with(Vec::new).push(i);
                map
            });
    haystack.windows(16).enumerate().find_map(|(at, window)| {
        prefixes
            .get(window)?
            .iter()
            .any(|&i| haystack[at..].starts_with(&needles[i]))
            .then_some(at)
    })
}

/// Tries to open every window of `payload` whose length is one of `lengths` as an SFrame
/// frame; returns the first (offset, length) that opens.
fn opens_anywhere(
    opener: &mut conclave_core::media::crypto::keyring::Opener,
    now: Instant,
    payload: &[u8],
    lengths: &std::collections::BTreeSet<usize>,
) -> Option<(usize, usize)> {
    for start in 0..payload.len() {
        for &len in lengths.range(..=payload.len() - start) {
            if opener.open(now, &payload[start..start + len]).is_ok() {
                return Some((start, len));
            }
        }
    }
    None
}

/// A varied test signal (a sweep with a little noise), so that every Opus frame differs.
fn speech_like(frame_index: usize, seed: &mut u32) -> conclave_core::media::audio::Frame {
    use conclave_core::media::audio::{FRAME_SAMPLES, SAMPLE_RATE};
    let mut frame = [0i16; FRAME_SAMPLES];
    for (i, sample) in frame.iter_mut().enumerate() {
        let t = (frame_index * FRAME_SAMPLES + i) as f64 / f64::from(SAMPLE_RATE);
        let hz = 200.0 + 300.0 * (t * 0.7).sin().abs() * 4.0;
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        let noise = f64::from(*seed % 2001) - 1000.0;
        *sample = ((std::f64::consts::TAU * hz * t).sin() * 9000.0 + noise) as i16;
    }
    frame
}

/// The relay never holds media keys, so it must not be able to read media. A real call:
/// two WebRTC connections of conclave-core (ICE, DTLS-SRTP) in relay-only mode, so every
/// packet crosses the relay's TURN server, each side sending SFrame-sealed Opus frames (the
/// media actor's pipeline: Opus → SFrame under an MLS-style epoch secret → RTP); tcpdump
/// records everything the relay receives and sends meanwhile. The capture must hold the
/// call (client → relay, relay → relay between the two allocations, relay → client, each
/// at least as many media packets as frames were sent), and still contain none of the Opus
/// frames (SFrame is applied), none of the SFrame frames (DTLS-SRTP is applied on top), and
/// no window at any offset that opens under the call's SFrame keys. The same search finds
/// a frame planted into a captured packet, so it is not blind.
#[test]
fn the_relay_forwards_a_call_it_cannot_read() {
    use conclave_core::group::media_keys::sender_base_key;
    use conclave_core::media::audio::codec::Encoder;
    use conclave_core::media::crypto::keyring::Opener;
    use conclave_core::media::crypto::sframe::Sealer;
    use conclave_core::media::transport::IceServer as PeerIceServer;
    use conclave_core::media::transport::peer::{MediaPeer, PeerConfig, PeerEvent};
    use conclave_core::media::{ConnectionState, MediaPath};

    assert!(
        Command::new("tcpdump")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tcpdump missing: apt install tcpdump (make deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let mut command = Command::new(bin("conclave-relay"));
    command.args(["--json", "--data-dir"]).arg(&data).args([
        "--listen",
        &format!("/ip4/{CAPTURE_IP}/tcp/0"),
        "--turn-listen",
        &format!("{CAPTURE_IP}:0"),
        "--turn-allow-loopback-peers",
        "--metrics-listen",
        &format!("{CAPTURE_IP}:0"),
    ]);
    let mut relay = Proc::spawn("relay", command, dir.path()).unwrap();
    let listening = relay.wait_event("listening", LIMIT).unwrap();
    let turn: std::net::SocketAddrV4 = listening["turn_udp"].as_str().unwrap().parse().unwrap();
    let secret = std::fs::read_to_string(data.join("turn.secret")).unwrap();
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let server = |who: &str| {
        let username = format!("{expires}:{who}");
        PeerIceServer {
            urls: vec![format!("turn:{turn}?transport=udp")],
            credential: conclave_relay::access::password_for(secret.trim().as_bytes(), &username),
            username,
            tls_pin: None,
        }
    };

    let pcap = dir.path().join("relay.pcap");
    let capture = Capture::start(&pcap, CAPTURE_IP);

    // The call's keys: one epoch secret, a sealer per member (leaves 0 and 1).
    let epoch_secret = [0x5au8; 32];
    let epoch = 7;
    let start = Instant::now();
    let mut opener = Opener::default();
    opener.install(start, epoch, epoch_secret);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (opus_frames, sealed_frames, received, paths) = runtime.block_on(async {
        let config = |who: &str| PeerConfig {
            udp_addrs: vec!["127.0.0.1:0".to_owned()],
            ice_servers: vec![server(who)],
            relay_only: true,
        };
        let (a, mut a_events) = MediaPeer::new(start, &config(&peer_id())).await.unwrap();
        let (b, mut b_events) = MediaPeer::new(start, &config(&peer_id())).await.unwrap();
        let offer = a.create_offer().await.unwrap();
        let answer = b.accept_offer(offer).await.unwrap();
        a.accept_answer(answer, Duration::ZERO).await.unwrap();
        // Each side's received payloads, collected while the call runs.
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let collect = |mut events: tokio::sync::mpsc::Receiver<PeerEvent>| {
            let mut done = done_rx.clone();
            tokio::spawn(async move {
                let mut frames = Vec::new();
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Some(PeerEvent::Frame { payload, .. }) => frames.push(payload),
                            Some(_) => {}
                            None => break,
                        },
                        _ = done.changed() => break,
                    }
                }
                frames
            })
        };
        // Wait for both sides to connect (relayed pairs wait RELAY_ACCEPTANCE_MIN_WAIT).
        let connected = tokio::time::timeout(Duration::from_secs(30), async {
            let mut ok = [false, false];
            while !(ok[0] && ok[1]) {
                let connected = PeerEvent::State(ConnectionState::Connected);
                tokio::select! {
                    Some(event) = a_events.recv() => ok[0] |= event == connected,
                    Some(event) = b_events.recv() => ok[1] |= event == connected,
                    else => break,
                }
            }
        })
        .await;
        assert!(connected.is_ok(), "the relayed call connects within 30 s");
        let (a_rx, b_rx) = (collect(a_events), collect(b_events));
        let paths = (
            a.path(Instant::now()).await.map(|(p, _)| p),
            b.path(Instant::now()).await.map(|(p, _)| p),
        );

        let mut sealers = [Sealer::new(0), Sealer::new(1)];
        for (leaf, sealer) in sealers.iter_mut().enumerate() {
            let leaf = leaf as u32;
            sealer
                .install(epoch, leaf, &sender_base_key(&epoch_secret, leaf))
                .unwrap();
        }
        let mut encoders = [Encoder::new().unwrap(), Encoder::new().unwrap()];
        let (mut opus_frames, mut sealed_frames) = (Vec::new(), Vec::new());
        let mut seed = 0x2545_f491_u32;
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for i in 0..CALL_FRAMES {
            ticker.tick().await;
            for (side, peer) in [&a, &b].into_iter().enumerate() {
                let opus = encoders[side]
                    .encode(&speech_like(i + side * 7, &mut seed))
                    .unwrap();
                let sealed = sealers[side].seal(&opus).unwrap();
                peer.send(Instant::now(), sealed.clone()).await.unwrap();
                opus_frames.push(opus);
                sealed_frames.push(sealed);
            }
        }
        // Whatever is still in flight arrives within a second on loopback.
        tokio::time::sleep(Duration::from_secs(1)).await;
        done_tx.send(true).unwrap();
        let (a_rx, b_rx) = (a_rx.await.unwrap(), b_rx.await.unwrap());
        a.close().await.unwrap();
        b.close().await.unwrap();
        (opus_frames, sealed_frames, [a_rx, b_rx], paths)
    });
    let summary = capture.stop();
    drop(relay);

    // The call happened, through the relay, and its frames open with the call's keys.
    assert_eq!(paths, (Some(MediaPath::Relayed), Some(MediaPath::Relayed)));
    for (side, frames) in received.iter().enumerate() {
        eprintln!(
            "side {side} received {} of {CALL_FRAMES} frames",
            frames.len()
        );
        assert!(
            frames.len() >= CALL_FRAMES * 9 / 10,
            "side {side} received {} of {CALL_FRAMES} frames",
            frames.len()
        );
        for frame in frames {
            let opened = opener.open(start, frame).expect("received frames open");
            assert_eq!(opened.sender as usize, 1 - side);
            assert!(opus_frames.contains(&opened.payload));
        }
    }

    // The capture holds the call: every hop of the relay carried its media.
    assert!(
        summary.lines().any(|l| l == "0 packets dropped by kernel"),
        "tcpdump: {summary}"
    );
    let bytes = std::fs::read(&pcap).unwrap();
    let datagrams = udp_datagrams(&bytes);
    let relay_ip = *turn.ip();
    // TURN ChannelData (first byte 0x40..0x7f) or a Send / Data indication (0x0016 / 0x0017).
    let carries_media = |payload: &[u8], indication: u8| {
        payload.first().is_some_and(|b| (0x40..0x80).contains(b))
            || payload.get(..2) == Some(&[0x00, indication][..])
    };
    let is_media_to_relay =
        |d: &&Datagram| d.dst == turn && d.src.ip() != &relay_ip && carries_media(&d.payload, 0x16);
    let is_media_from_relay =
        |d: &&Datagram| d.src == turn && d.dst.ip() != &relay_ip && carries_media(&d.payload, 0x17);
    // Between the two allocations: RTP (version 2) as the peers sent it, SRTP-protected.
    let is_relay_to_relay = |d: &&Datagram| {
        d.src.ip() == &relay_ip
            && d.dst.ip() == &relay_ip
            && d.src != turn
            && d.dst != turn
            && d.payload.len() > 12
            && d.payload[0] >> 6 == 2
    };
    let uplink = datagrams.iter().filter(is_media_to_relay).count();
    let across = datagrams.iter().filter(is_relay_to_relay).count();
    let downlink = datagrams.iter().filter(is_media_from_relay).count();
    let across_bytes: usize = datagrams
        .iter()
        .filter(is_relay_to_relay)
        .map(|d| d.payload.len())
        .sum();
    eprintln!(
        "capture: {} datagrams, media {uplink} to the relay, {across} ({across_bytes} bytes) \
         between its allocations, {downlink} from it",
        datagrams.len()
    );
    let sent = sealed_frames.len();
    for (hop, count) in [
        ("uplink", uplink),
        ("across", across),
        ("downlink", downlink),
    ] {
        assert!(
            count >= sent * 9 / 10,
            "{hop}: {count} media packets for {sent} frames"
        );
    }
    let sealed_bytes: usize = sealed_frames.iter().map(Vec::len).sum();
    assert!(
        across_bytes > sealed_bytes,
        "{across_bytes} bytes for {sealed_bytes}"
    );

    // None of it is readable: no Opus frame, no SFrame frame, nothing that opens.
    let searchable: Vec<Vec<u8>> = opus_frames
        .iter()
        .filter(|f| f.len() >= 16)
        .cloned()
        .collect();
    assert!(
        searchable.len() >= opus_frames.len() * 9 / 10,
        "the Opus frames are long enough to search for"
    );
    assert_eq!(
        find_any(&bytes, &searchable),
        None,
        "an Opus frame in the clear"
    );
    assert_eq!(
        find_any(&bytes, &sealed_frames),
        None,
        "an SFrame frame without SRTP"
    );
    let lengths: std::collections::BTreeSet<usize> = sealed_frames.iter().map(Vec::len).collect();
    let mut scanner = Opener::default();
    scanner.install(start, epoch, epoch_secret);
    for datagram in &datagrams {
        assert_eq!(
            opens_anywhere(&mut scanner, start, &datagram.payload, &lengths),
            None,
            "a captured datagram {} → {} opens",
            datagram.src,
            datagram.dst
        );
    }
    // Not blind: a frame planted in a captured datagram is found by both searches.
    let carrier = datagrams.iter().find(|d| is_relay_to_relay(d)).unwrap();
    let planted_frame = &sealed_frames[sent / 2];
    let mut planted = carrier.payload.clone();
    planted.splice(13..13, planted_frame.iter().copied());
    assert_eq!(
        find_any(&planted, std::slice::from_ref(planted_frame)),
        Some(13)
    );
    let mut control = Opener::default();
    control.install(start, epoch, epoch_secret);
    assert_eq!(
        opens_anywhere(&mut control, start, &planted, &lengths),
        Some((13, planted_frame.len()))
    );
}
