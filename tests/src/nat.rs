//! An emulated internet for NAT traversal tests: a "public" network with the relay, and
//! homes behind NAT routers of each kind, every node in its own network namespace.
//!
//! ```text
//!  relay 198.51.100.1 ──┐
//!                       ├── wan bridge ── router k (wan0 198.51.100.{10+k}, NAT) ── host k (192.168.{k}.2)
//! ```
//! The NAT kinds are built with nftables in the router: plain
//! `masquerade` is port-restricted cone (endpoint-independent mapping, port-dependent
//! filtering); `masquerade fully-random` is symmetric; full cone and address-restricted add
//! a dynamic map of outbound (protocol, port) → inside address that inbound packets are
//! DNATed through, the latter only from addresses the inside host has sent to. Everything
//! is deleted on drop, even when the test fails.
//!
//! Uplinks can be impaired (delay, jitter, loss, rate) with a [`Profile`]: see
//! [`crate::wan`], [`Internet::add_home_with`] and [`Internet::impair`].

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::Proc;
use crate::netns::{ip, member_in, relay_in, run};
use crate::wan::{Impairment, Profile};

/// How a home router translates and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering: anyone may send to a mapped port.
    FullCone,
    /// Endpoint-independent mapping; inbound only from addresses the host has sent to.
    AddressRestricted,
    /// Endpoint-independent mapping; inbound only from address:port pairs sent to.
    PortRestricted,
    /// A new mapping (random port) for every destination.
    Symmetric,
    /// Port-restricted for TCP, and every outbound UDP packet is dropped.
    UdpBlocked,
    /// Port-restricted for TCP, and nothing goes out but TCP to port 443 (a corporate
    /// network that passes only HTTPS).
    Only443,
}

impl NatKind {
    /// Every kind that hole punching is tested against.
    pub const ALL: [NatKind; 4] = [
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
    ];

    /// Whether two homes of these kinds can reach each other directly (ICE with STUN):
    /// everything except a symmetric NAT facing a symmetric or port-restricted one.
    pub fn direct_possible(a: NatKind, b: NatKind) -> bool {
        use NatKind::*;
        !matches!(
            (a, b),
            (Symmetric, Symmetric)
                | (Symmetric, PortRestricted)
                | (PortRestricted, Symmetric)
                | (UdpBlocked | Only443, _)
                | (_, UdpBlocked | Only443)
        )
    }

    /// Short name for labels.
    pub fn label(self) -> &'static str {
        match self {
            NatKind::FullCone => "fullcone",
            NatKind::AddressRestricted => "addr",
            NatKind::PortRestricted => "port",
            NatKind::Symmetric => "sym",
            NatKind::UdpBlocked => "noudp",
            NatKind::Only443 => "only443",
        }
    }
}

/// Loads an nftables ruleset into namespace `ns`.
fn nft_load(ns: &str, ruleset: &str) -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new().context("ruleset file")?;
    std::fs::write(file.path(), ruleset).context("write ruleset")?;
    let path = file.path().display().to_string();
    run("ip", &["netns", "exec", ns, "nft", "-f", &path]).map(drop)
}

/// One home: a NAT router and a host behind it.
#[derive(Debug, Clone)]
pub struct Home {
    /// Router kind.
    pub kind: NatKind,
    /// Namespace of the host.
    pub host: String,
    /// Namespace of the router.
    pub router: String,
    /// The host's (private) address.
    pub addr: String,
    /// The router's public address.
    pub public_addr: String,
    /// The public bridge's port that the router's `wan0` is plugged into (`p<N>`, in the
    /// `wan` namespace): where this home's uplink is impaired.
    pub uplink: String,
}

/// A host on the public network, without NAT (e.g. a TURN client or a media peer).
#[derive(Debug, Clone)]
pub struct PublicHost {
    /// Its namespace.
    pub ns: String,
    /// Its address on the public network.
    pub addr: String,
}

/// A network behind the relay host (a site's internal networks): a namespace joined to the
/// relay's namespace by a veth pair, not routed to the public network.
#[derive(Debug, Clone)]
pub struct Site {
    /// The namespace of the internal hosts.
    pub ns: String,
    /// The internal hosts' addresses (all on the site namespace's `eth0`).
    pub addrs: Vec<String>,
    /// The relay host's own addresses on those networks.
    pub relay_side: Vec<String>,
}

/// The public network, the relay's namespace and the homes; deleted on drop.
#[derive(Debug)]
pub struct Internet {
    prefix: String,
    names: Vec<String>,
    homes: usize,
    public_hosts: usize,
    /// The bridge port of the relay's `eth0`.
    relay_uplink: String,
    /// Impaired uplinks, by bridge port.
    impairments: Vec<(String, Impairment)>,
}

/// The relay's address on the public network.
pub const RELAY_ADDR: &str = "198.51.100.1";
/// Downlink impairments use netfilter queue (port number + this); uplinks, the port number.
const DOWNLINK_QUEUES: u16 = 1000;

/// One emulated internet at a time: ICE timing suffers when several share two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the emulated-internet lock for a test's duration.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes a relay configuration with TURN on the public address into `dir`; returns its
/// path.
pub fn relay_config(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!("[turn]\nlisten = \"{RELAY_ADDR}:3478\"\npublic_ip = \"{RELAY_ADDR}\"\n"),
    )
    .context("write the relay configuration")?;
    Ok(path)
}

/// Like [`relay_config`], with TURN over TLS on port 443 of the public address, shared
/// with libp2p (a self-signed certificate made in the relay's data directory).
pub fn relay_config_with_tls(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = relay_config(dir)?;
    let mut text = std::fs::read_to_string(&path).context("read the relay configuration")?;
    text.push_str(&format!("\n[turn.tls]\nlisten = \"{RELAY_ADDR}:443\"\n"));
    std::fs::write(&path, text).context("write the relay configuration")?;
    Ok(path)
}

impl Home {
    /// Loads an nftables ruleset into the host's namespace (e.g. counters to watch traffic).
    pub fn nft(&self, ruleset: &str) -> anyhow::Result<()> {
        nft_load(&self.host, ruleset)
    }

    /// Lists an `inet` table of the host's namespace (with its counters).
    pub fn nft_list(&self, table: &str) -> anyhow::Result<String> {
        run(
            "ip",
            &[
                "netns", "exec", &self.host, "nft", "list", "table", "inet", table,
            ],
        )
    }

    /// Starts `conclave --json --no-mdns --name LABEL` in this home's host, control plane on
    /// TCP, then `args`.
    pub fn member(&self, dir: &Path, label: &str, args: &[&str]) -> anyhow::Result<Proc> {
        member_in(&self.host, &self.addr, dir, label, args)
    }

    /// As [`Home::member`], with `env` (name, value) set for the process (e.g. the X
    /// display whose screen it shares).
    pub fn member_with_env(
        &self,
        dir: &Path,
        label: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Proc> {
        crate::netns::member_in_with(&self.host, &self.addr, dir, (label, env), args)
    }
}

impl Internet {
    /// Creates the public network with the relay's namespace.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let prefix = format!("cnn{}{}", tag, std::process::id() % 100_000);
        let mut net = Self {
            prefix: prefix.clone(),
            names: Vec::new(),
            homes: 0,
            public_hosts: 0,
            relay_uplink: String::new(),
            impairments: Vec::new(),
        };
        let wan = net.namespace("wan")?;
        ip(&["-n", &wan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &wan, "link", "set", "br0", "up"])?;
        let relay = net.namespace("relay")?;
        net.relay_uplink = net.plug(&relay, "eth0", &format!("{RELAY_ADDR}/24"))?;
        Ok(net)
    }

    /// The relay's namespace (the relay host).
    pub fn relay_namespace(&self) -> String {
        format!("{}relay", self.prefix)
    }

    /// Adds a host on the public network at `198.51.100.{100+n}`, no NAT in front.
    pub fn add_public_host(&mut self) -> anyhow::Result<PublicHost> {
        self.public_hosts += 1;
        let n = self.public_hosts;
        let ns = self.namespace(&format!("p{n}"))?;
        let addr = format!("198.51.100.{}", 100 + n);
        self.plug(&ns, "eth0", &format!("{addr}/24"))?;
        Ok(PublicHost { ns, addr })
    }

    /// Starts coturn's `turnserver` (Debian's package) on a public host of its own, with
    /// REST-API credentials (`use-auth-secret`) under `secret`: a TURN server a site already
    /// runs. Returns it, once it serves, its log file and its host.
    pub fn coturn(
        &mut self,
        dir: &Path,
        secret: &str,
    ) -> anyhow::Result<(Proc, std::path::PathBuf, PublicHost)> {
        let host = self.add_public_host()?;
        // Kept with the other processes' logs when the test asks for them.
        let log = std::env::var_os("CONCLAVE_TEST_LOG_DIR")
            .map_or_else(|| dir.to_path_buf(), std::path::PathBuf::from)
            .join("coturn.log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &host.ns, "turnserver", "-n"])
            .args([
                format!("--listening-ip={}", host.addr),
                format!("--relay-ip={}", host.addr),
                "--listening-port=3478".to_owned(),
                "--use-auth-secret".to_owned(),
                format!("--static-auth-secret={secret}"),
                "--realm=conclave".to_owned(),
                "--no-tls".to_owned(),
                "--no-dtls".to_owned(),
                "--no-cli".to_owned(),
                "--fingerprint".to_owned(),
                "--no-tcp-relay".to_owned(),
                "--min-port=49152".to_owned(),
                "--max-port=65535".to_owned(),
                format!("--log-file={}", log.display()),
                "--no-stdout-log".to_owned(),
                "--simple-log".to_owned(),
                "--verbose".to_owned(),
                format!("--pidfile={}", dir.join("coturn.pid").display()),
                format!("--userdb={}", dir.join("coturn.db").display()),
            ]);
        let proc = Proc::spawn("coturn", command, dir)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("Total General servers"))
        {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "turnserver did not start (apt install coturn); log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok((proc, log, host))
    }

    /// Adds internal networks behind the relay host: `10.99.0.0/24`, `192.168.77.0/24` and
    /// link-local `169.254.0.0/16` (with the cloud metadata address `169.254.169.254`), the
    /// relay host at `.254` / `169.254.0.1`, the internal hosts at `10.99.0.1`,
    /// `192.168.77.1` and `169.254.169.254`. Only the relay host reaches them.
    pub fn add_site(&mut self) -> anyhow::Result<Site> {
        let site = self.namespace("site")?;
        let relay = self.relay_namespace();
        ip(&[
            "-n", &relay, "link", "add", "site0", "type", "veth", "peer", "name", "eth0", "netns",
            &site,
        ])?;
        let relay_side = ["10.99.0.254/24", "192.168.77.254/24", "169.254.0.1/16"];
        let inside = ["10.99.0.1/24", "192.168.77.1/24", "169.254.169.254/16"];
        for cidr in relay_side {
            ip(&["-n", &relay, "addr", "add", cidr, "dev", "site0"])?;
        }
        for cidr in inside {
            ip(&["-n", &site, "addr", "add", cidr, "dev", "eth0"])?;
        }
        ip(&["-n", &relay, "link", "set", "site0", "up"])?;
        ip(&["-n", &site, "link", "set", "eth0", "up"])?;
        // Internal hosts answer the relay host's public address through it.
        ip(&["-n", &site, "route", "add", "default", "via", "10.99.0.254"])?;
        let strip = |cidrs: &[&str]| -> Vec<String> {
            cidrs
                .iter()
                .map(|c| c.split('/').next().unwrap_or(c).to_owned())
                .collect()
        };
        Ok(Site {
            ns: site,
            addrs: strip(&inside),
            relay_side: strip(&relay_side),
        })
    }

    fn namespace(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = format!("{}{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.names.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Connects `ns` to the public bridge through interface `dev` with address `cidr`;
    /// returns the bridge's port for it.
    fn plug(&self, ns: &str, dev: &str, cidr: &str) -> anyhow::Result<String> {
        let wan = format!("{}wan", self.prefix);
        let outside = format!("p{}", self.names.len());
        ip(&[
            "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", &outside, "netns", &wan,
        ])?;
        ip(&["-n", &wan, "link", "set", &outside, "master", "br0", "up"])?;
        ip(&["-n", ns, "addr", "add", cidr, "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
        Ok(outside)
    }

    /// Starts `conclave-relay` on the public network (with `config`, a TOML file, if given)
    /// and returns it with its TCP listen address.
    pub fn relay(&self, dir: &Path, config: Option<&Path>) -> anyhow::Result<(Proc, String)> {
        self.relay_on(dir, config, 0)
    }

    /// Like [`Internet::relay`], with the libp2p listener on TCP `port` (fixed, so that a
    /// restarted relay keeps its address; 0 for any).
    pub fn relay_on(
        &self,
        dir: &Path,
        config: Option<&Path>,
        port: u16,
    ) -> anyhow::Result<(Proc, String)> {
        self.spawn_relay(dir, config, &[format!("/ip4/{RELAY_ADDR}/tcp/{port}")])
    }

    /// A relay with TURN over TLS on port 443, libp2p on that port too (and on another TCP
    /// port); returns the port-443 address.
    pub fn relay_with_tls(&self, dir: &Path) -> anyhow::Result<(Proc, String)> {
        let config = relay_config_with_tls(dir)?;
        let args = [
            "--listen".to_owned(),
            format!("/ip4/{RELAY_ADDR}/tcp/0"),
            "--config".to_owned(),
            config.display().to_string(),
        ];
        let (relay, addrs) = relay_in(&self.relay_namespace(), dir, &args)?;
        let addr = addrs
            .into_iter()
            .find(|a| a.contains(&format!("/ip4/{RELAY_ADDR}/tcp/443/")))
            .context("the relay lists its port-443 address")?;
        Ok((relay, addr))
    }

    /// Like [`Internet::relay`], listening on QUIC as well as TCP (as a relay does by
    /// default); returns the TCP address.
    pub fn relay_with_quic(&self, dir: &Path) -> anyhow::Result<(Proc, String)> {
        self.relay_full(dir, None)
    }

    /// A relay as sites run it: libp2p on TCP and QUIC, and `config` (TURN, access) if
    /// given; returns the TCP address.
    pub fn relay_full(&self, dir: &Path, config: Option<&Path>) -> anyhow::Result<(Proc, String)> {
        self.spawn_relay(
            dir,
            config,
            &[
                format!("/ip4/{RELAY_ADDR}/tcp/0"),
                format!("/ip4/{RELAY_ADDR}/udp/0/quic-v1"),
            ],
        )
    }

    fn spawn_relay(
        &self,
        dir: &Path,
        config: Option<&Path>,
        listen: &[String],
    ) -> anyhow::Result<(Proc, String)> {
        let mut args = Vec::new();
        for addr in listen {
            args.extend(["--listen".to_owned(), addr.clone()]);
        }
        if let Some(config) = config {
            args.extend(["--config".to_owned(), config.display().to_string()]);
        }
        let (relay, addrs) = relay_in(&self.relay_namespace(), dir, &args)?;
        let addr = addrs
            .into_iter()
            .find(|a| a.contains("/tcp/"))
            .context("the relay lists a TCP address")?;
        Ok((relay, addr))
    }

    /// Adds a home behind a router of `kind`.
    pub fn add_home(&mut self, kind: NatKind) -> anyhow::Result<Home> {
        self.homes += 1;
        let k = self.homes;
        let router = self.namespace(&format!("r{k}"))?;
        let host = self.namespace(&format!("h{k}"))?;
        let public_addr = format!("198.51.100.{}", 10 + k);
        let uplink = self.plug(&router, "wan0", &format!("{public_addr}/24"))?;
        ip(&[
            "-n", &host, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns",
            &router,
        ])?;
        let (gateway, addr) = (format!("192.168.{k}.1"), format!("192.168.{k}.2"));
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "lan0",
        ])?;
        ip(&["-n", &router, "link", "set", "lan0", "up"])?;
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        ip(&["-n", &host, "route", "add", "default", "via", &gateway])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &router,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        nft_load(&router, &ruleset(kind))?;
        Ok(Home {
            kind,
            host,
            router,
            addr,
            public_addr,
            uplink,
        })
    }

    /// Adds a home behind a router of `kind` whose uplink is impaired with `profile`, if any.
    pub fn add_home_with(
        &mut self,
        kind: NatKind,
        profile: Option<&Profile>,
    ) -> anyhow::Result<Home> {
        let home = self.add_home(kind)?;
        self.impair(&home, profile)?;
        Ok(home)
    }

    /// Impairs `home`'s uplink (what its router sends to the internet) with `profile`,
    /// replacing any earlier impairment; `None` restores a perfect link. Lasts until
    /// changed again or the internet is dropped.
    pub fn impair(&mut self, home: &Home, profile: Option<&Profile>) -> anyhow::Result<()> {
        let port = home.uplink.clone();
        self.impair_port(&port, profile)
    }

    /// Impairs `home`'s downlink (what it receives from the internet) with `profile`
    /// (`None`: no longer), besides whatever its uplink has: a home whose line is slow
    /// only one way.
    pub fn impair_downlink(
        &mut self,
        home: &Home,
        profile: Option<&Profile>,
    ) -> anyhow::Result<()> {
        let key = format!("{}-down", home.uplink);
        self.impairments.retain(|(p, _)| *p != key);
        let Some(profile) = profile else {
            return Ok(());
        };
        let queue: u16 = home
            .uplink
            .trim_start_matches('p')
            .parse::<u16>()
            .with_context(|| format!("bridge port {} is p<number>", home.uplink))?
            + DOWNLINK_QUEUES;
        let wan = format!("{}wan", self.prefix);
        let impairment = Impairment::bridge_port_towards(
            &wan,
            (&home.uplink, crate::wan::Towards::Home),
            queue,
            profile,
        )?;
        self.impairments.push((key, impairment));
        Ok(())
    }

    /// Impairs the relay's uplink (what the relay sends) with `profile`, as
    /// [`Internet::impair`] does a home's. A relay on `continental` adds 50 ms to every
    /// RTT home ↔ relay and to the one-way delay of every relayed packet.
    pub fn impair_relay(&mut self, profile: Option<&Profile>) -> anyhow::Result<()> {
        let port = self.relay_uplink.clone();
        self.impair_port(&port, profile)
    }

    /// Cuts `home` off the internet, both ways (its uplink cable pulled): every packet
    /// entering or leaving the public bridge through its port is dropped, before any
    /// impairment. [`Internet::replug`] undoes it; the impairment stays as it was.
    pub fn unplug(&mut self, home: &Home) -> anyhow::Result<()> {
        let wan = format!("{}wan", self.prefix);
        crate::wan::block_port(&wan, &home.uplink, true)
    }

    /// Reconnects a home cut off with [`Internet::unplug`].
    pub fn replug(&mut self, home: &Home) -> anyhow::Result<()> {
        let wan = format!("{}wan", self.prefix);
        crate::wan::block_port(&wan, &home.uplink, false)
    }

    /// The profile currently on `home`'s uplink.
    pub fn impairment(&self, home: &Home) -> Option<&Profile> {
        self.impairments
            .iter()
            .find(|(port, _)| *port == home.uplink)
            .map(|(_, impairment)| impairment.profile())
    }

    fn impair_port(&mut self, port: &str, profile: Option<&Profile>) -> anyhow::Result<()> {
        // Stop the old one first: the queue number is the port's.
        self.impairments.retain(|(p, _)| p != port);
        let Some(profile) = profile else {
            return Ok(());
        };
        let queue: u16 = port
            .trim_start_matches('p')
            .parse()
            .with_context(|| format!("bridge port {port} is p<number>"))?;
        let wan = format!("{}wan", self.prefix);
        let impairment = Impairment::bridge_port(&wan, port, queue, profile)?;
        self.impairments.push((port.to_owned(), impairment));
        Ok(())
    }
}

/// The router's nftables ruleset for `kind`.
fn ruleset(kind: NatKind) -> String {
    let masquerade = match kind {
        NatKind::Symmetric => "masquerade fully-random",
        _ => "masquerade",
    };
    let mut rules = format!(
        "table ip nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; oifname \"wan0\" {masquerade}; }}
}}
"
    );
    match kind {
        NatKind::FullCone | NatKind::AddressRestricted => {
            // Remember which inside address owns each outbound UDP port (and, for the
            // restricted kind, whom it talked to); new inbound flows to that port are let in.
            let only_contacted = if kind == NatKind::AddressRestricted {
                "ip saddr @contacted "
            } else {
                ""
            };
            rules.push_str(&format!(
                "table ip cone {{
  map owner {{ type inet_service : ipv4_addr; flags dynamic, timeout; timeout 2m; }}
  set contacted {{ type ipv4_addr; flags dynamic, timeout; timeout 2m; }}
  chain forward {{
    type filter hook forward priority 0;
    iifname \"lan0\" meta l4proto udp update @owner {{ udp sport : ip saddr }} update @contacted {{ ip daddr }}
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    iifname \"wan0\" meta l4proto udp {only_contacted}dnat to udp dport map @owner
  }}
}}
"
            ));
        }
        NatKind::UdpBlocked => rules.push_str(
            "table ip block {
  chain forward { type filter hook forward priority 0; iifname \"lan0\" meta l4proto udp drop; }
}
",
        ),
        NatKind::Only443 => rules.push_str(
            "table ip block {
  chain forward {
    type filter hook forward priority 0;
    iifname \"lan0\" tcp dport 443 accept
    iifname \"lan0\" drop
  }
}
",
        ),
        NatKind::PortRestricted | NatKind::Symmetric => {}
    }
    rules
}

impl Drop for Internet {
    fn drop(&mut self) {
        // The delayers first (they live in the wan namespace).
        self.impairments.clear();
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
