//! WAN emulation for the system tests: one-way delay, jitter, loss and rate on the uplinks of
//! an emulated internet ([`crate::nat::Internet`]), with named [`Profile`]s.
//!
//! This kernel has no `tc netem`, so each impaired uplink is a netfilter queue served by the
//! `wan-impair` binary (`tests/src/bin/wan-impair.rs`), which holds every packet for the
//! sampled delay and releases them in order. The queue is taken on the public bridge: in the
//! `wan` namespace, bridged IPv4 packets pass iptables (`br_netfilter`), and a rule
//! `FORWARD -m physdev --physdev-in pN -j NFQUEUE --queue-num N --queue-bypass` hands the
//! packets that *enter the bridge from* port `pN` (one router's `wan0`, or the relay's
//! `eth0`) to queue `N`. No NAT or connection tracking runs there, so the routers' NAT
//! behaviour is untouched. (nftables' own `queue` statement is not built into this kernel;
//! the iptables `NFQUEUE` target is.)
//!
//! Only egress is delayed: a home's uplink delays what the home sends to the internet, not
//! what it receives. So with every home on the same profile (delay `d` per uplink):
//!
//! - home → relay → home, and home → home direct: one-way delay `d` (only the sender's
//!   uplink is crossed: the relay's is not impaired unless asked);
//! - RTT home ↔ home = `2d` (each direction crosses one uplink);
//! - RTT home ↔ relay = `d`.
//!
//! | profile | per uplink | RTT home ↔ home |
//! |---|---|---|
//! | `metro` | 10 ms | 20 ms |
//! | `continental` | 50 ms | 100 ms |
//! | `intercontinental` | 125 ms ± 10 ms, 1 % loss | 250 ms ± 20 ms, ≈ 2 % loss |
//! | `satellite` | 300 ms | 600 ms |
//!
//! A test opts in with [`crate::nat::Internet::add_home_with`] or
//! [`crate::nat::Internet::impair`]; [`Profile::from_env_or`] lets `CONCLAVE_WAN_PROFILE`
//! pick another profile for a run. Requires root, iptables and `br_netfilter`.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::bin;
use crate::netns::run;

/// The environment variable naming the profile a run uses in tests that opt in.
pub const PROFILE_ENV: &str = "CONCLAVE_WAN_PROFILE";

/// The impairment of one uplink (one direction: what leaves the home).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Name, for labels and [`Profile::named`].
    pub name: &'static str,
    /// Mean one-way delay added to every packet.
    pub one_way_delay: Duration,
    /// Each packet's delay is uniform in `one_way_delay ± jitter` (packets never reorder).
    pub jitter: Duration,
    /// Random loss, in percent of packets.
    pub loss_pct: f64,
    /// Line rate in kbit/s, if limited (a 500 ms buffer, then tail drop).
    pub rate_kbps: Option<u32>,
}

impl Profile {
    /// Same metro area: RTT 20 ms home ↔ home.
    pub const METRO: Profile = Profile {
        name: "metro",
        one_way_delay: Duration::from_millis(10),
        jitter: Duration::ZERO,
        loss_pct: 0.0,
        rate_kbps: None,
    };

    /// Same continent: RTT 100 ms home ↔ home.
    pub const CONTINENTAL: Profile = Profile {
        name: "continental",
        one_way_delay: Duration::from_millis(50),
        jitter: Duration::ZERO,
        loss_pct: 0.0,
        rate_kbps: None,
    };

    /// Across an ocean: RTT 250 ms ± 20 ms home ↔ home, 1 % loss per uplink.
    pub const INTERCONTINENTAL: Profile = Profile {
        name: "intercontinental",
        one_way_delay: Duration::from_millis(125),
        jitter: Duration::from_millis(10),
        loss_pct: 1.0,
        rate_kbps: None,
    };

    /// Geostationary satellite: RTT 600 ms home ↔ home.
    pub const SATELLITE: Profile = Profile {
        name: "satellite",
        one_way_delay: Duration::from_millis(300),
        jitter: Duration::ZERO,
        loss_pct: 0.0,
        rate_kbps: None,
    };

    /// Every named profile, mildest first.
    pub const ALL: [Profile; 4] = [
        Profile::METRO,
        Profile::CONTINENTAL,
        Profile::INTERCONTINENTAL,
        Profile::SATELLITE,
    ];

    /// The profile called `name` (case-insensitive).
    pub fn named(name: &str) -> Option<Profile> {
        Self::ALL
            .into_iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
    }

    /// The profile named by `CONCLAVE_WAN_PROFILE`, if set and not empty.
    ///
    /// # Panics
    /// If the variable names no profile (a typo should not silently test something else).
    pub fn from_env() -> Option<Profile> {
        let name = std::env::var(PROFILE_ENV).ok()?;
        if name.trim().is_empty() {
            return None;
        }
        let names: Vec<&str> = Self::ALL.iter().map(|p| p.name).collect();
        Some(Self::named(&name).unwrap_or_else(|| {
            panic!("{PROFILE_ENV}={name:?} names no WAN profile; known: {names:?}")
        }))
    }

    /// The profile named by `CONCLAVE_WAN_PROFILE`, else `default`.
    ///
    /// # Panics
    /// If the variable names no profile.
    pub fn from_env_or(default: Profile) -> Profile {
        Self::from_env().unwrap_or(default)
    }

    /// This profile with the line rate limited to `kbps`.
    pub fn with_rate_kbps(self, kbps: u32) -> Profile {
        Profile {
            rate_kbps: Some(kbps),
            ..self
        }
    }

    /// Round trip between two homes on this profile (each direction crosses one uplink).
    pub fn home_to_home_rtt(&self) -> Duration {
        2 * self.one_way_delay
    }

    /// Round trip between a home on this profile and the (unimpaired) relay.
    pub fn home_to_relay_rtt(&self) -> Duration {
        self.one_way_delay
    }

    /// The `wan-impair` flags for this profile.
    pub fn args(&self) -> Vec<String> {
        let ms = |d: Duration| format!("{}", d.as_secs_f64() * 1000.0);
        let mut args = vec![
            "--delay-ms".to_owned(),
            ms(self.one_way_delay),
            "--jitter-ms".to_owned(),
            ms(self.jitter),
            "--loss-pct".to_owned(),
            format!("{}", self.loss_pct),
        ];
        if let Some(kbps) = self.rate_kbps {
            args.extend(["--rate-kbps".to_owned(), kbps.to_string()]);
        }
        args
    }
}

/// One impaired bridge port: a `wan-impair` process and the iptables rule feeding it. Dropping
/// it removes the rule, then stops the process.
#[derive(Debug)]
pub struct Impairment {
    namespace: String,
    rule: Vec<String>,
    child: Child,
    /// Closing it makes `wan-impair` exit even if this process dies without dropping us.
    _stdin: Option<ChildStdin>,
    profile: Profile,
}

impl Impairment {
    /// Impairs, with `profile`, the packets that enter the bridge of namespace `namespace`
    /// through its port `port`, on netfilter queue `queue` (distinct per port): starts
    /// `wan-impair` in that namespace, waits for it to be ready, then adds the rule.
    pub fn bridge_port(
        namespace: &str,
        port: &str,
        queue: u16,
        profile: &Profile,
    ) -> anyhow::Result<Self> {
        Self::bridge_port_towards(namespace, (port, Towards::Internet), queue, profile)
    }

    /// As [`Impairment::bridge_port`], for the packets going `towards` the internet (that
    /// enter the bridge through `port`: an uplink) or the home (that leave it through
    /// `port`: a downlink).
    pub fn bridge_port_towards(
        namespace: &str,
        (port, towards): (&str, Towards),
        queue: u16,
        profile: &Profile,
    ) -> anyhow::Result<Self> {
        bridge_through_iptables(namespace)?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespace])
            .arg(bin("wan-impair"))
            .args(["--queue", &queue.to_string(), "--exit-on-stdin-eof"])
            .args(profile.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().context("spawn wan-impair")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Only the first line matters; keep draining so the pipe never fills.
                let _ = tx.send(line);
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(10));
        let mut impairment = Self {
            namespace: namespace.to_owned(),
            rule: Vec::new(),
            child,
            _stdin: stdin,
            profile: *profile,
        };
        match ready {
            Ok(line) if line.trim() == "ready" => {}
            other => bail!("wan-impair on queue {queue} did not get ready: {other:?}"),
        }
        // A packet is queued once per hook: an uplink's rule in FORWARD, a downlink's in
        // the later POSTROUTING (mangle), so a packet crossing an impaired uplink into an
        // impaired downlink is held by both.
        let (chain, table, direction) = match towards {
            Towards::Internet => ("FORWARD", "filter", "--physdev-in"),
            Towards::Home => ("POSTROUTING", "mangle", "--physdev-out"),
        };
        let rule: Vec<String> = [
            chain,
            "-t",
            table,
            "-m",
            "physdev",
            direction,
            port,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue.to_string(),
            "--queue-bypass",
        ]
        .map(str::to_owned)
        .to_vec();
        impairment.iptables("-A", &rule)?;
        impairment.rule = rule;
        Ok(impairment)
    }

    /// The profile applied.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn iptables(&self, action: &str, rule: &[String]) -> anyhow::Result<()> {
        let mut args = vec!["netns", "exec", &self.namespace, "iptables", "-w", action];
        args.extend(rule.iter().map(String::as_str));
        run("ip", &args)
            .map(drop)
            .context("iptables (package iptables)")
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        if !self.rule.is_empty() {
            let _ = self.iptables("-D", &self.rule);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which way an impairment acts on a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Towards {
    /// What the host behind the port sends (its uplink).
    Internet,
    /// What the host behind the port receives (its downlink).
    Home,
}

/// Sends the bridged IPv4 packets of `namespace` through its iptables (a per-namespace
/// setting of br_netfilter).
fn bridge_through_iptables(namespace: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            namespace,
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=1",
        ],
    )
    .map(drop)
    .context("enable br_netfilter on the bridge")
}

/// Drops (`blocked`) or stops dropping every packet that enters or leaves the bridge of
/// `namespace` through `port`: a pulled cable. The rules go first in the chain, ahead of any
/// impairment's queue rule.
pub fn block_port(namespace: &str, port: &str, blocked: bool) -> anyhow::Result<()> {
    bridge_through_iptables(namespace)?;
    for direction in ["--physdev-in", "--physdev-out"] {
        let mut args = vec!["netns", "exec", namespace, "iptables", "-w"];
        if blocked {
            args.extend(["-I", "FORWARD", "1"]);
        } else {
            args.extend(["-D", "FORWARD"]);
        }
        args.extend(["-m", "physdev", direction, port]);
        if direction == "--physdev-out" {
            args.push("--physdev-is-bridged");
        }
        args.extend(["-j", "DROP"]);
        run("ip", &args).context("iptables (package iptables)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_by_name() {
        for profile in Profile::ALL {
            assert_eq!(Profile::named(profile.name), Some(profile));
        }
        assert_eq!(Profile::named("Continental"), Some(Profile::CONTINENTAL));
        assert_eq!(Profile::named("moon"), None);
        assert_eq!(
            Profile::CONTINENTAL.home_to_home_rtt(),
            Duration::from_millis(100)
        );
        assert_eq!(
            Profile::INTERCONTINENTAL.home_to_relay_rtt(),
            Duration::from_millis(125)
        );
    }

    #[test]
    fn wan_impair_flags() {
        assert_eq!(
            Profile::INTERCONTINENTAL.with_rate_kbps(2000).args(),
            [
                "--delay-ms",
                "125",
                "--jitter-ms",
                "10",
                "--loss-pct",
                "1",
                "--rate-kbps",
                "2000"
            ]
        );
    }
}
