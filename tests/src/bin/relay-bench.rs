//! The TURN relay bench: `conclave-relay` against coturn's `turnserver`, same load, same run.
//!
//! For each server (started here on loopback with equivalent settings: REST-API secret,
//! realm `conclave`, loopback peers allowed, no TLS), `streams` TURN clients (the `turn`
//! crate's standard client) each allocate a relayed address and send `rate` datagrams per
//! second of `size` bytes through it to a UDP echo peer; the echo comes back through the
//! relay. Each datagram carries a sequence number and its send time, so the bench measures
//! loss and round-trip time. The same streams sent directly to the echo peers give the
//! baseline; "added latency" is relay RTT minus direct RTT at the same percentile. The
//! relay's CPU is read from `/proc/<pid>/stat` over the measured window.
//!
//! A stream is one relayed audio call leg pair: both directions cross the relay once, like
//! a two-person call with one side behind TURN (Opus 20 ms: 50 packets/s, ~200 bytes).
//!
//! ```text
//! cargo build --release --workspace --bins
//! ./target/release/relay-bench [--seconds S] [--size BYTES] [--steps STREAMSxRATE,...]
//! ```
//! Each step runs against a fresh server process. Output: one line per server and step,
//! then a JSON summary on the last line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const SECRET: &str = "relay-bench-secret";
const REALM: &str = "conclave";

struct Args {
    seconds: u64,
    size: usize,
    steps: Vec<(usize, u64)>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        seconds: 5,
        size: 200,
        // 1 to 400 relayed audio calls (the first table of docs/performance.md).
        steps: vec![(1, 50), (150, 50), (300, 50), (400, 50)],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().context("every flag takes a value")?;
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse()?,
            "--size" => args.size = value.parse()?,
            "--steps" => {
                args.steps = value
                    .split(',')
                    .map(|s| {
                        let (n, r) = s.split_once('x').context("steps are STREAMSxRATE")?;
                        Ok((n.parse()?, r.parse()?))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// A server under test.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

fn start_conclave() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    std::fs::write(dir.path().join("turn.secret"), SECRET)?;
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[turn]\nlisten = \"127.0.0.1:{port}\"\nallow_loopback_peers = true\n\
             bandwidth_per_identity = 0\nmax_allocations_per_identity = 1000\n\
             relay_ports = \"40000-44999\"\n[metrics]\nenabled = false\n"
        ),
    )?;
    let child = Command::new(conclave_tests::bin("conclave-relay"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start conclave-relay")?;
    Ok(Server {
        name: "conclave-relay",
        child,
        port,
        _dir: dir,
    })
}

fn start_coturn() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            &format!("--realm={REALM}"),
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",
            "--min-port=45000",
            "--max-port=49999",
            "--no-tcp-relay",
            "--log-file=stdout",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start turnserver (apt install coturn)")?;
    Ok(Server {
        name: "coturn",
        child,
        port,
        _dir: dir,
    })
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" closing the command name: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn credentials() -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let peer = conclave_core::Identity::generate().peer_id();
    let username = format!("{expiry}:{peer}");
    let password = conclave_relay::access::password_for(SECRET.as_bytes(), &username);
    (username, password)
}

/// One stream's results.
#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    rtts_us: Vec<u64>,
}

/// Sends `rate` datagrams/s for `duration` through `conn` to `peer`, collecting echoes.
async fn drive(
    conn: Arc<dyn Conn + Send + Sync>,
    peer: SocketAddr,
    rate: u64,
    size: usize,
    duration: Duration,
    epoch: Instant,
) -> Tally {
    let receiver = {
        let conn = Arc::clone(&conn);
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut buf = vec![0u8; 2048];
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_secs(2), conn.recv_from(&mut buf)).await
            {
                if n < 16 {
                    continue;
                }
                let sent_us = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
                let now_us = epoch.elapsed().as_micros() as u64;
                tally.received += 1;
                tally.rtts_us.push(now_us.saturating_sub(sent_us));
            }
            tally
        })
    };
    let mut payload = vec![0u8; size.max(16)];
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        payload[..8].copy_from_slice(&sent.to_be_bytes());
        payload[8..16].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_be_bytes());
        if conn.send_to(&payload, peer).await.is_ok() {
            sent += 1;
        }
    }
    let mut tally = receiver.await.unwrap_or_default();
    tally.sent = sent;
    tally
}

async fn echo_peer() -> anyhow::Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    Ok(addr)
}

struct StepResult {
    sent: u64,
    received: u64,
    p50_us: u64,
    p99_us: u64,
    cpu_percent: f64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs one step: `streams` streams at `rate`, through `server` (or direct when `None`).
async fn step(
    server: Option<&Server>,
    streams: usize,
    rate: u64,
    size: usize,
    seconds: u64,
) -> anyhow::Result<StepResult> {
    let mut conns: Vec<(Arc<dyn Conn + Send + Sync>, SocketAddr)> = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..streams {
        let peer = echo_peer().await?;
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let conn: Arc<dyn Conn + Send + Sync> = match server {
            None => socket,
            Some(server) => {
                let (client, relayed) = allocate(server, socket).await?;
                clients.push(client);
                relayed
            }
        };
        conns.push((conn, peer));
    }
    // Warm-up: permissions and channel bindings are set up by the first packets.
    let epoch = Instant::now();
    let warm: Vec<_> = conns
        .iter()
        .map(|(c, p)| {
            drive(
                Arc::clone(c),
                *p,
                10,
                size,
                Duration::from_millis(500),
                epoch,
            )
        })
        .collect();
    futures_join(warm).await;

    let pid = server.map(|s| s.child.id());
    let ticks_before = pid.map(cpu_ticks).transpose()?;
    let started = Instant::now();
    let runs: Vec<_> = conns
        .iter()
        .map(|(c, p)| {
            drive(
                Arc::clone(c),
                *p,
                rate,
                size,
                Duration::from_secs(seconds),
                epoch,
            )
        })
        .collect();
    let tallies = futures_join(runs).await;
    let wall = started.elapsed().as_secs_f64();
    let ticks_after = pid.map(cpu_ticks).transpose()?;
    let cpu_percent = match (ticks_before, ticks_after) {
        (Some(b), Some(a)) => (a - b) as f64 / clock_ticks() as f64 / wall * 100.0,
        _ => 0.0,
    };
    // Delete the allocations (refresh with lifetime 0), so a reused client port never meets
    // a stale allocation (437) in the next step.
    if server.is_some() {
        for (conn, _) in &conns {
            let _ = conn.close().await;
        }
    }
    for client in clients {
        let _ = client.close().await;
    }
    let mut rtts: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.rtts_us.iter().copied())
        .collect();
    rtts.sort_unstable();
    Ok(StepResult {
        sent: tallies.iter().map(|t| t.sent).sum(),
        received: tallies.iter().map(|t| t.received).sum(),
        p50_us: percentile(&rtts, 0.50),
        p99_us: percentile(&rtts, 0.99),
        cpu_percent,
    })
}

/// A TURN client of `server` on `socket` with one allocation; the client and its relayed
/// connection.
async fn allocate(
    server: &Server,
    socket: Arc<UdpSocket>,
) -> anyhow::Result<(Client, Arc<dyn Conn + Send + Sync>)> {
    let (username, password) = credentials();
    let addr = format!("127.0.0.1:{}", server.port);
    let client = Client::new(ClientConfig {
        stun_serv_addr: addr.clone(),
        turn_serv_addr: addr,
        username,
        password,
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: socket,
        vnet: None,
    })
    .await?;
    client.listen().await?;
    let relayed = client.allocate().await.context("allocation failed")?;
    Ok((client, Arc::new(relayed)))
}

async fn futures_join<F: std::future::Future<Output = Tally> + Send + 'static>(
    futures: Vec<F>,
) -> Vec<Tally> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap_or_default());
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut summary = Vec::new();
    let mut direct: HashMap<(usize, u64), StepResult> = HashMap::new();
    for &(streams, rate) in &args.steps {
        direct.insert(
            (streams, rate),
            step(None, streams, rate, args.size, args.seconds).await?,
        );
    }
    for start in [
        start_conclave as fn() -> anyhow::Result<Server>,
        start_coturn,
    ] {
        for &(streams, rate) in &args.steps {
            // A fresh server per step: no state carried over between loads.
            let server = start()?;
            tokio::time::sleep(Duration::from_millis(700)).await;
            let r = match step(Some(&server), streams, rate, args.size, args.seconds).await {
                Ok(r) => r,
                Err(err) => {
                    println!(
                        "{:<15} {streams:>4} streams x {rate:>4}/s: failed: {err:#}",
                        server.name
                    );
                    summary.push(json!({ "server": server.name, "streams": streams, "rate": rate, "error": format!("{err:#}") }));
                    continue;
                }
            };
            let base = &direct[&(streams, rate)];
            let relayed_pps = 2.0 * r.received as f64 / args.seconds as f64;
            let mbit = relayed_pps * args.size as f64 * 8.0 / 1e6;
            let loss = 1.0 - r.received as f64 / r.sent.max(1) as f64;
            let added_p50 = r.p50_us as i64 - base.p50_us as i64;
            let added_p99 = r.p99_us as i64 - base.p99_us as i64;
            println!(
                "{:<15} {streams:>4} streams x {rate:>4}/s: relayed {relayed_pps:>8.0} pkt/s {mbit:>6.1} Mbit/s, loss {:>6.3}%, RTT p50 {} us p99 {} us (added {added_p50} / {added_p99} us), relay CPU {:.1}% ({:.2}% per stream)",
                server.name,
                loss * 100.0,
                r.p50_us,
                r.p99_us,
                r.cpu_percent,
                r.cpu_percent / streams as f64,
            );
            summary.push(json!({
                "server": server.name, "streams": streams, "rate": rate, "size": args.size,
                "relayed_pps": relayed_pps, "mbit_s": mbit, "loss": loss,
                "rtt_p50_us": r.p50_us, "rtt_p99_us": r.p99_us,
                "added_p50_us": added_p50, "added_p99_us": added_p99,
                "cpu_percent": r.cpu_percent,
            }));
        }
    }
    println!("{}", json!({ "relay_bench": summary }));
    Ok(())
}
