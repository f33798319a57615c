//! `wan-impair`: one emulated WAN link, a userspace delayer on an NFQUEUE queue.
//!
//! The system tests have no `tc netem` on this kernel, so a netfilter rule hands the packets
//! of one link to a queue (`-j NFQUEUE --queue-num N --queue-bypass`) and this program, bound
//! to that queue in the same network namespace, decides each packet's fate:
//!
//! - it is lost with probability `--loss-pct P` (random loss on the line);
//! - with `--rate-kbps R`, it is serialized behind the packets before it (`len × 8 / R`),
//!   and dropped if it would wait in that queue longer than `--buffer-ms` (tail drop);
//! - it is released (verdict Accept) after a one-way delay `--delay-ms D` plus a uniform
//!   jitter in `[-J, +J]` (`--jitter-ms J`), never before the packet ahead of it: the link
//!   does not reorder.
//!
//! One thread, no busy polling: the queue socket is non-blocking and waited on with epoll
//! until a packet arrives or the next release is due (releases are due in order, so a deque
//! suffices). The `nfq` crate does not expose its socket, so its descriptor is found in
//! `/proc/self/fd` (the one `NETLINK_NETFILTER` socket); should that fail, the loop sleeps
//! at most `--poll-us` (500 µs) between polls instead. Only the first 64 bytes of each
//! packet are copied to userspace (the full length comes with the metadata); the kernel
//! queue holds up to `--max-len` packets (4096) and accepts packets unqueued when it is full
//! (fail-open).
//!
//! Prints `ready` on stdout once bound. Exits on SIGTERM, or when stdin closes with
//! `--exit-on-stdin-eof` (so a harness that dies still takes it down).
//!
//! ```text
//! ip netns exec NS wan-impair --queue 4 --delay-ms 50 --jitter-ms 10 --loss-pct 1 [--rate-kbps 2000]
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, ErrorKind, Write};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use nfq::{Message, Queue, Verdict};

/// Bytes of each packet copied to userspace: none are needed, but a copy shorter than the
/// packet makes the kernel report its full length.
const COPY_RANGE: u16 = 64;
/// Packets received per pass before due releases are handled again.
const RECV_BATCH: usize = 512;
/// The longest wait with nothing to do (how soon a stop request is noticed).
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// `NETLINK_NETFILTER`, the protocol column of `/proc/net/netlink`.
const NETLINK_NETFILTER: &str = "12";

/// Command line.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    queue: u16,
    delay: Duration,
    jitter: Duration,
    /// Loss probability, 0..=1.
    loss: f64,
    rate_kbps: Option<u32>,
    buffer: Duration,
    max_len: u32,
    poll: Duration,
    seed: Option<u64>,
    exit_on_stdin_eof: bool,
}

const USAGE: &str = "usage: wan-impair --queue N [--delay-ms D] [--jitter-ms J] [--loss-pct P] \
[--rate-kbps R] [--buffer-ms B] [--max-len L] [--poll-us U] [--seed S] [--exit-on-stdin-eof]";

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Config> {
    fn millis(value: &str, flag: &str) -> anyhow::Result<Duration> {
        let ms: f64 = value
            .parse()
            .with_context(|| format!("{flag} takes milliseconds, not {value:?}"))?;
        if !ms.is_finite() || ms < 0.0 {
            bail!("{flag} must be a non-negative number of milliseconds");
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
    let mut queue = None;
    let mut config = Config {
        queue: 0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        rate_kbps: None,
        buffer: Duration::from_millis(500),
        max_len: 4096,
        poll: Duration::from_micros(500),
        seed: None,
        exit_on_stdin_eof: false,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "--exit-on-stdin-eof" {
            config.exit_on_stdin_eof = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            bail!("{USAGE}");
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |what: &str| format!("{flag} takes {what}, not {value:?}");
        match flag.as_str() {
            "--queue" => queue = Some(value.parse().with_context(|| number("0..=65535"))?),
            "--delay-ms" => config.delay = millis(&value, &flag)?,
            "--jitter-ms" => config.jitter = millis(&value, &flag)?,
            "--loss-pct" => {
                let pct: f64 = value.parse().with_context(|| number("a percentage"))?;
                if !(0.0..=100.0).contains(&pct) {
                    bail!("--loss-pct must be within 0..=100");
                }
                config.loss = pct / 100.0;
            }
            "--rate-kbps" => {
                let rate: u32 = value.parse().with_context(|| number("kbit/s"))?;
                if rate == 0 {
                    bail!("--rate-kbps must be positive (leave it out for no limit)");
                }
                config.rate_kbps = Some(rate);
            }
            "--buffer-ms" => config.buffer = millis(&value, &flag)?,
            "--max-len" => config.max_len = value.parse().with_context(|| number("packets"))?,
            "--poll-us" => {
                let us: u64 = value.parse().with_context(|| number("microseconds"))?;
                config.poll = Duration::from_micros(us.max(1));
            }
            "--seed" => config.seed = Some(value.parse().with_context(|| number("a u64"))?),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    config.queue = queue.with_context(|| format!("--queue is required\n{USAGE}"))?;
    Ok(config)
}

/// SplitMix64: small, fast, good enough for loss and jitter draws.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The link's timing model, apart from the queue: when each packet leaves, if at all.
#[derive(Debug)]
struct Link {
    delay: Duration,
    jitter: Duration,
    loss: f64,
    rate_kbps: Option<u32>,
    buffer: Duration,
    rng: Rng,
    /// When the serializer is free again (with a rate).
    line_free: Option<Instant>,
    /// Release time of the last packet let through.
    last_release: Option<Instant>,
}

impl Link {
    fn new(config: &Config) -> Self {
        let seed = config.seed.unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        });
        Self {
            delay: config.delay,
            jitter: config.jitter,
            loss: config.loss,
            rate_kbps: config.rate_kbps,
            buffer: config.buffer,
            rng: Rng(seed),
            line_free: None,
            last_release: None,
        }
    }

    /// The release time of a packet of `len` bytes that arrived at `arrival`, or `None` if
    /// the link loses it.
    fn admit(&mut self, arrival: Instant, len: usize) -> Option<Instant> {
        if self.loss > 0.0 && self.rng.unit() < self.loss {
            return None;
        }
        // Serialization: the packet starts once the line is free, and takes len × 8 / rate.
        let sent = match self.rate_kbps {
            Some(kbps) => {
                let start = self.line_free.map_or(arrival, |free| free.max(arrival));
                if start.duration_since(arrival) > self.buffer {
                    return None;
                }
                let bits = len as u64 * 8;
                let done = start + Duration::from_nanos(bits * 1_000_000 / u64::from(kbps));
                self.line_free = Some(done);
                done
            }
            None => arrival,
        };
        // Propagation with jitter, uniform in [delay - jitter, delay + jitter] (at least 0).
        let mut delay = self.delay;
        if !self.jitter.is_zero() {
            let offset = self.jitter.as_secs_f64() * (2.0 * self.rng.unit() - 1.0);
            delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
        }
        // No reordering: never before the packet ahead.
        let release = self
            .last_release
            .map_or(sent + delay, |last| last.max(sent + delay));
        self.last_release = Some(release);
        Some(release)
    }
}

/// The descriptor of this process's only `NETLINK_NETFILTER` socket (the queue's), from
/// `/proc`: the `nfq` crate keeps it private.
fn queue_fd() -> Option<RawFd> {
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode (this namespace's sockets)
    let netlink = std::fs::read_to_string("/proc/self/net/netlink").ok()?;
    let inodes: Vec<&str> = netlink
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&NETLINK_NETFILTER))
                .then(|| fields.get(9).copied())
                .flatten()
        })
        .collect();
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        else {
            continue;
        };
        if inodes.contains(&inode) {
            if found.is_some() {
                return None;
            }
            found = entry.file_name().to_str().and_then(|n| n.parse().ok());
        }
    }
    found
}

/// How the loop waits for the next packet or release.
enum Waiter {
    /// Edge-triggered epoll on the queue socket: the loop drains it before waiting again.
    Epoll {
        poll: mio::Poll,
        events: mio::Events,
    },
    /// Sleeping at most this long between polls.
    Sleep(Duration),
}

impl Waiter {
    fn new(poll_interval: Duration) -> Self {
        let epoll = || -> anyhow::Result<Self> {
            let fd = queue_fd().context("the queue's socket is not in /proc/self/fd")?;
            let poll = mio::Poll::new().context("epoll")?;
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(&fd),
                    mio::Token(0),
                    mio::Interest::READABLE,
                )
                .context("register the queue socket")?;
            Ok(Waiter::Epoll {
                poll,
                events: mio::Events::with_capacity(4),
            })
        };
        epoll().unwrap_or_else(|e| {
            eprintln!("wan-impair: {e:#}; polling every {poll_interval:?} instead");
            Waiter::Sleep(poll_interval)
        })
    }

    /// Waits for a packet, at most `limit`.
    fn wait(&mut self, limit: Duration) -> anyhow::Result<()> {
        match self {
            Waiter::Epoll { poll, events } => {
                // epoll counts whole milliseconds: wait those, sleep the rest precisely.
                let whole = Duration::from_millis(limit.as_millis() as u64);
                if whole.is_zero() {
                    std::thread::sleep(limit);
                    return Ok(());
                }
                match poll.poll(events, Some(whole)) {
                    Err(e) if e.kind() != ErrorKind::Interrupted => Err(e).context("epoll_wait"),
                    _ => Ok(()),
                }
            }
            Waiter::Sleep(interval) => {
                std::thread::sleep(limit.min(*interval));
                Ok(())
            }
        }
    }
}

/// Opens and binds the netfilter queue of `config` (non-blocking, fail-open, whole GSO
/// packets).
fn open_queue(config: &Config) -> anyhow::Result<Queue> {
    let mut queue = Queue::open().context("open a netfilter queue socket (needs CAP_NET_ADMIN)")?;
    queue
        .bind(config.queue)
        .with_context(|| format!("bind queue {}", config.queue))?;
    queue
        .set_copy_range(config.queue, COPY_RANGE)
        .context("set the copy range")?;
    queue
        .set_queue_max_len(config.queue, config.max_len)
        .context("set the queue length")?;
    queue
        .set_fail_open(config.queue, true)
        .context("set fail-open")?;
    // Whole GSO packets (one verdict for a TCP burst; no checksumming to copy them).
    queue
        .set_recv_gso(config.queue, true)
        .context("accept GSO packets")?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// A flag raised when stdin ends, if `config` asks for it (the parent's way to stop us).
fn stop_on_stdin_eof(config: &Config) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    if config.exit_on_stdin_eof {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                if line.is_err() {
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    stop
}

fn run(config: &Config) -> anyhow::Result<()> {
    let mut queue = open_queue(config)?;
    let mut waiter = Waiter::new(config.poll);
    let stop = stop_on_stdin_eof(config);

    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").context("write to stdout")?;
    stdout.flush().context("flush stdout")?;

    let mut link = Link::new(config);
    let mut pending: VecDeque<(Instant, Message)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        // Everything the socket has (edge-triggered epoll: to the end, unless the batch ends).
        let mut drained = false;
        for _ in 0..RECV_BATCH {
            match queue.recv() {
                Ok(mut message) => {
                    let len = message.get_original_len();
                    match link.admit(Instant::now(), len) {
                        Some(release) => pending.push_back((release, message)),
                        None => {
                            message.set_verdict(Verdict::Drop);
                            queue.verdict(message).context("drop a packet")?;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("receive from the queue"),
            }
        }
        let now = Instant::now();
        while pending.front().is_some_and(|(release, _)| *release <= now) {
            if let Some((_, mut message)) = pending.pop_front() {
                message.set_verdict(Verdict::Accept);
                queue.verdict(message).context("release a packet")?;
            }
        }
        if drained {
            let next = pending.front().map_or(IDLE_WAIT, |(release, _)| {
                release.saturating_duration_since(now).min(IDLE_WAIT)
            });
            if !next.is_zero() {
                waiter.wait(next)?;
            }
        }
    }
    // Let whatever is still held go on (unbinding would drop it).
    for (_, mut message) in pending.drain(..) {
        message.set_verdict(Verdict::Accept);
        queue.verdict(message).context("release a packet")?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let config = parse_args(std::env::args().skip(1))?;
    run(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &str) -> Config {
        parse_args(args.split_whitespace().map(str::to_owned)).expect("valid flags")
    }

    #[test]
    fn parses_flags() {
        let c = config(
            "--queue 4 --delay-ms 125 --jitter-ms 10 --loss-pct 1 --rate-kbps 2000 --seed 7",
        );
        assert_eq!(c.queue, 4);
        assert_eq!(c.delay, Duration::from_millis(125));
        assert_eq!(c.jitter, Duration::from_millis(10));
        assert!((c.loss - 0.01).abs() < 1e-12);
        assert_eq!(c.rate_kbps, Some(2000));
        assert_eq!(c.seed, Some(7));
        assert!(parse_args(["--delay-ms".into(), "5".into()]).is_err());
        assert!(parse_args(["--queue".into(), "x".into()]).is_err());
        assert!(
            parse_args([
                "--queue".into(),
                "1".into(),
                "--loss-pct".into(),
                "101".into()
            ])
            .is_err()
        );
    }

    #[test]
    fn constant_delay_without_rate() {
        let mut link = Link::new(&config("--queue 1 --delay-ms 50 --seed 1"));
        let t0 = Instant::now();
        for i in 0..10 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(link.admit(at, 1200), Some(at + Duration::from_millis(50)));
        }
    }

    #[test]
    fn jitter_stays_in_range_and_never_reorders() {
        let mut link = Link::new(&config("--queue 1 --delay-ms 100 --jitter-ms 20 --seed 3"));
        let t0 = Instant::now();
        let mut last = t0;
        for i in 0..10_000u64 {
            let at = t0 + Duration::from_micros(i * 5000);
            let release = link.admit(at, 100).expect("no loss configured");
            assert!(release >= last, "reordered");
            assert!(release >= at + Duration::from_millis(80));
            // A packet may wait for the one ahead of it, at most the jitter span later.
            assert!(release <= at + Duration::from_millis(120) + Duration::from_millis(40));
            last = release;
        }
    }

    #[test]
    fn loss_rate_matches() {
        let mut link = Link::new(&config("--queue 1 --loss-pct 5 --seed 11"));
        let t0 = Instant::now();
        let lost = (0..100_000)
            .filter(|_| link.admit(t0, 100).is_none())
            .count();
        assert!((4_500..5_500).contains(&lost), "{lost}");
    }

    #[test]
    fn rate_spaces_packets_and_tail_drops() {
        // 1000 kbit/s: a 1250-byte packet takes 10 ms on the line.
        let mut link = Link::new(&config(
            "--queue 1 --rate-kbps 1000 --buffer-ms 45 --seed 1",
        ));
        let t0 = Instant::now();
        let releases: Vec<Option<Instant>> = (0..8).map(|_| link.admit(t0, 1250)).collect();
        for (i, release) in releases.iter().take(5).enumerate() {
            assert_eq!(
                *release,
                Some(t0 + Duration::from_millis(10 * (i as u64 + 1)))
            );
        }
        // The sixth would wait 50 ms > 45 ms of buffer.
        assert_eq!(releases[5], None);
    }
}
