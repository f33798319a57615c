//! Network namespaces for tests that need their own LAN (mDNS) or NAT routers
//! ([`crate::nat`]).
//!
//! [`Lan`] creates namespaces joined by veth pairs to a bridge namespace and deletes them
//! all on drop, even when the test fails. Requires root and `ip` (iproute2). The tools
//! every namespace topology shares live here too: running `ip` and starting `conclave` or
//! `conclave-relay` inside a namespace (`member_in`, `relay_in`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{Proc, bin};

/// Whether this machine can create network namespaces (root and iproute2 present).
pub fn available() -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
        && Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false)
}

/// Runs `program args`, returning its stdout, or fails with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `ip args`.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args).map(drop)
}

/// Starts `conclave --json --no-mdns --insecure-key-file --name LABEL` inside namespace
/// `ns`, with its data dir in `dir`, control plane (TCP) and media bound to `addr`, then
/// `args`.
pub(crate) fn member_in(
    ns: &str,
    addr: &str,
    dir: &Path,
    label: &str,
    args: &[&str],
) -> anyhow::Result<Proc> {
    member_in_with(ns, addr, dir, (label, &[]), args)
}

/// As [`member_in`], with `env` (name, value) set for the process.
pub(crate) fn member_in_with(
    ns: &str,
    addr: &str,
    dir: &Path,
    (label, env): (&str, &[(&str, &str)]),
    args: &[&str],
) -> anyhow::Result<Proc> {
    let mut command = Command::new("ip");
    command.envs(env.iter().copied());
    command
        .args(["netns", "exec", ns])
        .arg(bin("conclave"))
        .args([
            "--json",
            "--no-mdns",
            "--insecure-key-file",
            "--name",
            label,
        ])
        .arg("--data-dir")
        .arg(dir.join(label))
        .args([
            "--listen",
            &format!("/ip4/{addr}/tcp/0"),
            "--media-bind",
            &format!("{addr}:0"),
        ])
        .args(args);
    Proc::spawn(label, command, dir)
}

/// Starts `conclave-relay --json --data-dir DIR/relay ARGS` inside namespace `ns` and waits
/// (bounded) for it to listen; returns it with the addresses it listens on.
pub(crate) fn relay_in(
    ns: &str,
    dir: &Path,
    args: &[String],
) -> anyhow::Result<(Proc, Vec<String>)> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns])
        .arg(bin("conclave-relay"))
        .args(["--json", "--data-dir"])
        .arg(dir.join("relay"))
        .args(args);
    let mut relay = Proc::spawn("relay", command, dir)?;
    let listening = relay.wait_event("listening", Duration::from_secs(20))?;
    let addrs = listening["addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .map(str::to_owned)
        .collect();
    Ok((relay, addrs))
}

/// A private LAN of hosts, each in its own namespace, on `10.77.<n>.0/24`.
#[derive(Debug)]
pub struct Lan {
    names: Vec<String>,
}

impl Lan {
    /// Creates `hosts` namespaces on one bridged segment. Host `i` gets `10.77.0.{i+1}`.
    pub fn new(tag: &str, hosts: usize) -> anyhow::Result<Self> {
        let prefix = format!("cnv{}{}", tag, std::process::id() % 100_000);
        let bridge_ns = format!("{prefix}br");
        let mut lan = Self {
            names: vec![bridge_ns.clone()],
        };
        ip(&["netns", "add", &bridge_ns])?;
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        for i in 0..hosts {
            let ns = format!("{prefix}h{i}");
            ip(&["netns", "add", &ns])?;
            lan.names.push(ns.clone());
            let outside = format!("v{i}br");
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &outside,
                "netns", &bridge_ns,
            ])?;
            ip(&[
                "-n", &bridge_ns, "link", "set", &outside, "master", "br0", "up",
            ])?;
            let addr = format!("10.77.0.{}/24", i + 1);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lan)
    }

    /// The namespace name of host `i`.
    pub fn host(&self, i: usize) -> &str {
        &self.names[i + 1]
    }

    /// The address of host `i` on the LAN.
    pub fn addr(&self, i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// Starts `conclave --json --no-mdns --name LABEL` on host `i`, with its data dir, control
    /// plane (TCP) and media bound to the host's LAN address, then `args`.
    pub fn member(&self, i: usize, dir: &Path, label: &str, args: &[&str]) -> anyhow::Result<Proc> {
        member_in(self.host(i), &self.addr(i), dir, label, args)
    }

    /// Starts `conclave-relay` on host `i` and returns it with its first listen address.
    pub fn relay(&self, i: usize, dir: &Path) -> anyhow::Result<(Proc, String)> {
        let addr = self.addr(i);
        let args = [
            "--listen".to_owned(),
            format!("/ip4/{addr}/tcp/0"),
            "--turn-listen".to_owned(),
            format!("{addr}:0"),
            "--metrics-listen".to_owned(),
            format!("{addr}:0"),
        ];
        let (relay, addrs) = relay_in(self.host(i), dir, &args)?;
        let first = addrs
            .into_iter()
            .next()
            .context("the relay lists an address")?;
        Ok((relay, first))
    }

    /// Runs `nft` with `args` inside host `i`'s namespace.
    pub fn nft(&self, i: usize, args: &str) -> anyhow::Result<String> {
        let output = Command::new("ip")
            .args(["netns", "exec", self.host(i), "nft"])
            .args(args.split_whitespace())
            .output()
            .context("run nft (package nftables)")?;
        if !output.status.success() {
            bail!(
                "nft {args} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
