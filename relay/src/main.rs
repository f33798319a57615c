//! `conclave-relay` command line: parse flags, read the TOML config, run until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use conclave_relay::{Config, Relay};
use libp2p::Multiaddr;

/// DHT bootstrap and circuit relay for Conclave meetings. Sees only ciphertext.
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
    /// One JSON object per line on stdout instead of human text.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
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
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "event": "listening", "peer_id": relay.peer_id().to_string(), "addrs": addrs })
        );
    } else {
        println!("conclave-relay {} listening on:", relay.peer_id());
        for addr in &addrs {
            println!("  {addr}");
        }
    }
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    relay.shutdown();
    Ok(())
}
