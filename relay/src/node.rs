//! The relay's libp2p node (Kademlia server, identify, ping, circuit relay v2 server, TURN
//! credentials) and the start-up of everything else.
//!
//! [`Relay::start`] loads (or creates) the relay's identity key in the data directory,
//! starts the STUN/TURN server ([`crate::turn`]) and the metrics/health endpoint
//! ([`crate::health`]) when configured, binds the libp2p listeners, waits until each reports
//! its address, and spawns the node task. Everything stops when [`Relay::shutdown`] is
//! called or the handle is dropped.
//!
//! [`Relay::reload`] applies a changed configuration without dropping calls: the allowlist,
//! the TURN peer policy, quotas, caps and TCP limits change in place (an identity removed
//! from the allowlist loses its allocations at once); keys that need a restart are reported.
//!
//! TURN credentials (`/conclave/turn/1.0.0`, see [`conclave_core::proto::turn`]): a request
//! arrives on an authenticated libp2p connection, so its peer id is the requester's
//! identity; the [`Issuer`] answers with credentials if the allowlist
//! admits it and with a refusal otherwise. Both are counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use conclave_core::identity::Identity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use conclave_core::net::behaviour::{CONTROL_TIMEOUT, IDENTIFY_PROTOCOL, KAD_PROTOCOL, kad_config};
use conclave_core::net::codec::{TURN_PROTOCOL, TurnCodec};
use conclave_core::net::handover::HandoverTransport;
use conclave_core::net::swarm::{self, SwarmConfig, SwarmError};
use conclave_core::proto::turn::{TurnRefusal, TurnResponse};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, ping, relay};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{CircuitConfig, Config};
use crate::health::{self, Health};
use crate::issuer::{IssuedServer, Issuer};
use crate::metrics::Metrics;
use crate::private_file::write_private;
use crate::turn::{TurnError, TurnServer, load_secret};

/// How long connections without open streams stay open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long start-up waits for the listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

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
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The TURN server could not start.
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// The metrics endpoint could not be bound.
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
    turn: request_response::Behaviour<TurnCodec>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings that changed and are in effect now.
    pub changed: Vec<&'static str>,
    /// Settings that changed in the file but need a restart (the old values stay).
    pub restart_needed: Vec<&'static str>,
    /// Allocations ended because their identity left the allowlist.
    pub ended_allocations: usize,
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    /// The configuration in effect (reloadable parts replaced by reloads).
    running: tokio::sync::Mutex<Config>,
    peer_id: PeerId,
    addrs: Vec<Multiaddr>,
    cancel: CancellationToken,
    turn: Option<TurnServer>,
    /// Credentials for the own and external TURN servers (`None` when there is neither).
    issuer: Option<Issuer>,
    metrics_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Relay {
    /// Starts the relay with `config`, keeping its key in `data_dir`.
    pub async fn start(config: &Config, data_dir: &Path) -> Result<Self, RelayError> {
        config.validate()?;
        warn_about_access(config);
        let identity = load_or_create_key(data_dir)?;
        let peer_id = identity.peer_id();
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let cancel = CancellationToken::new();
        let turn = if config.turn.enabled {
            let allowlist = config.access.allowlist()?;
            Some(TurnServer::start(&config.turn, data_dir, allowlist, Arc::clone(&metrics)).await?)
        } else {
            None
        };
        let issuer = issuer_for(config, turn.as_ref())?;
        health.turn.store(true, Ordering::Relaxed);
        let metrics_addr = if config.metrics.enabled {
            let addr = config.metrics.listen;
            let served = health::serve(
                addr,
                Arc::clone(&metrics),
                Arc::clone(&health),
                cancel.clone(),
            );
            Some(
                served
                    .await
                    .map_err(|source| RelayError::Metrics { addr, source })?,
            )
        } else {
            None
        };
        let shared_port = turn.as_ref().and_then(shared_port_transport);
        let mut listen = config.listen.clone();
        listen.extend(shared_port.as_ref().map(|t| t.listen_addr().clone()));
        let mut swarm = build_swarm(&identity, &config.circuit, shared_port)?;
        let addrs = swarm::listen(&mut swarm, &listen, LISTEN_WAIT)
            .await
            .map_err(|e| match e {
                SwarmError::Listen { addr, reason } => RelayError::Listen { addr, reason },
                other => RelayError::Network(other.to_string()),
            })?;
        let node = Node {
            swarm,
            issuer: issuer.clone(),
            metrics: Arc::clone(&metrics),
            health,
        };
        tokio::spawn(node.run(cancel.clone()));
        let addrs = addrs
            .into_iter()
            .map(|a| a.with(Protocol::P2p(peer_id)))
            .collect();
        Ok(Self {
            running: tokio::sync::Mutex::new(config.clone()),
            peer_id,
            addrs,
            cancel,
            turn,
            issuer,
            metrics_addr,
            metrics,
        })
    }

    /// The TURN server's UDP address, if TURN is on.
    pub fn turn_udp(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(TurnServer::udp_addr)
    }

    /// The TURN server's TCP address, if TURN over TCP is on.
    pub fn turn_tcp(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(TurnServer::tcp_addr)
    }

    /// The TURN-over-TLS address, if TLS is on.
    pub fn turn_tls(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(TurnServer::tls_addr)
    }

    /// The pin of the TURN-over-TLS certificate, if TLS is on.
    pub fn turn_tls_pin(&self) -> Option<conclave_core::proto::turn::CertificatePin> {
        self.turn.as_ref().and_then(|t| t.issued().tls_pin)
    }

    /// The ICE URLs handed out with credentials.
    pub fn turn_urls(&self) -> Vec<String> {
        self.turn
            .as_ref()
            .map(|t| t.issued().urls)
            .unwrap_or_default()
    }

    /// The metrics/health endpoint's address, if on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The relay's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The relay's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Full multiaddrs (ending in `/p2p/<id>`) clients can use as `--relay`.
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// Applies `new` (a re-read configuration file) without dropping calls: see
    /// [`ReloadReport`] and [`crate::turn::TurnServer::reload`].
    pub async fn reload(&self, new: &Config) -> Result<ReloadReport, RelayError> {
        let result = self.apply(new).await;
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.metrics
            .config_reloads
            .get_or_create(&[("result", label)])
            .inc();
        result
    }

    async fn apply(&self, new: &Config) -> Result<ReloadReport, RelayError> {
        new.validate()?;
        let allowlist = new.access.allowlist()?;
        let mut running = self.running.lock().await;
        let report_base = ReloadReport {
            changed: running.reloadable_differences(new),
            restart_needed: running.restart_needed(new),
            ended_allocations: 0,
        };
        // Take the reloadable settings only; the rest keeps its running values.
        let mut applied = running.clone();
        applied.access = new.access.clone();
        let (turn, from) = (&mut applied.turn, &new.turn);
        turn.allow_peers = from.allow_peers.clone();
        turn.allow_loopback_peers = from.allow_loopback_peers;
        turn.credential_ttl = from.credential_ttl;
        turn.max_allocations_per_identity = from.max_allocations_per_identity;
        turn.bandwidth_per_identity = from.bandwidth_per_identity;
        turn.max_allocations = from.max_allocations;
        turn.max_bandwidth = from.max_bandwidth;
        turn.max_allocations_per_second = from.max_allocations_per_second;
        turn.max_tcp_connections = from.max_tcp_connections;
        turn.max_tcp_connections_per_ip = from.max_tcp_connections_per_ip;
        turn.tcp_handshake_timeout = from.tcp_handshake_timeout;
        turn.tcp_idle_timeout = from.tcp_idle_timeout;
        if let Some(issuer) = &self.issuer {
            issuer.set_policy(allowlist.clone(), applied.turn.credential_ttl);
        }
        let ended_allocations = match &self.turn {
            Some(server) => server.reload(&applied.turn, allowlist).await,
            None => 0,
        };
        if !report_base.changed.is_empty() {
            warn_about_access(&applied);
        }
        *running = applied;
        let report = ReloadReport {
            ended_allocations,
            ..report_base
        };
        info!(
            changed = ?report.changed,
            restart_needed = ?report.restart_needed,
            ended_allocations,
            "configuration reloaded"
        );
        if !report.restart_needed.is_empty() {
            warn!(keys = ?report.restart_needed, "these settings change only after a restart");
        }
        Ok(report)
    }

    /// Stops the node.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// Whether an address is reachable from other hosts (not loopback).
fn reachable(ip: std::net::IpAddr) -> bool {
    !ip.is_loopback()
}

/// Warns when the TURN service is open to anyone on an address others can reach, or
/// closed to everyone.
fn warn_about_access(config: &Config) {
    if !config.turn.enabled {
        return;
    }
    let public_listen = config.listen.iter().any(|addr| {
        addr.iter().any(|p| match p {
            Protocol::Ip4(ip) => reachable(ip.into()),
            Protocol::Ip6(ip) => reachable(ip.into()),
            Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => true,
            _ => false,
        })
    }) || reachable(config.turn.listen.ip());
    if config.access.open && public_listen {
        warn!(
            "this relay issues TURN credentials to ANYONE who connects ([access] open = true): \
             anyone can relay media through it at your bandwidth. For a site, close it: \
             `conclave-relay --config FILE allow add <peer id>` (see docs/relay.md)"
        );
    }
    if !config.access.open && config.access.allow.is_empty() {
        warn!("[access] allow is empty and the relay is closed: nobody gets TURN credentials");
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

/// The credential issuer for the relay's own TURN server (if it runs) and the external ones
/// of `config` (their secrets read now).
fn issuer_for(config: &Config, own: Option<&TurnServer>) -> Result<Option<Issuer>, RelayError> {
    let mut servers: Vec<IssuedServer> = own.map(TurnServer::issued).into_iter().collect();
    for external in &config.turn.external {
        servers.push(IssuedServer {
            secret: load_secret(&external.secret_file)?,
            urls: external.urls.clone(),
            tls_pin: external.tls_pin,
        });
    }
    if !config.turn.external.is_empty() {
        info!(
            servers = config.turn.external.len(),
            "issuing TURN credentials for external servers too"
        );
    }
    Ok(Issuer::new(
        servers,
        config.access.allowlist()?,
        config.turn.credential_ttl,
    ))
}

/// The libp2p side of the TURN-over-TLS port, when libp2p shares it: a transport that
/// listens on that port's address and reports it on each of this host's addresses (when
/// the listener is on every interface).
fn shared_port_transport(turn: &TurnServer) -> Option<HandoverTransport> {
    let incoming = turn.take_libp2p_connections()?;
    let listen = turn.tls_addr()?;
    let reported = if listen.ip().is_unspecified() {
        match if_addrs::get_if_addrs() {
            Ok(interfaces) => interfaces
                .iter()
                .map(if_addrs::Interface::ip)
                .filter(|ip| ip.is_ipv4() == listen.is_ipv4())
                .map(|ip| SocketAddr::new(ip, listen.port()))
                .collect(),
            Err(err) => {
                warn!(error = %err, "cannot list this host's addresses for the shared port");
                Vec::new()
            }
        }
    } else {
        vec![listen]
    };
    // A listener that reports no address would never come up.
    let reported = if reported.is_empty() {
        vec![listen]
    } else {
        reported
    };
    Some(HandoverTransport::new(listen, reported, incoming))
}

/// The relay's swarm: the shared transport stack ([`swarm::build`]), with the connections
/// handed over from the TURN-over-TLS port if `shared_port` is set, under a Kademlia
/// server, identify, the circuit relay with `circuit`'s limits, ping and the TURN
/// credential protocol.
fn build_swarm(
    identity: &Identity,
    circuit: &CircuitConfig,
    shared_port: Option<HandoverTransport>,
) -> Result<Swarm<RelayBehaviour>, RelayError> {
    let peer_id = identity.peer_id();
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
    let mut swarm_config = SwarmConfig::new(IDLE_CONNECTION_TIMEOUT);
    if let Some(shared_port) = shared_port {
        swarm_config = swarm_config.with_handover(shared_port);
    }
    swarm::build(identity.libp2p_keypair(), swarm_config, |key, _| {
        let mut kad = kad::Behaviour::with_config(
            peer_id,
            kad::store::MemoryStore::new(peer_id),
            kad_config(),
        );
        kad.set_mode(Some(kad::Mode::Server));
        Ok(RelayBehaviour {
            kad,
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.to_owned(),
                key.public(),
            )),
            relay: relay::Behaviour::new(peer_id, relay_config),
            ping: ping::Behaviour::new(ping::Config::new()),
            turn: request_response::Behaviour::with_codec(
                TurnCodec::default(),
                [(TURN_PROTOCOL, request_response::ProtocolSupport::Inbound)],
                request_response::Config::default().with_request_timeout(CONTROL_TIMEOUT),
            ),
        })
    })
    .map_err(|e| RelayError::Network(e.to_string()))
}

/// The node task's state.
struct Node {
    swarm: Swarm<RelayBehaviour>,
    issuer: Option<Issuer>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Node {
    async fn run(mut self, cancel: CancellationToken) {
        info!(peer_id = %self.swarm.local_peer_id(), "relay running");
        self.health.node.store(true, Ordering::Relaxed);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        self.health.node.store(false, Ordering::Relaxed);
        info!("relay stopped");
    }

    fn on_event(&mut self, event: SwarmEvent<RelayBehaviourEvent>) {
        let swarm = &mut self.swarm;
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
            SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(event)) => self.on_relay_event(event),
            SwarmEvent::Behaviour(RelayBehaviourEvent::Turn(
                request_response::Event::Message {
                    peer,
                    message: request_response::Message::Request { channel, .. },
                    ..
                },
            )) => {
                let response = self.answer_turn(peer);
                if self
                    .swarm
                    .behaviour_mut()
                    .turn
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!(%peer, "TURN credential requester went away");
                }
            }
            _ => {}
        }
    }

    fn answer_turn(&self, peer: PeerId) -> TurnResponse {
        let Some(issuer) = &self.issuer else {
            return TurnResponse::Refused(TurnRefusal::Unavailable);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = issuer.issue(&peer, now);
        if matches!(
            response,
            TurnResponse::Credentials(_) | TurnResponse::Servers(_)
        ) {
            self.metrics.credentials_issued.inc();
            debug!(%peer, "TURN credentials issued");
        } else {
            self.metrics.credentials_refused.inc();
            warn!(%peer, "TURN credentials refused: not on the allowlist");
        }
        response
    }

    fn on_relay_event(&self, event: relay::Event) {
        debug!(?event, "circuit relay");
        match event {
            relay::Event::CircuitReqAccepted { .. } => {
                self.metrics.circuits.inc();
                self.metrics.circuits_total.inc();
            }
            relay::Event::CircuitClosed { .. } => {
                self.metrics.circuits.dec();
            }
            relay::Event::ReservationReqAccepted { renewed, .. } => {
                self.metrics.reservation_requests.inc();
                if !renewed {
                    self.metrics.reservations.inc();
                }
            }
            relay::Event::ReservationReqDenied { .. } => {
                self.metrics.reservation_requests.inc();
                self.metrics.reservations_refused.inc();
            }
            // libp2p still reports these (deprecated in favour of its own logs): requests all
            // the same.
            #[allow(deprecated)]
            relay::Event::ReservationReqAcceptFailed { .. } => {
                self.metrics.reservation_requests.inc();
            }
            #[allow(deprecated)]
            relay::Event::ReservationReqDenyFailed { .. } => {
                self.metrics.reservation_requests.inc();
                self.metrics.reservations_refused.inc();
            }
            relay::Event::ReservationClosed { .. } | relay::Event::ReservationTimedOut { .. } => {
                self.metrics.reservations.dec();
            }
            _ => {}
        }
    }
}
