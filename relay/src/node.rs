//! The relay's libp2p node: Kademlia server, identify, ping, circuit relay v2 server.
//!
//! [`Relay::start`] loads (or creates) the relay's identity key in the data directory, binds
//! the listeners, waits until each reports its address, and spawns the node task. The task
//! stops when [`Relay::shutdown`] is called or the handle is dropped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conclave_core::identity::Identity;
use conclave_core::net::behaviour::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, kad_config};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, noise, ping, relay, tcp, yamux};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::Config;

/// File name of the relay's secret key inside the data directory.
pub const KEY_FILE: &str = "relay.key";

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The key file could not be read or written.
    #[error("cannot use the key file {path}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("the key file {path} is corrupt (expected 32 bytes)")]
    CorruptKey {
        /// The file.
        path: PathBuf,
    },
    /// The libp2p stack failed to build.
    #[error("network: {0}")]
    Network(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
struct RelayBehaviour {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    relay: relay::Behaviour,
    ping: ping::Behaviour,
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    peer_id: PeerId,
    addrs: Vec<Multiaddr>,
    cancel: CancellationToken,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Relay {
    /// Starts the relay with `config`, keeping its key in `data_dir`.
    pub async fn start(config: &Config, data_dir: &Path) -> Result<Self, RelayError> {
        let identity = load_or_create_key(data_dir)?;
        let peer_id = identity.peer_id();
        let circuit = &config.circuit;
        let relay_config = relay::Config {
            max_reservations: circuit.max_reservations,
            max_reservations_per_peer: circuit.max_reservations_per_peer,
            reservation_duration: circuit.reservation_duration,
            max_circuits: circuit.max_circuits,
            max_circuits_per_peer: circuit.max_circuits_per_peer,
            max_circuit_duration: circuit.max_circuit_duration,
            max_circuit_bytes: circuit.max_circuit_bytes,
            ..relay::Config::default()
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity.libp2p_keypair())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| RelayError::Network(e.to_string()))?
            .with_quic()
            .with_behaviour(|key| {
                let mut kad = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::new(peer_id),
                    kad_config(),
                );
                kad.set_mode(Some(kad::Mode::Server));
                RelayBehaviour {
                    kad,
                    identify: identify::Behaviour::new(identify::Config::new(
                        IDENTIFY_PROTOCOL.to_owned(),
                        key.public(),
                    )),
                    relay: relay::Behaviour::new(peer_id, relay_config),
                    ping: ping::Behaviour::new(ping::Config::new()),
                }
            })
            .map_err(|e| RelayError::Network(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| RelayError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        let addrs = wait_for_listeners(&mut swarm, config.listen.len()).await?;
        let cancel = CancellationToken::new();
        tokio::spawn(run(swarm, cancel.clone()));
        let addrs = addrs
            .into_iter()
            .map(|a| a.with(Protocol::P2p(peer_id)))
            .collect();
        Ok(Self {
            peer_id,
            addrs,
            cancel,
        })
    }

    /// The relay's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Full multiaddrs (ending in `/p2p/<id>`) clients can use as `--relay`.
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// Stops the node.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

fn load_or_create_key(data_dir: &Path) -> Result<Identity, RelayError> {
    let path = data_dir.join(KEY_FILE);
    let io_err = |source| RelayError::KeyFile {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Identity::from_secret_bytes(&bytes)
            .map_err(|_| RelayError::CorruptKey { path: path.clone() }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io_err)?;
            let identity = Identity::generate();
            write_private(&path, identity.secret_bytes().as_ref()).map_err(io_err)?;
            info!(peer_id = %identity.peer_id(), "created relay identity");
            Ok(identity)
        }
        Err(err) => Err(io_err(err)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

async fn wait_for_listeners(
    swarm: &mut Swarm<RelayBehaviour>,
    listeners: usize,
) -> Result<Vec<Multiaddr>, RelayError> {
    let mut addrs = Vec::new();
    let mut reported = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reported.len() < listeners {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| RelayError::Network("listeners did not come up in time".into()))?;
        if let SwarmEvent::NewListenAddr {
            listener_id,
            address,
        } = event
        {
            reported.insert(listener_id);
            swarm.add_external_address(address.clone());
            addrs.push(address);
        }
    }
    Ok(addrs)
}

async fn run(mut swarm: Swarm<RelayBehaviour>, cancel: CancellationToken) {
    info!(peer_id = %swarm.local_peer_id(), "relay running");
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            event = swarm.select_next_some() => on_event(&mut swarm, event),
        }
    }
    info!("relay stopped");
}

fn on_event(swarm: &mut Swarm<RelayBehaviour>, event: SwarmEvent<RelayBehaviourEvent>) {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => {
            debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "client connected");
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established,
            ..
        } => {
            debug!(peer = %peer_id, remaining = num_established, "client disconnected");
        }
        SwarmEvent::NewListenAddr { address, .. } => {
            swarm.add_external_address(address);
        }
        SwarmEvent::Behaviour(RelayBehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) if info.protocols.contains(&KAD_PROTOCOL) => {
            for addr in info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(event)) => {
            debug!(?event, "circuit relay");
        }
        _ => {}
    }
}
