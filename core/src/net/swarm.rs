//! The one swarm builder of Conclave, used by the client runtime and by the relay.
//!
//! Transports: TCP (Noise, yamux, `TCP_NODELAY`) and QUIC v1, plus the circuit relay v2
//! client transport when [`SwarmConfig::with_relay_client`] is set (clients, which reach
//! and are reached through relays; a relay itself is no relay client). Connections without
//! open streams close after [`SwarmConfig::idle_timeout`]. In relay-only mode
//! ([`SwarmConfig::with_relay_only`]) TCP and QUIC dial nobody but the relays
//! ([`super::relay_only`]). A relay sharing a TCP port with TURN over TLS
//! ([`SwarmConfig::with_handover`]) also takes the connections handed over on it.
//!
//! [`listen`] binds the listen addresses and waits until each has reported its address
//! (each is also recorded as an external address), so that a caller starts with the
//! addresses it can hand out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, noise, quic, relay, tcp, yamux};

use super::handover::HandoverTransport;
use super::relay_only::{DirectDials, GuardedTransport};

/// Why a swarm could not be built or bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// A transport (TCP, QUIC or the relay client) could not be set up.
    #[error("{0}")]
    Transport(String),
    /// The behaviour could not be built.
    #[error("{0}")]
    Behaviour(String),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A listener failed before reporting its address.
    #[error("listener failed: {0}")]
    Listener(String),
    /// Not every listener reported its address within the wait.
    #[error("listeners did not come up in time")]
    ListenTimeout,
}

/// Connection settings of a swarm.
#[derive(Debug)]
pub struct SwarmConfig {
    /// How long a connection without open streams stays open.
    pub idle_timeout: Duration,
    /// Whether the circuit relay v2 client transport is included.
    pub relay_client: bool,
    /// Relay-only: TCP and QUIC dial only the peers this list allows (the relays).
    pub direct_dials: Option<Arc<DirectDials>>,
    /// TCP connections accepted on a port shared with another protocol (the relay's TURN
    /// over TLS), upgraded like the TCP transport's.
    pub handover: Option<HandoverTransport>,
}

impl SwarmConfig {
    /// Connections idle out after `idle_timeout`; no relay client.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            relay_client: false,
            direct_dials: None,
            handover: None,
        }
    }

    /// Also takes the connections `handover` is handed (see [`super::handover`]).
    pub fn with_handover(mut self, handover: HandoverTransport) -> Self {
        self.handover = Some(handover);
        self
    }

    /// Includes the circuit relay v2 client transport (or not).
    pub fn with_relay_client(mut self, relay_client: bool) -> Self {
        self.relay_client = relay_client;
        self
    }

    /// Relay-only: the relay client, and direct dials only to what `allowed` allows.
    pub fn with_relay_only(mut self, allowed: Arc<DirectDials>) -> Self {
        self.relay_client = true;
        self.direct_dials = Some(allowed);
        self
    }
}

/// A behaviour constructor's error.
pub type BehaviourError = Box<dyn std::error::Error + Send + Sync>;

/// Builds a swarm for `keypair` with the transports of the [module docs](self) and the
/// behaviour `behaviour` makes from the key and, if [`SwarmConfig::relay_client`] is set,
/// the relay client behaviour (else `None`).
pub fn build<B, F>(
    keypair: Keypair,
    config: SwarmConfig,
    behaviour: F,
) -> Result<Swarm<B>, SwarmError>
where
    B: NetworkBehaviour,
    F: FnOnce(&Keypair, Option<relay::client::Behaviour>) -> Result<B, BehaviourError>,
{
    let idle = config.idle_timeout;
    if let Some(handover) = config.handover {
        return libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| shared_port_transports(key, handover))
            .map_err(|e| SwarmError::Transport(e.to_string()))?
            .with_behaviour(|key| behaviour(key, None))
            .map_err(|e| SwarmError::Behaviour(e.to_string()))
            .map(|b| b.with_swarm_config(|c| swarm_config(c, idle)).build());
    }
    if let Some(allowed) = config.direct_dials {
        return libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| guarded_transports(key, allowed))
            .map_err(|e| SwarmError::Transport(e.to_string()))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| SwarmError::Transport(e.to_string()))?
            .with_behaviour(|key, relay| behaviour(key, Some(relay)))
            .map_err(|e| SwarmError::Behaviour(e.to_string()))
            .map(|b| b.with_swarm_config(|c| swarm_config(c, idle)).build());
    }
    let transports = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_quic();
    let swarm = if config.relay_client {
        transports
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| SwarmError::Transport(e.to_string()))?
            .with_behaviour(|key, relay| behaviour(key, Some(relay)))
            .map_err(|e| SwarmError::Behaviour(e.to_string()))?
            .with_swarm_config(|c| swarm_config(c, idle))
            .build()
    } else {
        transports
            .with_behaviour(|key| behaviour(key, None))
            .map_err(|e| SwarmError::Behaviour(e.to_string()))?
            .with_swarm_config(|c| swarm_config(c, idle))
            .build()
    };
    Ok(swarm)
}

/// TCP (Noise, yamux) and QUIC v1, as in the normal build, behind the relay-only guard.
fn guarded_transports(
    key: &Keypair,
    allowed: Arc<DirectDials>,
) -> Result<GuardedTransport, BehaviourError> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    Ok(GuardedTransport::new(tcp_and_quic(key, tcp)?, allowed))
}

/// TCP (Noise, yamux) with the handed-over connections in front, and QUIC v1.
fn shared_port_transports(
    key: &Keypair,
    handover: HandoverTransport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BehaviourError> {
    let tcp = handover
        .or_transport(tcp::tokio::Transport::new(
            tcp::Config::default().nodelay(true),
        ))
        .map(|either, _| either.into_inner());
    tcp_and_quic(key, tcp)
}

/// `tcp` upgraded (multistream-select `V1Lazy`, Noise, yamux), or QUIC v1.
fn tcp_and_quic<T>(key: &Keypair, tcp: T) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BehaviourError>
where
    T: Transport<Output = tcp::tokio::TcpStream> + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let tcp = tcp
        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let quic = quic::tokio::Transport::new(quic::Config::new(key))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    Ok(quic
        .or_transport(tcp)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// The swarm's settings: connections idle for `idle` close, and a new stream's protocol is
/// negotiated lazily (multistream-select `V1Lazy`): the request goes out with the protocol
/// proposal instead of one round trip after it. Every control request, signal and
/// heartbeat is one stream, so this saves a round trip on each (250 ms between two
/// continents, 600 ms over a satellite). Each stream negotiates a single protocol, so the
/// pitfall of lazy negotiation (nested negotiations a listener may misread) does not arise;
/// a peer that does not speak the protocol still refuses it, only as an I/O error after
/// the request instead of a negotiation error before it.
fn swarm_config(config: libp2p::swarm::Config, idle: Duration) -> libp2p::swarm::Config {
    config
        .with_idle_connection_timeout(idle)
        .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
}

/// Listens on every address of `addrs` and waits (at most `wait`) until each listener has
/// reported its address; returns those addresses, each also added as an external address.
pub async fn listen<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    addrs: &[Multiaddr],
    wait: Duration,
) -> Result<Vec<Multiaddr>, SwarmError> {
    for addr in addrs {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| SwarmError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    tokio::time::timeout(wait, listen_addrs(swarm, addrs.len()))
        .await
        .map_err(|_| SwarmError::ListenTimeout)?
}

/// The first address each of `listeners` listeners reports.
async fn listen_addrs<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    listeners: usize,
) -> Result<Vec<Multiaddr>, SwarmError> {
    let mut addrs = Vec::new();
    let mut reported = HashSet::new();
    while reported.len() < listeners {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                reported.insert(listener_id);
                swarm.add_external_address(address.clone());
                addrs.push(address);
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => return Err(SwarmError::Listener(error.to_string())),
            _ => {}
        }
    }
    Ok(addrs)
}
