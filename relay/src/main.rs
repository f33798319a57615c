//! `conclave-relay` command line: parse flags, read the TOML config, run until Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use conclave_relay::{Config, Relay};
use libp2p::Multiaddr;

/// DHT bootstrap, circuit relay and STUN/TURN for Conclave meetings. Sees only ciphertext.
#[derive(Debug, Parser)]
#[command(name = "conclave-relay", version)]
struct Args {
    /// TOML configuration file (every field optional; see docs/relay.md).
    #[arg(long)]
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
    #[arg(long)]
    json: bool,
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
    if let Err(err) = run(args).await {
        eprintln!("conclave-relay: {err:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
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
        if let Some(metrics) = metrics {
            println!("  metrics and health: http://{metrics}/metrics, /healthz");
        }
    }
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    relay.shutdown();
    Ok(())
}
