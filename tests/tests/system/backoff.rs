//! Back-off on refused circuit reservations (issue 11), with real processes on loopback.
//!
//! - A relay with `max_reservations = 1` and five clients: one holds the reservation, the
//!   other four are refused and come back with exponential back-off and jitter. The relay's
//!   own counters (`conclave_relay_reservation_requests_total`, `…_reservations_refused_total`)
//!   show a bounded number of requests per minute, and when the holder leaves, one of the
//!   others takes the freed place within the in-meeting cap.
//! - A bootstrap peer without circuit relay support (a plain `conclave` client given as
//!   `--relay`): the client asks it for a reservation once, learns that it offers no hop
//!   protocol, and never asks again; its CPU time over the next 20 s is that of an idle
//!   client (measured from `/proc/<pid>/stat` against the bootstrap peer itself).
//!
//! Measured without the back-off (the driver of the parent commit, same tests): the full
//! relay received 159,042 reservation requests in the minute (44 with it), and the client
//! with a plain bootstrap peer made 70,945 attempts and used 14.3 s of CPU in 20 s (the
//! peer it asked 8.9 s); with it, one attempt and 0.05 s, as much as the idle peer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use conclave_tests::{Proc, bin, loopback_client_args, relay_with_config};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(15);

/// A relay started with a TOML configuration, and its metrics endpoint.
struct Relay {
    proc: Proc,
    addr: String,
    metrics: String,
}

impl Relay {
    fn start(dir: &Path, toml: &str) -> Self {
        let (proc, listening) = relay_with_config(dir, toml, &[]).unwrap();
        Self {
            addr: listening["addrs"][0].as_str().unwrap().to_owned(),
            metrics: listening["metrics"].as_str().unwrap().to_owned(),
            proc,
        }
    }

    /// The value of one metric line (`name{labels}`), 0 if absent.
    fn metric(&self, series: &str) -> u64 {
        let mut stream = TcpStream::connect(&self.metrics).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    fn requests(&self) -> u64 {
        self.metric("conclave_relay_reservation_requests_total")
    }

    fn refused(&self) -> u64 {
        self.metric("conclave_relay_reservations_refused_total")
    }

    fn held(&self) -> u64 {
        self.metric("conclave_relay_reservations")
    }
}

/// `conclave --json … new <args>` with its own `RUST_LOG`.
fn client(dir: &Path, label: &str, log: &str, args: &[&str]) -> Proc {
    let data = dir.join(label);
    let mut command = Command::new(bin("conclave"));
    command
        .args(loopback_client_args(&data, label))
        .arg("new")
        .args(args)
        .env("RUST_LOG", log);
    Proc::spawn(label, command, dir).unwrap()
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // Fields 14 (utime) and 15 (stime), in clock ticks; fields[0] is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The most reservation attempts one refused client can make in `window` with the
/// in-meeting back-off (1 s doubling to a 10 s cap, every wait at least half its nominal
/// value): the first at once, then one per floor of the back-off.
fn most_attempts(window: Duration) -> u64 {
    let mut nominal = Duration::from_secs(1);
    let cap = Duration::from_secs(10);
    let mut elapsed = Duration::ZERO;
    let mut attempts = 1;
    loop {
        elapsed += nominal / 2;
        if elapsed > window {
            return attempts;
        }
        attempts += 1;
        nominal = (nominal * 2).min(cap);
    }
}

/// A relay with `max_reservations = 1` (TURN off) and five clients hosting a meeting each
/// with it as their relay, all started.
fn full_relay(dir: &Path) -> (Relay, Vec<Proc>, Instant) {
    let relay = Relay::start(
        dir,
        "[circuit]\nmax_reservations = 1\n\n[turn]\nenabled = false\n",
    );
    let started = Instant::now();
    let mut clients: Vec<Proc> = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|label| client(dir, label, "info", &["--relay", &relay.addr]))
        .collect();
    for client in &mut clients {
        client.wait_event("invite", LIMIT).unwrap();
    }
    (relay, clients, started)
}

/// Which clients hold a reservation (they log that they are reachable through the relay).
fn holders(clients: &[Proc]) -> Vec<usize> {
    clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.stderr().contains("reachable through a relay"))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_full_relay_gets_a_bounded_number_of_reservation_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, clients, started) = full_relay(dir.path());

    // Half a minute, then another: the relay counts every request it receives.
    let half = Duration::from_secs(30);
    std::thread::sleep(half.saturating_sub(started.elapsed()));
    let first_half = relay.requests();
    std::thread::sleep((half * 2).saturating_sub(started.elapsed()));
    let in_a_minute = relay.requests();
    let refused = relay.refused();
    let elapsed = started.elapsed();
    let second_half = in_a_minute - first_half;
    println!(
        "reservation requests: {first_half} in the first 30 s, {in_a_minute} in {elapsed:.1?} \
         ({second_half} in the second half); refused {refused}; held {}",
        relay.held()
    );
    assert_eq!(relay.held(), 1, "max_reservations = 1 holds");
    assert_eq!(
        holders(&clients).len(),
        1,
        "one client is reachable through the relay"
    );
    assert!(refused >= 4, "the four others were refused: {refused}");
    // One accepted request, and the four refused clients within their back-off.
    let bound = 1 + 4 * most_attempts(elapsed);
    assert!(
        in_a_minute <= bound,
        "{in_a_minute} requests in {elapsed:?} (back-off allows {bound})"
    );
    let second_half_bound = 4 * (most_attempts(half * 2) - most_attempts(half) + 1);
    assert!(
        second_half <= second_half_bound,
        "the rate falls as the back-off grows: {second_half} in the second half \
         (allowed {second_half_bound})"
    );
    for client in &clients {
        let log = client.stderr();
        assert!(
            count(&log, "relay reservation refused") <= 4,
            "{}: refusals are logged at info a few times only",
            client.label
        );
    }
}

#[test]
fn a_freed_reservation_is_taken_within_the_in_meeting_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, mut clients, _) = full_relay(dir.path());
    // Let the refused clients' back-off grow to its cap (10 s in a meeting).
    std::thread::sleep(Duration::from_secs(15));
    let held = holders(&clients);
    assert_eq!(held.len(), 1, "one client holds the reservation");
    let holder = held[0];
    println!(
        "{} holds the reservation; it is killed",
        clients[holder].label
    );
    clients[holder].kill9();
    let left = Instant::now();
    let deadline = left + Duration::from_secs(20);
    let mut taker = None;
    while taker.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        taker = holders(&clients).into_iter().find(|i| *i != holder);
    }
    let taken_after = left.elapsed();
    let taker = taker.unwrap_or_else(|| {
        panic!(
            "nobody took the freed reservation within 20 s{}",
            relay.proc.stderr_tail()
        )
    });
    println!(
        "{} took the place {taken_after:.1?} after the holder was killed",
        clients[taker].label
    );
    // The relay notices the holder's connection closing at once (a killed process's
    // sockets are reset); the next attempt of a refused client comes within the cap.
    assert!(
        taken_after <= Duration::from_secs(12),
        "the freed place waited {taken_after:?}"
    );
    assert_eq!(relay.held(), 1);
}

#[test]
fn a_bootstrap_peer_without_circuit_relay_costs_no_cpu_after_the_first_refusal() {
    let dir = tempfile::tempdir().unwrap();
    // A plain client: a Kademlia node without the circuit relay hop protocol.
    let mut plain = client(dir.path(), "plain", "info", &[]);
    let listening = plain.wait_event("listening", LIMIT).unwrap();
    let bootstrap = listening["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains("/tcp/"))
        .unwrap()
        .to_owned();
    let mut user = client(
        dir.path(),
        "user",
        "info,conclave_core::runtime=debug,conclave_core::net=debug",
        &["--relay", &bootstrap],
    );
    user.wait_event("invite", LIMIT).unwrap();
    // Start-up settles (connection, identify, the one refused reservation).
    user.drain_for(Duration::from_secs(5));

    let window = Duration::from_secs(20);
    let (user_before, plain_before) = (cpu_time(user.pid()), cpu_time(plain.pid()));
    user.drain_for(window);
    plain.drain_for(Duration::ZERO);
    let user_cpu = cpu_time(user.pid()) - user_before;
    let plain_cpu = cpu_time(plain.pid()) - plain_before;
    let log = user.stderr();
    let attempts = count(&log, "reserving a relay circuit");
    println!(
        "over {window:?}: the client used {user_cpu:?} of CPU, the idle bootstrap peer \
         {plain_cpu:?}; reservation attempts in all: {attempts}; log {} bytes",
        log.len()
    );
    assert!(
        log.contains("offers no circuit relay") || log.contains("lists no circuit relay"),
        "the client learnt that the peer is no relay{}",
        user.stderr_tail()
    );
    assert!(
        attempts <= 2,
        "asked for a reservation {attempts} times{}",
        user.stderr_tail()
    );
    // Idle: at most 2.5 % of a core, and no more than the bootstrap peer itself plus
    // 1 % of a core (the storm took ~50 %).
    assert!(user_cpu <= window / 40, "{user_cpu:?} of CPU in {window:?}");
    assert!(
        user_cpu <= plain_cpu + window / 100,
        "{user_cpu:?} of CPU against the idle peer's {plain_cpu:?}"
    );
}
