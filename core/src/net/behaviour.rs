//! The composed libp2p behaviour of a Conclave client.
// The derive generates an undocumented `BehaviourEvent` enum (one variant per child).
#![allow(missing_docs)]

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, dcutr, identify, identity, kad, mdns, ping, relay, request_response};

use super::codec::{CONTROL_PROTOCOL, ControlCodec};
use super::codec::{TURN_PROTOCOL, TurnCodec};

/// Kademlia protocol name of Conclave's private DHT (clients and relays).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/conclave/kad/1.0.0");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/conclave/1.0.0";
/// How long a control request may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's behaviour: every child the control plane uses.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
pub struct Behaviour {
    /// Private Kademlia DHT: bootstrap and rendezvous records.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Exchanges listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// LAN discovery (off in tests on a shared host).
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Circuit relay v2 client (reservations and relayed dials).
    pub relay_client: relay::client::Behaviour,
    /// Direct connection upgrade through relay: on every relayed connection both ends
    /// exchange their observed addresses and dial each other at once (hole punching).
    /// Off in relay-only mode, where other members must not learn our address.
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// Proves every connection and measures its RTT, every second ([`super::routing::paths`]).
    pub ping: ping::Behaviour,
    /// Conclave control messages.
    pub control: request_response::Behaviour<ControlCodec>,
    /// TURN credentials from relays (outbound only).
    pub turn: request_response::Behaviour<TurnCodec>,
}

/// The Kademlia configuration shared by clients and relays.
pub fn kad_config() -> kad::Config {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config.set_query_timeout(Duration::from_secs(20));
    config.set_provider_record_ttl(Some(Duration::from_secs(6 * 3600)));
    config
}

impl Behaviour {
    /// Builds the behaviour for `key`, with mDNS if `mdns` is set and DCUtR hole punching
    /// if `hole_punching` is. Without hole punching (relay-only) identify does not tell
    /// peers our listen addresses either.
    pub fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        mdns: bool,
        hole_punching: bool,
    ) -> std::io::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let mut kad = kad::Behaviour::with_config(
            peer_id,
            kad::store::MemoryStore::new(peer_id),
            kad_config(),
        );
        // Clients serve the DHT too: a LAN meeting has no other servers.
        kad.set_mode(Some(kad::Mode::Server));
        let mdns = if mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        Ok(Self {
            kad,
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_hide_listen_addrs(!hole_punching),
            ),
            mdns: Toggle::from(mdns),
            relay_client,
            dcutr: Toggle::from(hole_punching.then(|| dcutr::Behaviour::new(peer_id))),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(super::routing::paths::PING_INTERVAL)
                    .with_timeout(super::routing::paths::PING_TIMEOUT),
            ),
            control: request_response::Behaviour::with_codec(
                ControlCodec::default(),
                [(CONTROL_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(CONTROL_TIMEOUT),
            ),
            turn: request_response::Behaviour::with_codec(
                TurnCodec::default(),
                [(TURN_PROTOCOL, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(CONTROL_TIMEOUT),
            ),
        })
    }
}
