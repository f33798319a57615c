//! What the swarm reports, fed to the routing, the meeting machine and the TURN state; and
//! the routing's decisions carried out on the swarm.
//!
//! Connection bookkeeping, reservations, redials and hole-punching retries are
//! [`crate::net::routing`]'s decisions; this file translates swarm events into its inputs
//! and its [`Action`]s into swarm calls. A relay that connects also triggers what the
//! runtime wants from it: a joiner greets the host again over the new circuit, TURN
//! credentials are asked for, the DHT is bootstrapped and the meeting announced.

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, dcutr, identify, kad, mdns, ping, relay};
use tracing::{debug, info, warn};

use super::media_link::MediaInput;
use super::{Driver, Event, clock};
use crate::invite::peer_of;
use crate::net::behaviour::{BehaviourEvent, KAD_PROTOCOL};
use crate::net::routing::{Action, is_dialable, is_relayed, remote_of};
use crate::proto::control::MAX_ADDRS;

impl Driver {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.on_new_listen_addr(address),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connection_established(peer_id, connection_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                debug!(peer = %peer_id, remaining = num_established, "connection closed");
                self.routing.handle_connection_closed(
                    clock::now(),
                    peer_id,
                    connection_id,
                    num_established,
                );
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => self.on_listener_closed(listener_id, &addresses, reason.as_ref().err()),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "dial failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_new_listen_addr(&mut self, address: Multiaddr) {
        self.swarm.add_external_address(address.clone());
        if is_relayed(&address) {
            info!(%address, "reachable through a relay");
            // Announce the new way in at once.
            self.provide();
        }
        self.routing.add_listen_addr(address);
        let addrs: Vec<Multiaddr> = self
            .routing
            .listen_addrs()
            .iter()
            .take(MAX_ADDRS)
            .cloned()
            .collect();
        if let Some(session) = self.session.as_mut() {
            session.machine.set_local_addrs(addrs);
        }
    }

    fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        debug!(peer = %peer, addr = %endpoint.get_remote_address(), "connected");
        let dialed = endpoint
            .is_dialer()
            .then(|| endpoint.get_remote_address().clone());
        self.routing.handle_connection_established(
            clock::now(),
            peer,
            connection,
            remote_of(endpoint),
            dialed,
        );
        if !self.routing.is_relay(&peer) {
            return;
        }
        // A joiner's first hello to the invite's host went out before any relay was
        // connected and failed at once: greet again now that a circuit can carry it,
        // instead of at the next look-up.
        self.greet_host_again();
        // TURN credentials for the media plane (fresh ones after a relay restart).
        if self.media.is_on() && self.turn.relay_connected(peer) {
            self.fetch_ice_servers(None);
        }
        if let Err(err) = self.swarm.behaviour_mut().kad.bootstrap() {
            debug!(error = %err, "bootstrap not possible yet");
        }
        self.provide();
    }

    fn on_listener_closed(
        &mut self,
        listener: ListenerId,
        addresses: &[Multiaddr],
        error: Option<&std::io::Error>,
    ) {
        for address in addresses {
            self.swarm.remove_external_address(address);
        }
        let in_meeting = self.in_meeting();
        let relay_connected = self
            .routing
            .reservation_relay(listener)
            .is_some_and(|relay| self.swarm.is_connected(&relay));
        self.routing.handle_listener_closed(
            clock::now(),
            listener,
            addresses,
            error,
            relay_connected,
            in_meeting,
        );
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Control(event) => self.on_control_event(event),
            BehaviourEvent::Turn(event) => self.on_turn_event(event),
            BehaviourEvent::Kad(event) => self.on_kad_event(event),
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if !renewal {
                    debug!(relay = %relay_peer_id, "relay reservation accepted");
                }
                self.routing.handle_reservation_accepted(relay_peer_id);
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info);
            }
            BehaviourEvent::Ping(event) => self.on_ping(event),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => info!(peer = %remote_peer_id, "hole punched: direct connection"),
                Err(err) => {
                    info!(peer = %remote_peer_id, error = %err, "hole punching failed; staying relayed");
                    self.routing
                        .handle_hole_punch_failed(clock::now(), remote_peer_id);
                }
            },
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_mdns_found(found),
            _ => {}
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if self.routing.is_relay(&peer) {
            self.routing
                .handle_relay_identified(peer, &info.listen_addrs, &info.protocols);
            self.turn.handle_relay_protocols(peer, &info.protocols);
        }
        let serves_kad = info.protocols.contains(&KAD_PROTOCOL);
        for addr in info.listen_addrs.into_iter().filter(is_dialable) {
            if serves_kad {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            self.routing.remember_addr(peer, addr);
        }
    }

    fn on_ping(&mut self, event: ping::Event) {
        let ping::Event {
            peer,
            connection,
            result,
        } = event;
        match result {
            Ok(rtt) => {
                let now = clock::now();
                self.routing.handle_ping_ok(now, peer, connection, rtt);
                let rtt = self.routing.rtt(&peer);
                // Any answer (a relay's, a DHT node's, a member's) proves our own network
                // works.
                self.on_network_heard(now);
                if let Some(session) = self.session.as_mut() {
                    session.machine.set_rtt(peer, rtt);
                }
            }
            Err(err) => debug!(peer = %peer, error = %err, "ping failed"),
        }
    }

    fn on_mdns_found(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        for (peer, addr) in found {
            debug!(peer = %peer, %addr, "found on the LAN");
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            self.routing.remember_addr(peer, addr);
            let dial = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            let _ = self.swarm.dial(dial);
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed { result, .. } = event else {
            return;
        };
        match result {
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) => {
                let local = *self.swarm.local_peer_id();
                for peer in providers.into_iter().filter(|p| *p != local) {
                    debug!(peer = %peer, "found a meeting provider");
                    // Dial now, while the query still holds the provider's addresses, and
                    // through our relays at once: behind NAT its listen addresses are
                    // private and a dial to them hangs until QUIC's handshake timeout, and
                    // the hello queued behind this dial would wait as long.
                    let dial = DialOpts::peer_id(peer)
                        .addresses(self.routing.routes_to(&peer))
                        .extend_addresses_through_behaviour()
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let _ = self.swarm.dial(dial);
                    self.offer_candidate(peer);
                }
            }
            kad::QueryResult::GetClosestPeers(Ok(ok)) => {
                let hint = self.session.as_ref().and_then(|s| s.host_hint);
                for info in ok.peers {
                    if Some(info.peer_id) == hint {
                        for addr in info.addrs {
                            self.routing.remember_addr(info.peer_id, addr);
                        }
                        self.offer_candidate(info.peer_id);
                    }
                }
            }
            kad::QueryResult::StartProviding(Err(err)) => {
                debug!(error = ?err, "provider announcement reached no peer yet");
            }
            _ => {}
        }
    }

    /// Carries out the routing's decisions on the swarm. Returns whether there were any.
    pub(super) fn drain_routing(&mut self) -> bool {
        let mut any = false;
        while let Some(action) = self.routing.poll_action() {
            any = true;
            match action {
                Action::Dial {
                    peer,
                    addrs,
                    condition,
                    what,
                } => {
                    debug!(peer = %peer, what, "dialing");
                    let dial = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(condition)
                        .build();
                    if let Err(err) = self.swarm.dial(dial) {
                        debug!(peer = %peer, what, error = %err, "dial not started");
                    }
                }
                Action::Reserve { relay, addr } => match self.swarm.listen_on(addr.clone()) {
                    Ok(listener) => {
                        debug!(relay = %relay, "reserving a relay circuit");
                        self.routing.handle_reserving(relay, listener);
                    }
                    Err(err) => {
                        warn!(%addr, error = %err, "cannot reserve a relay circuit");
                        self.routing.handle_reserve_failed(relay);
                    }
                },
                Action::Close(close) => {
                    self.swarm.close_connection(close.connection);
                }
                Action::PathChanged {
                    peer,
                    direct,
                    remote,
                } => self.outbox.push(Event::ControlPath {
                    peer_id: peer,
                    path: if direct { "direct" } else { "relayed" },
                    remote,
                }),
                // Our relayed media paths may have gone with it (a restarted TURN server
                // keeps no allocations); the media plane repairs them once it is back.
                Action::RelayLost(_) => {
                    self.media.pass(MediaInput::RelayLost);
                }
            }
        }
        any
    }

    /// A relay: a DHT bootstrap node we also reserve a circuit with once connected, so that
    /// peers who cannot reach us directly (NAT) reach us through it.
    pub(super) fn add_relay(&mut self, addr: &Multiaddr) {
        if let (Some(allowed), Some(relay)) = (&self.direct_dials, peer_of(addr)) {
            allowed.allow(relay);
        }
        self.routing.add_relay(addr);
        self.add_bootstrap(addr);
    }

    fn add_bootstrap(&mut self, addr: &Multiaddr) {
        let Some(peer) = peer_of(addr) else {
            warn!(%addr, "bootstrap address without /p2p/ peer id ignored");
            return;
        };
        self.swarm
            .behaviour_mut()
            .kad
            .add_address(&peer, addr.clone());
        self.routing.remember_addr(peer, addr.clone());
        if let Err(err) = self.swarm.dial(addr.clone()) {
            warn!(%addr, error = %err, "cannot dial bootstrap peer");
        }
    }
}
