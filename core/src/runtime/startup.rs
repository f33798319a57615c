//! Start-up: the store, the identity and display name, the swarm and its listeners, the
//! media actor, then the driver's task.
//!
//! [`start`] returns once every listener has reported its address (at most
//! [`LISTEN_WAIT`]), with the handles the [`Client`](crate::Client) keeps: the command
//! queue, the event stream and the cancellation token that stops every task spawned here.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Swarm};
use rand::SeedableRng;
use rand::rngs::{OsRng, StdRng};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::media_link::MediaLink;
use super::outbox::Outbox;
use super::{
    COMMAND_CAPACITY, Command, Driver, EVENT_CAPACITY, Event, IDLE_CONNECTION_TIMEOUT, LISTEN_WAIT,
};
use crate::identity::{Identity, SafetyNumber};
use crate::invite::peer_of;
use crate::net::behaviour::Behaviour;
use crate::net::relay_only::DirectDials;
use crate::net::routing::Routing;
use crate::net::swarm::{self, SwarmConfig, SwarmError};
use crate::net::turn_fetch::TurnFetch;
use crate::store::Store;
use crate::{Config, Error};

/// Most remembered peers added to the DHT at start-up.
const BOOTSTRAP_PEERS: usize = 32;

/// What [`start`] hands to the [`Client`](crate::Client).
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) peer_id: PeerId,
    pub(crate) safety_number: SafetyNumber,
    pub(crate) name: String,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    /// A handle on the store, for the client's own reads and writes.
    pub(crate) store: Store,
    /// The driver's command queue (bounded, [`COMMAND_CAPACITY`]).
    pub(crate) commands: mpsc::Sender<Command>,
    /// The event stream (bounded, [`EVENT_CAPACITY`]; the driver never waits for it).
    pub(crate) events: mpsc::Receiver<Event>,
    /// Stops the driver and the media actor.
    pub(crate) cancel: CancellationToken,
}

/// Opens the store, builds the swarm, binds the listeners, spawns the media actor and the
/// driver.
pub(crate) async fn start(config: Config) -> Result<Started, Error> {
    let store = Store::open(&config.data_dir, &config.store_key)?;
    let identity = store.load_or_create_identity()?;
    let name = display_name(&store, config.name.as_deref())?;
    // Relay-only: no direct listener (no address to hand out), direct dials to relays only.
    let relay_only = config.is_relay_only();
    let direct_dials = relay_only.then(DirectDials::new);
    if let Some(allowed) = &direct_dials {
        config
            .relays
            .iter()
            .filter_map(peer_of)
            .for_each(|relay| allowed.allow(relay));
    }
    let mut swarm = build_swarm(&identity, &config, direct_dials.clone())?;
    let listen = if relay_only {
        Vec::new()
    } else {
        config.listen.clone()
    };
    let listen_addrs = swarm::listen(&mut swarm, &listen, LISTEN_WAIT)
        .await
        .map_err(swarm_error)?;
    let peer_id = identity.peer_id();
    let cancel = CancellationToken::new();
    let mut media_config = config.media.clone();
    if let Some(media) = media_config.as_mut() {
        media.relay_only |= relay_only;
    }
    let media = MediaLink::spawn(peer_id, media_config, &cancel)?;
    let (commands, inbox) = mpsc::channel(COMMAND_CAPACITY);
    let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
    let rng = || StdRng::from_rng(OsRng).map_err(|e| Error::Network(e.to_string()));
    let started = Started {
        peer_id,
        safety_number: identity.safety_number(),
        name: name.clone(),
        listen_addrs: listen_addrs
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(peer_id)))
            .collect(),
        store: store.clone(),
        commands,
        events,
        cancel: cancel.clone(),
    };
    let mut driver = Driver {
        swarm,
        store,
        identity,
        outbox: Outbox::new(events_tx, config.event_backlog),
        config,
        name,
        inbox,
        cancel,
        session: None,
        pending_leave: None,
        requests: HashMap::new(),
        routing: Routing::new(rng()?, listen_addrs),
        turn: TurnFetch::new(rng()?),
        turn_waiters: Vec::new(),
        media,
        rng: rng()?,
        direct_dials,
    };
    driver.bootstrap();
    driver.drain();
    tokio::spawn(driver.run());
    Ok(started)
}

/// A display name others will accept: no control characters, at most
/// [`MAX_NAME_LEN`](crate::proto::control::MAX_NAME_LEN) bytes, cut on a character boundary.
fn sanitize_name(name: &str) -> String {
    let mut clean = String::new();
    for c in name.chars().filter(|c| !c.is_control()) {
        if clean.len() + c.len_utf8() > crate::proto::control::MAX_NAME_LEN {
            break;
        }
        clean.push(c);
    }
    clean
}

/// The configured name (stored for next time), else the stored one, else "anonymous".
fn display_name(store: &Store, configured: Option<&str>) -> Result<String, Error> {
    match configured.map(sanitize_name) {
        Some(name) => {
            store.set_display_name(&name)?;
            Ok(name)
        }
        None => Ok(store
            .display_name()?
            .unwrap_or_else(|| "anonymous".to_owned())),
    }
}

/// The client's swarm: relay client on, mDNS as configured, and hole punching — unless
/// relay-only, where no mDNS, no hole punching and direct dials to `direct_dials` only
/// hide our address from the others.
fn build_swarm(
    identity: &Identity,
    config: &Config,
    direct_dials: Option<Arc<DirectDials>>,
) -> Result<Swarm<Behaviour>, Error> {
    let relay_only = direct_dials.is_some();
    let mdns = config.mdns && !relay_only;
    let hole_punching = !relay_only;
    let swarm_config = match direct_dials {
        Some(allowed) => SwarmConfig::new(IDLE_CONNECTION_TIMEOUT).with_relay_only(allowed),
        None => SwarmConfig::new(IDLE_CONNECTION_TIMEOUT).with_relay_client(true),
    };
    swarm::build(identity.libp2p_keypair(), swarm_config, |key, relay| {
        let relay = relay.ok_or("the relay client transport is missing")?;
        Ok(Behaviour::new(key, relay, mdns, hole_punching)?)
    })
    .map_err(swarm_error)
}

fn swarm_error(err: SwarmError) -> Error {
    match err {
        SwarmError::Listen { addr, reason } => Error::Listen {
            addr: addr.to_string(),
            reason,
        },
        other => Error::Network(other.to_string()),
    }
}

impl Driver {
    /// Adds relays and remembered peers to the DHT and dials the relays.
    fn bootstrap(&mut self) {
        let relays = self.config.relays.clone();
        for relay in relays {
            self.add_relay(&relay);
        }
        match self.store.known_peers() {
            Ok(known) => {
                for peer in known.into_iter().take(BOOTSTRAP_PEERS) {
                    for addr in peer.addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer.peer_id, addr);
                    }
                }
            }
            Err(err) => warn!(error = %err, "cannot read remembered peers"),
        }
        if let Err(err) = self.swarm.behaviour_mut().kad.bootstrap() {
            debug!(error = %err, "no DHT peers to bootstrap from yet");
        }
    }
}
