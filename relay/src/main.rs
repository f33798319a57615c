//! `conclave-relay` command line: parse flags, read the TOML config, run until Ctrl-C,
//! reloading the config when its file changes or on `SIGHUP`; or, with `allow …`, edit the
//! config file's allowlist and exit.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conclave_relay::allowfile::{self, AllowFileError};
use conclave_relay::{Config, Relay};
use libp2p::Multiaddr;
use tracing::{error, warn};

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// DHT bootstrap, circuit relay and STUN/TURN for Conclave meetings. Sees only ciphertext.
#[derive(Debug, Parser)]
#[command(name = "conclave-relay", version)]
struct Args {
    /// TOML configuration file (every field optional; see docs/relay.md). A running relay
    /// reloads it when it changes or on SIGHUP.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the relay keeps its identity key (overrides the config file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable; overrides the config file).
    #[arg(long = "listen")]
    listen: Vec<Multiaddr>,
    /// STUN/TURN listen address, UDP and TCP (overrides `turn.listen`).
    #[arg(long)]
    turn_listen: Option<SocketAddr>,
    /// Address announced in TURN relayed addresses and ICE URLs (overrides `turn.public_ip`).
    #[arg(long)]
    turn_public_ip: Option<IpAddr>,
    /// Let TURN relay to loopback peers (tests and benches on one host only).
    #[arg(long)]
    turn_allow_loopback_peers: bool,
    /// Metrics and health HTTP address (overrides `metrics.listen`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// One JSON object per line on stdout instead of human text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the TURN allowlist (`[access]`) in the --config file; a running relay
    /// applies the change within a second.
    #[command(subcommand)]
    Allow(AllowCommand),
}

#[derive(Debug, Subcommand)]
enum AllowCommand {
    /// Give an identity TURN credentials (closes an open relay to everyone else).
    Add {
        /// Peer id (`conclave id` prints it) or 64-hex ed25519 public key.
        identity: String,
    },
    /// Take an identity's TURN credentials away and end its allocations.
    Remove {
        /// Peer id or 64-hex ed25519 public key.
        identity: String,
    },
    /// Print the allowlist.
    List,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            // The TURN engine logs every undeliverable datagram from the network at error
            // level (one line per packet an attacker sends): off unless RUST_LOG asks.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,turn::server=off".into()),
        )
        .init();
    let args = Args::parse();
    let result = match &args.command {
        Some(Command::Allow(command)) => allow(&args, command),
        None => run(&args).await,
    };
    if let Err(err) = result {
        eprintln!("conclave-relay: {err:#}");
        let usage = err.downcast_ref::<AllowFileError>().is_some_and(|e| {
            matches!(
                e,
                AllowFileError::Identity(_) | AllowFileError::NotListed(_)
            )
        }) || err.downcast_ref::<Usage>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}

/// A command-line mistake (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(&'static str);

fn allow(args: &Args, command: &AllowCommand) -> anyhow::Result<()> {
    let path = args.config.as_deref().ok_or(Usage(
        "allow needs --config FILE: the file the relay runs with",
    ))?;
    let json = |value: serde_json::Value| println!("{value}");
    match command {
        AllowCommand::List => {
            let listing = allowfile::list(path)?;
            if args.json {
                json(serde_json::json!({
                    "event": "allowlist", "open": listing.open, "allow": listing.allow,
                }));
            } else if listing.open {
                println!("open: anyone who connects gets TURN credentials");
                for entry in &listing.allow {
                    println!("{entry} (ignored while open)");
                }
            } else if listing.allow.is_empty() {
                println!("closed, and nobody is listed: nobody gets TURN credentials");
            } else {
                for entry in &listing.allow {
                    println!("{entry}");
                }
            }
        }
        AllowCommand::Add { identity } => {
            let edit = allowfile::add(path, identity)?;
            if args.json {
                json(serde_json::json!({
                    "event": "allowlist", "open": false, "allow": edit.allow,
                    "changed": edit.changed, "closed": edit.closed,
                }));
            } else {
                if edit.closed {
                    println!(
                        "the relay was open; it now gives TURN credentials only to listed identities"
                    );
                }
                let what = if edit.changed {
                    "added"
                } else {
                    "already listed"
                };
                println!("{identity}: {what} ({} listed)", edit.allow.len());
            }
        }
        AllowCommand::Remove { identity } => {
            let edit = allowfile::remove(path, identity)?;
            if args.json {
                json(serde_json::json!({
                    "event": "allowlist", "open": false, "allow": edit.allow, "changed": true,
                }));
            } else {
                println!(
                    "{identity}: removed ({} listed); a running relay ends its allocations now",
                    edit.allow.len()
                );
            }
        }
    }
    Ok(())
}

/// The configuration: the file (or the defaults) with the command-line overrides.
fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir.clone();
    }
    if let Some(addr) = args.turn_listen {
        config.turn.listen = addr;
    }
    if let Some(ip) = args.turn_public_ip {
        config.turn.public_ip = Some(ip);
    }
    if args.turn_allow_loopback_peers {
        config.turn.allow_loopback_peers = true;
    }
    if let Some(addr) = args.metrics_listen {
        config.metrics.listen = addr;
    }
    config.validate()?;
    Ok(config)
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let config = load(args)?;
    if args.config.is_none() {
        warn!(
            "no --config: running with the defaults, which give TURN credentials to anyone who \
             connects; a site should run with a closed allowlist (docs/relay.md)"
        );
    }
    let data_dir = match &config.data_dir {
        Some(dir) => dir.clone(),
        None => directories::ProjectDirs::from("org", "Conclave", "conclave-relay")
            .context("no home directory to keep the relay key in; pass --data-dir")?
            .data_dir()
            .to_owned(),
    };
    let relay = Relay::start(&config, &data_dir).await?;
    let addrs: Vec<String> = relay.addrs().iter().map(ToString::to_string).collect();
    let turn_udp = relay.turn_udp().map(|a| a.to_string());
    let turn_tcp = relay.turn_tcp().map(|a| a.to_string());
    let turn_tls = relay.turn_tls().map(|a| a.to_string());
    let tls_pin = relay.turn_tls_pin().map(|p| p.to_string());
    let metrics = relay.metrics_addr().map(|a| a.to_string());
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "peer_id": relay.peer_id().to_string(),
                "addrs": addrs,
                "turn_udp": turn_udp,
                "turn_tcp": turn_tcp,
                "turn_tls": turn_tls,
                "turn_tls_pin": tls_pin,
                "turn_urls": relay.turn_urls(),
                "metrics": metrics,
            })
        );
    } else {
        println!("conclave-relay {} listening on:", relay.peer_id());
        for addr in &addrs {
            println!("  {addr}");
        }
        for url in relay.turn_urls() {
            println!("  {url}");
        }
        if let Some(pin) = tls_pin {
            println!("  TLS certificate SHA-256 (clients pin it): {pin}");
        }
        if let Some(metrics) = metrics {
            println!("  metrics and health: http://{metrics}/metrics, /healthz");
        }
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch for SIGHUP")?;
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = args.config.as_deref().and_then(read_quietly);
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                result.context("cannot wait for Ctrl-C")?;
                break;
            }
            _ = hangup.recv() => {
                if args.config.is_none() {
                    warn!("SIGHUP: no --config file to reload");
                    continue;
                }
                seen = args.config.as_deref().and_then(read_quietly);
                reload(args, &relay).await;
            }
            _ = watch.tick() => {
                let Some(path) = args.config.as_deref() else { continue };
                let now = read_quietly(path);
                if now.is_some() && now != seen {
                    seen = now;
                    reload(args, &relay).await;
                }
            }
        }
    }
    relay.shutdown();
    Ok(())
}

/// The file's bytes, `None` if it cannot be read (e.g. while an editor replaces it).
fn read_quietly(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Re-reads the configuration and applies it; a bad file is reported and changes nothing.
async fn reload(args: &Args, relay: &Relay) {
    let result = match load(args) {
        Ok(config) => relay.reload(&config).await.map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    match result {
        Ok(report) if args.json => println!(
            "{}",
            serde_json::json!({
                "event": "reloaded",
                "changed": report.changed,
                "restart_needed": report.restart_needed,
                "ended_allocations": report.ended_allocations,
            })
        ),
        Ok(report) => println!(
            "configuration reloaded: changed {:?}, needing a restart {:?}, {} allocations ended",
            report.changed, report.restart_needed, report.ended_allocations
        ),
        Err(err) => {
            error!(error = %format!("{err:#}"), "configuration not reloaded; the old one stays");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "error", "kind": "reload", "message": format!("{err:#}")})
                );
            }
        }
    }
}
