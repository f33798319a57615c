//! The control-plane actor: owns the libp2p `Swarm` and the meeting [`Machine`].
//!
//! ```text
//! Client ──Command (bounded mpsc, oneshot replies)──▶ Driver ──Event (bounded mpsc)──▶ app
//!                                                      │  ▲
//!                                         swarm events │  │ machine outputs
//!                                                      ▼  │
//!                                                    Machine (sans-IO)
//! ```
//!
//! Loop: `select! { biased; cancel, inbox, swarm, timer }`; after every input the machine's
//! outputs are drained. Local work (cancellation, commands) is served before remote input.
//! This is the only module that reads clocks ([`Instant::now`], wall time for hello
//! timestamps) and randomness from the OS.
//!
//! Every retry waits with exponential back-off and jitter ([`Backoff`]), per relay or per
//! peer: circuit reservations ([`RESERVE_RETRY_MIN`]…), relay redials
//! ([`RELAY_REDIAL_MIN`]…), the joiner's DHT look-ups ([`LOOKUP_JOINING_MAX`]), hole punching
//! over fresh circuits ([`HOLE_PUNCH_RETRIES`]) and TURN credential rounds
//! ([`TURN_RETRY_MIN`]…). A relay that answered that it offers no circuit relay (no hop
//! protocol) is not asked for a reservation again this session, and one that does not
//! speak the TURN protocol or runs no TURN service is not asked for credentials again.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::relay::outbound::hop::ReserveError;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, dcutr, identify, kad, mdns, noise, ping, relay, tcp, yamux,
};
use rand::SeedableRng;
use rand::rngs::{OsRng, StdRng};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::codec::TURN_PROTOCOL;
use super::routing::paths::{CloseReason, Paths};
use crate::admission::MeetingKeys;
use crate::backoff::Backoff;
use crate::client::Event;
use crate::group::{MlsIdentity, Provider};
use crate::identity::{Identity, SafetyNumber};
use crate::invite::{Invite, peer_of};
use crate::media::{self, MediaEvent, MediaInput};
use crate::meeting::{Machine, MeetingEvent, Output};
use crate::proto::control::{MAX_ADDRS, Request, Response};
use crate::proto::turn::{IceServer, TurnRefusal, TurnRequest, TurnResponse};
use crate::store::Store;
use crate::store::{ChatRecord, MeetingRecord};
use crate::{Config, Error};

/// Most remembered addresses per peer in the driver's address book.
const ADDR_BOOK_PER_PEER: usize = 8;
/// Most peers in the address book.
const ADDR_BOOK_PEERS: usize = 1024;
/// How long a leave waits for goodbyes to be acknowledged.
const LEAVE_GRACE: Duration = Duration::from_millis(1500);
/// How long start-up waits for listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(5);
/// How often one control request is sent again after the connection it was on closed
/// while the peer stayed reachable over another.
const MAX_RESENDS: u8 = 3;

/// Commands from [`Client`](crate::Client) handles.
#[derive(Debug)]
pub(crate) enum Command {
    Create {
        lobby: bool,
        reply: oneshot::Sender<Result<Invite, Error>>,
    },
    Join {
        invite: Invite,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    Chat {
        text: String,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    ResendChat {
        seq: u64,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Kick {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Approve {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Mute or unmute: the media plane stops sending, the members are told.
    Mute {
        muted: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A setting of the media plane (noise suppression).
    Media {
        input: MediaInput,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    History {
        meeting: crate::invite::MeetingId,
        reply: oneshot::Sender<Result<Vec<ChatRecord>, Error>>,
    },
    IceServers {
        reply: oneshot::Sender<Result<Vec<IceServer>, Error>>,
    },
    /// The current members other than us.
    Members {
        reply: oneshot::Sender<Vec<(PeerId, String)>>,
    },
}

/// What [`start`] reports back.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) peer_id: PeerId,
    pub(crate) safety_number: SafetyNumber,
    pub(crate) name: String,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    /// A handle on the store, for the client's own reads and writes.
    pub(crate) store: Store,
}

struct Session {
    machine: Machine<StdRng>,
    invite: Invite,
    host_hint: Option<PeerId>,
    next_lookup: Instant,
    /// Spacing of the look-ups while joining (reset once a member).
    lookup_backoff: Backoff,
    next_provide: Instant,
}

/// Credentials still to be renewed this long before they expire.
const ICE_RENEW_MARGIN_SECS: u64 = 120;

/// One round of TURN credential requests to the configured relays.
#[derive(Default)]
struct TurnFetch {
    waiters: Vec<oneshot::Sender<Result<Vec<IceServer>, Error>>>,
    outstanding: HashMap<OutboundRequestId, PeerId>,
    servers: Vec<IceServer>,
    refusal: Option<(PeerId, TurnRefusal)>,
}

struct PendingLeave {
    reply: oneshot::Sender<()>,
    deadline: Instant,
    outstanding: HashSet<OutboundRequestId>,
}

struct Driver {
    swarm: Swarm<Behaviour>,
    store: Store,
    identity: Identity,
    /// Control requests awaiting their answer: the machine's tag, and the request itself
    /// (sent again if the connection it went out on closes while the peer stays reachable).
    requests: HashMap<OutboundRequestId, SentRequest>,
    config: Config,
    name: String,
    inbox: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Events not yet taken by the application: the loop never waits for the reader.
    outbox: VecDeque<Event>,
    /// Events dropped from a full outbox since the reader was last told.
    lagged: u64,
    cancel: CancellationToken,
    session: Option<Session>,
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    listen_addrs: Vec<Multiaddr>,
    pending_leave: Option<PendingLeave>,
    /// The media actor's inbox, when media is on.
    media: Option<mpsc::Sender<MediaInput>>,
    /// Inputs for the media actor not yet taken (its queue was full): epoch keys,
    /// signalling and commands are state and are passed on in order, never dropped.
    media_outbox: VecDeque<MediaInput>,
    /// The media actor's reports, passed on to the application through [`Driver::outbox`].
    media_events: Option<mpsc::Receiver<MediaEvent>>,
    /// Signalling payloads the media actor wants sent (inside the MLS group).
    signals: Option<mpsc::Receiver<(PeerId, Vec<u8>)>>,
    /// Relays we know (configured, and hinted by the invite we joined with).
    relays: HashMap<PeerId, Multiaddr>,
    /// Our circuit relay reservations: reachable through that relay while they last.
    reservations: HashMap<ListenerId, PeerId>,
    /// Relays whose reservation was accepted and still holds.
    reservations_held: HashSet<PeerId>,
    /// Back-off of the reservation attempts per relay.
    reserve_backoff: HashMap<PeerId, Backoff>,
    /// Relays that answered that they offer no circuit relay (no hop protocol): never asked
    /// for a reservation again this session, nor used for circuits.
    no_hop: HashSet<PeerId>,
    /// When to dial relays we lost again.
    relay_redial: Option<Instant>,
    /// Back-off of the relay redials.
    relay_backoff: Backoff,
    /// Retries waiting for their time.
    retries: HashMap<Retry, Instant>,
    /// Randomness for the back-off jitter.
    rng: StdRng,
    /// TURN credentials being fetched, if any.
    turn_fetch: Option<TurnFetch>,
    /// Back-off of the TURN credential rounds that brought nothing.
    turn_backoff: Backoff,
    /// Relays that do not serve TURN credentials (no TURN protocol, or no TURN service):
    /// never asked again this session.
    no_turn: HashSet<PeerId>,
    /// The last credentials received (renewed when close to expiry).
    ice_servers: Vec<IceServer>,
    /// When to renew them for the media plane.
    ice_renew_at: Option<Instant>,
    /// Every open connection per peer, with its remote address (a circuit address when
    /// relayed).
    conns: HashMap<PeerId, HashMap<ConnectionId, Multiaddr>>,
    /// The control path last reported per peer: whether it is direct.
    reported_paths: HashMap<PeerId, bool>,
    /// Relays we dialed over QUIC as well, to learn our public UDP mapping from them.
    relays_over_quic: HashSet<PeerId>,
    /// Back-off of the fresh circuits dialed after hole punching failed, per peer (at most
    /// [`HOLE_PUNCH_RETRIES`] while connected).
    punch_retries: HashMap<PeerId, Backoff>,
    /// Which connections to each peer are proven, and their round-trip times.
    paths: Paths,
}

/// A retry the driver's timer carries out when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Retry {
    /// Ask the relay for a circuit reservation again.
    Reserve(PeerId),
    /// Dial a fresh circuit to the peer for another hole punching round.
    HolePunch(PeerId),
    /// Ask the relays for TURN credentials again.
    Turn,
}

/// A control request in flight.
struct SentRequest {
    tag: u64,
    request: Request,
    /// How often it was sent again after losing its connection.
    resends: u8,
}

/// First wait before dialing a lost relay again (a restarted relay is usually back within
/// this); doubled per failure up to [`RELAY_REDIAL_MAX`], every wait jittered
/// ([`Backoff`]).
pub const RELAY_REDIAL_MIN: Duration = Duration::from_millis(250);
/// Longest wait between attempts to reach a lost relay.
pub const RELAY_REDIAL_MAX: Duration = Duration::from_secs(30);
/// Longest wait between attempts during a meeting: the members' calls through the relay
/// recover only once we are back, so a relay that returns must be found within seconds.
pub const RELAY_REDIAL_MAX_IN_MEETING: Duration = Duration::from_secs(2);
/// First wait before asking a relay that refused a reservation (full, rate-limited, or the
/// request failed) again; doubled per refusal up to [`RESERVE_RETRY_MAX`]. A reservation
/// that held and was lost is asked for again within this, or at once on reconnection.
pub const RESERVE_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reservation attempts at one relay.
pub const RESERVE_RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest wait between reservation attempts during a meeting (a member without a
/// reservation cannot be reached through that relay).
pub const RESERVE_RETRY_MAX_IN_MEETING: Duration = Duration::from_secs(10);
/// Longest wait between two DHT look-ups while joining; the first waits
/// [`Config::lookup_interval_joining`](crate::Config).
pub const LOOKUP_JOINING_MAX: Duration = Duration::from_secs(4);
/// First wait before dialing a fresh circuit for another hole punching round.
pub const HOLE_PUNCH_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between hole punching rounds.
pub const HOLE_PUNCH_RETRY_MAX: Duration = Duration::from_secs(8);
/// Most hole punching rounds over fresh circuits per peer while connected.
pub const HOLE_PUNCH_RETRIES: u32 = 3;
/// First wait before asking the relays for TURN credentials again after a round that
/// brought none (requests failed, or refused by the allowlist).
pub const TURN_RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between TURN credential rounds.
pub const TURN_RETRY_MAX: Duration = Duration::from_secs(60);

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

/// The next signalling payload from the media actor; pending forever when media is off.
async fn recv_media_event(events: &mut Option<mpsc::Receiver<MediaEvent>>) -> Option<MediaEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Room in the media actor's queue (never, without a media actor).
async fn media_room(
    media: &Option<mpsc::Sender<MediaInput>>,
) -> Result<mpsc::Permit<'_, MediaInput>, mpsc::error::SendError<()>> {
    match media {
        Some(media) => media.reserve().await,
        None => std::future::pending().await,
    }
}

async fn recv_signal(
    signals: &mut Option<mpsc::Receiver<(PeerId, Vec<u8>)>>,
) -> Option<(PeerId, Vec<u8>)> {
    match signals {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Builds the swarm, binds the listeners and spawns the driver task.
pub(crate) async fn start(
    config: Config,
    inbox: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> Result<Started, Error> {
    let store = Store::open(&config.data_dir, &config.store_key)?;
    let identity = store.load_or_create_identity()?;
    let name = match config.name.as_deref().map(sanitize_name) {
        Some(name) => {
            store.set_display_name(&name)?;
            name
        }
        None => store
            .display_name()?
            .unwrap_or_else(|| "anonymous".to_owned()),
    };
    let mdns = config.mdns;
    // Relay-only members hide their address from the others: no hole punching.
    let hole_punching = !config.media.as_ref().is_some_and(|media| media.relay_only);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity.libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| Error::Network(e.to_string()))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| Error::Network(e.to_string()))?
        .with_behaviour(|key, relay| {
            Behaviour::new(key, relay, mdns, hole_punching)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| Error::Network(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();

    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    }
    let listen_addrs = wait_for_listeners(&mut swarm, config.listen.len()).await?;
    let peer_id = identity.peer_id();
    let (media, signals, media_events) = match config.media.clone() {
        Some(media_config) => {
            let (signals_tx, signals_rx) = mpsc::channel(media::INBOX_CAPACITY);
            let (media_events_tx, media_events_rx) = mpsc::channel(media::INBOX_CAPACITY);
            let input = media::spawn(
                identity.peer_id(),
                media_config,
                signals_tx,
                media_events_tx,
                cancel.clone(),
            )
            .map_err(|e| Error::Media(e.to_string()))?;
            (Some(input), Some(signals_rx), Some(media_events_rx))
        }
        None => (None, None, None),
    };
    let client_store = store.clone();
    let mut driver = Driver {
        media,
        media_outbox: VecDeque::new(),
        media_events,
        signals,
        swarm,
        store,
        identity: identity.clone(),
        requests: HashMap::new(),
        config,
        name: name.clone(),
        inbox,
        events,
        outbox: VecDeque::new(),
        lagged: 0,
        cancel,
        session: None,
        addr_book: HashMap::new(),
        listen_addrs: listen_addrs.clone(),
        pending_leave: None,
        relays: HashMap::new(),
        reservations: HashMap::new(),
        reservations_held: HashSet::new(),
        reserve_backoff: HashMap::new(),
        no_hop: HashSet::new(),
        relay_redial: None,
        relay_backoff: Backoff::new(RELAY_REDIAL_MIN, RELAY_REDIAL_MAX),
        retries: HashMap::new(),
        rng: StdRng::from_rng(OsRng).map_err(|e| Error::Network(e.to_string()))?,
        turn_fetch: None,
        turn_backoff: Backoff::new(TURN_RETRY_MIN, TURN_RETRY_MAX),
        no_turn: HashSet::new(),
        ice_servers: Vec::new(),
        ice_renew_at: None,
        conns: HashMap::new(),
        reported_paths: HashMap::new(),
        relays_over_quic: HashSet::new(),
        punch_retries: HashMap::new(),
        paths: Paths::default(),
    };
    driver.bootstrap();
    tokio::spawn(driver.run());
    Ok(Started {
        peer_id,
        safety_number: identity.safety_number(),
        name,
        listen_addrs: listen_addrs
            .into_iter()
            .map(|a| a.with(Protocol::P2p(peer_id)))
            .collect(),
        store: client_store,
    })
}

async fn wait_for_listeners(
    swarm: &mut Swarm<Behaviour>,
    listeners: usize,
) -> Result<Vec<Multiaddr>, Error> {
    let mut addrs = Vec::new();
    let mut reported = HashSet::new();
    let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
    while reported.len() < listeners {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| Error::Network("listeners did not come up in time".into()))?;
        match event {
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
            } => {
                return Err(Error::Network(format!("listener failed: {error}")));
            }
            _ => {}
        }
    }
    Ok(addrs)
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
                for peer in known.into_iter().take(32) {
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

    /// A relay: a DHT bootstrap node we also reserve a circuit with once connected, so that
    /// peers who cannot reach us directly (NAT) reach us through it.
    fn add_relay(&mut self, addr: &Multiaddr) {
        if let Some(peer) = peer_of(addr) {
            self.relays.insert(peer, addr.clone());
            if self.swarm.is_connected(&peer) {
                self.reserve(peer);
            }
        }
        self.add_bootstrap(addr);
    }

    /// Reserves a circuit at relay `peer` unless we hold or are asking for one, a retry is
    /// waiting for its time, or the relay said it offers no circuit relay.
    fn reserve(&mut self, peer: PeerId) {
        if self.reservations.values().any(|p| *p == peer)
            || self.retries.contains_key(&Retry::Reserve(peer))
            || self.no_hop.contains(&peer)
        {
            return;
        }
        let Some(addr) = self.relays.get(&peer).cloned() else {
            return;
        };
        match self
            .swarm
            .listen_on(addr.clone().with(Protocol::P2pCircuit))
        {
            Ok(listener) => {
                debug!(relay = %peer, "reserving a relay circuit");
                self.reservations.insert(listener, peer);
            }
            Err(err) => warn!(%addr, error = %err, "cannot reserve a relay circuit"),
        }
    }

    /// A reservation at `relay` ended: refused (`held` false) or lost after it held.
    /// A relay without the hop protocol is never asked again; otherwise the next attempt
    /// waits for the relay's back-off (reset if the reservation had held, and left to the
    /// reconnection if the connection went with it).
    fn on_reservation_ended(&mut self, relay: PeerId, held: bool, error: Option<&io::Error>) {
        if error
            .and_then(reserve_error)
            .is_some_and(|e| matches!(e, ReserveError::Unsupported))
        {
            info!(%relay, "the relay offers no circuit relay; not asking it for a reservation again");
            self.no_hop.insert(relay);
            self.reserve_backoff.remove(&relay);
            return;
        }
        let connected = self.swarm.is_connected(&relay);
        let max = if self.in_meeting() {
            RESERVE_RETRY_MAX_IN_MEETING
        } else {
            RESERVE_RETRY_MAX
        };
        let backoff = self
            .reserve_backoff
            .entry(relay)
            .or_insert_with(|| Backoff::new(RESERVE_RETRY_MIN, max));
        if held {
            backoff.reset();
            if !connected {
                info!(%relay, error = ?error, "relay reservation ended with the connection; reserving again on reconnection");
                return;
            }
        }
        backoff.set_max(max);
        let delay = backoff.next_delay(&mut self.rng);
        let attempt = backoff.attempt();
        if held {
            info!(%relay, error = ?error, retry_in = ?delay, "relay reservation ended");
        } else {
            // Refusals repeat for as long as the relay is full: one line per attempt at
            // most, and quiet after the first few.
            let reason = error.map_or_else(
                || "closed".to_owned(),
                |e| match reserve_error(e) {
                    Some(refusal) => refusal.to_string(),
                    None => e.to_string(),
                },
            );
            if attempt <= 3 {
                info!(%relay, %reason, attempt, retry_in = ?delay, "relay reservation refused");
            } else {
                debug!(%relay, %reason, attempt, retry_in = ?delay, "relay reservation refused");
            }
        }
        self.retries
            .insert(Retry::Reserve(relay), Instant::now() + delay);
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
        self.remember_addr(peer, addr.clone());
        if let Err(err) = self.swarm.dial(addr.clone()) {
            warn!(%addr, error = %err, "cannot dial bootstrap peer");
        }
    }

    #[instrument(skip_all, fields(me = %self.swarm.local_peer_id()))]
    async fn run(mut self) {
        info!("control plane running");
        loop {
            let deadline = self.next_deadline();
            // Handles of our own, so that waiting for room does not borrow `self`.
            let events = self.events.clone();
            let media = self.media.clone();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                command = self.inbox.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                signal = recv_signal(&mut self.signals) => self.on_signal(signal),
                event = recv_media_event(&mut self.media_events) => match event {
                    Some(event) => self.emit(Event::Media(event)),
                    None => self.media_events = None,
                },
                permit = media_room(&media), if !self.media_outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(input) = self.media_outbox.pop_front() {
                            permit.send(input);
                        }
                    }
                    Err(_) => {
                        warn!("the media plane stopped");
                        self.media_outbox.clear();
                        self.media = None;
                    }
                },
                permit = events.reserve(), if !self.outbox.is_empty() || self.lagged > 0 => match permit {
                    Ok(permit) => {
                        // The reader is told where the gap is: right after what it read.
                        if self.lagged > 0 {
                            let missed = std::mem::take(&mut self.lagged);
                            permit.send(Event::Lagged { missed });
                        } else if let Some(event) = self.outbox.pop_front() {
                            permit.send(event);
                        }
                    }
                    // The application is gone.
                    Err(_) => break,
                },
                () = tokio::time::sleep_until(deadline.into()) => self.on_timer(),
            }
            self.drain_machine();
        }
        info!("control plane stopped");
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut deadline = now + Duration::from_secs(3600);
        if let Some(session) = &self.session
            && !session.machine.is_finished()
        {
            deadline = deadline.min(session.next_lookup);
            // Re-announcing only happens as a member; counting the provide deadline in other
            // phases would wake the loop forever once it passed.
            if session.machine.phase() == crate::meeting::Phase::Member {
                deadline = deadline.min(session.next_provide);
            }
            if let Some(t) = session.machine.poll_timeout() {
                deadline = deadline.min(t);
            }
        }
        if let Some(leave) = &self.pending_leave {
            deadline = deadline.min(leave.deadline);
        }
        if let Some(at) = self.relay_redial {
            deadline = deadline.min(at);
        }
        if let Some(at) = self.retries.values().min() {
            deadline = deadline.min(*at);
        }
        if let Some(at) = self.ice_renew_at {
            deadline = deadline.min(at);
        }
        if let Some(at) = self.paths.next_deadline() {
            deadline = deadline.min(at);
        }
        deadline
    }

    /// Queues `event` for the application without ever waiting for it: when the reader
    /// falls [`Config::event_backlog`] events behind, the oldest are dropped and counted,
    /// and the reader is told with [`Event::Lagged`] as soon as it reads again (then
    /// re-reads the state it needs).
    fn emit(&mut self, event: Event) {
        if self.outbox.len() >= self.config.event_backlog.max(1) {
            self.outbox.pop_front();
            self.lagged += 1;
            if self.lagged == 1 {
                warn!("the application is not reading events; dropping the oldest");
            }
        }
        self.outbox.push_back(event);
    }

    /// Closes the connections that failed to prove themselves or went quiet beside a
    /// working one ([`Paths`]); their requests move to the peer's other connection.
    fn close_dead_paths(&mut self, now: Instant) {
        for close in self.paths.poll_close(now) {
            let why = match close.reason {
                CloseReason::Unproven => "never answered a ping",
                CloseReason::Stale => "stopped answering pings",
            };
            info!(peer = %close.peer, relayed = close.relayed, why, "closing a control connection that carries nothing; its requests move to the peer's other connection");
            self.swarm.close_connection(close.connection);
        }
    }

    /// Dials every relay we are not connected to; schedules the next attempt (with back-off
    /// and jitter) while some stay unreachable.
    fn redial_relays(&mut self, now: Instant) {
        let Some(at) = self.relay_redial else {
            return;
        };
        if now < at {
            return;
        }
        let lost: Vec<(PeerId, Multiaddr)> = self
            .relays
            .iter()
            .filter(|(peer, _)| !self.swarm.is_connected(peer))
            .map(|(peer, addr)| (*peer, addr.clone()))
            .collect();
        if lost.is_empty() {
            self.relay_redial = None;
            return;
        }
        for (peer, addr) in lost {
            self.dial(
                peer,
                vec![addr],
                PeerCondition::DisconnectedAndNotDialing,
                "a lost relay",
            );
        }
        let max = if self.in_meeting() {
            RELAY_REDIAL_MAX_IN_MEETING
        } else {
            RELAY_REDIAL_MAX
        };
        self.relay_backoff.set_max(max);
        self.relay_redial = Some(now + self.relay_backoff.next_delay(&mut self.rng));
    }

    /// Carries out the retries whose time has come.
    fn run_retries(&mut self, now: Instant) {
        let due: Vec<Retry> = self
            .retries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(retry, _)| *retry)
            .collect();
        for retry in due {
            self.retries.remove(&retry);
            match retry {
                // When the connection went meanwhile, the reconnection reserves.
                Retry::Reserve(relay) if self.swarm.is_connected(&relay) => self.reserve(relay),
                Retry::Reserve(_) => {}
                Retry::HolePunch(peer) => self.dial_punch_circuit(peer),
                Retry::Turn => {
                    if self.media.is_some() {
                        self.fetch_ice_servers(None);
                    }
                }
            }
        }
    }

    fn on_signal(&mut self, signal: Option<(PeerId, Vec<u8>)>) {
        let Some((to, payload)) = signal else {
            self.signals = None;
            return;
        };
        if let Some(session) = self.session.as_mut()
            && let Err(err) = session.machine.send_signal(to, payload)
        {
            debug!(peer = %to, error = %err, "signalling message not sent");
        }
    }

    /// Passes `input` to the media actor, in order, without waiting: straight into its
    /// queue when there is room, else into [`Driver::media_outbox`], which the loop drains as
    /// room appears. Returns whether there is a media actor.
    fn pass_to_media(&mut self, input: MediaInput) -> bool {
        let Some(media) = &self.media else {
            return false;
        };
        if self.media_outbox.is_empty() {
            match media.try_send(input) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(input)) => self.media_outbox.push_back(input),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    warn!("the media plane stopped");
                    self.media = None;
                    return false;
                }
            }
        } else {
            self.media_outbox.push_back(input);
        }
        if self.media_outbox.len().is_multiple_of(1024) {
            warn!(
                queued = self.media_outbox.len(),
                "the media plane is falling behind"
            );
        }
        true
    }

    fn in_meeting(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.machine.is_finished())
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Create { lobby, reply } => {
                if self.in_meeting() {
                    let _ = reply.send(Err(Error::Usage("already in a meeting")));
                    return;
                }
                let mut rng = StdRng::from_rng(OsRng).expect("the OS random source is available");
                let mut invite = Invite::new_meeting(&mut rng);
                invite.host = Some(*self.swarm.local_peer_id());
                invite.relays = self
                    .config
                    .relays
                    .iter()
                    .take(crate::invite::MAX_RELAYS)
                    .cloned()
                    .collect();
                invite.lobby = lobby;
                match self.start_session(invite.clone(), true, rng, now) {
                    Ok(session) => self.session = Some(session),
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return;
                    }
                }
                let _ = reply.send(Ok(invite));
            }
            Command::Join { invite, reply } => {
                if self.in_meeting() {
                    let _ = reply.send(Err(Error::Usage("already in a meeting")));
                    return;
                }
                for relay in invite
                    .relays
                    .iter()
                    .filter(|r| !self.config.relays.contains(r))
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    self.add_relay(&relay);
                }
                let rng = StdRng::from_rng(OsRng).expect("the OS random source is available");
                info!(meeting = %invite.meeting_id.short(), "joining");
                match self.start_session(invite, false, rng, now) {
                    Ok(session) => self.session = Some(session),
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return;
                    }
                }
                let _ = reply.send(Ok(()));
            }
            Command::Leave { reply } => {
                let Some(session) = self.session.as_mut() else {
                    let _ = reply.send(());
                    return;
                };
                session.machine.leave();
                self.pending_leave = Some(PendingLeave {
                    reply,
                    deadline: now + LEAVE_GRACE,
                    outstanding: HashSet::new(),
                });
            }
            Command::Chat { text, reply } => {
                let result = match self.session.as_mut() {
                    Some(session) => session
                        .machine
                        .send_chat(now, unix_ms(), &text)
                        .map_err(Error::Group),
                    None => Err(Error::Usage("not in a meeting")),
                };
                let _ = reply.send(result);
            }
            Command::ResendChat { seq, reply } => {
                let result = match self.session.as_mut() {
                    Some(session) => session.machine.resend_chat(now, seq).map_err(Error::Group),
                    None => Err(Error::Usage("not in a meeting")),
                };
                let _ = reply.send(result);
            }
            Command::Approve { peer, reply } => {
                let result = match self.session.as_mut() {
                    Some(session) => session.machine.approve(now, peer).map_err(Error::Group),
                    None => Err(Error::Usage("not in a meeting")),
                };
                let _ = reply.send(result);
            }
            Command::Mute { muted, reply } => {
                let in_meeting = self.in_meeting();
                if let Some(session) = self.session.as_mut()
                    && in_meeting
                {
                    session.machine.set_muted(muted);
                }
                let result = if self.pass_to_media(MediaInput::Mute(muted)) {
                    Ok(())
                } else if in_meeting {
                    // Without audio there is nothing to stop, but the members are still told.
                    Ok(())
                } else {
                    Err(Error::Usage("not in a meeting"))
                };
                let _ = reply.send(result);
            }
            Command::Media { input, reply } => {
                let result = if self.pass_to_media(input) {
                    Ok(())
                } else {
                    Err(Error::Usage(
                        "this client has no audio (start it with --audio-in or --audio-out)",
                    ))
                };
                let _ = reply.send(result);
            }
            Command::History { meeting, reply } => {
                let _ = reply.send(self.store.chat_history(meeting).map_err(Error::from));
            }
            Command::IceServers { reply } => self.fetch_ice_servers(Some(reply)),
            Command::Members { reply } => {
                let members = self
                    .session
                    .as_ref()
                    .filter(|s| !s.machine.is_finished())
                    .map(|s| s.machine.members())
                    .unwrap_or_default();
                let _ = reply.send(members);
            }
            Command::Kick { peer, reply } => {
                let result = match self.session.as_mut() {
                    Some(session) => session.machine.kick(now, peer).map_err(Error::Group),
                    None => Err(Error::Usage("not in a meeting")),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Builds the meeting machine for `invite`, hosting it or joining it.
    fn start_session(
        &mut self,
        invite: Invite,
        host: bool,
        rng: StdRng,
        now: Instant,
    ) -> Result<Session, Error> {
        let keys = MeetingKeys::derive(invite.meeting_id, &invite.secret);
        // MLS state lives in memory only: a restart always starts or joins afresh.
        let provider = Provider::default();
        let me = MlsIdentity::new(&self.identity);
        let meeting = self.config.meeting.clone();
        let local = *self.swarm.local_peer_id();
        let mut machine = if host {
            Machine::host(meeting, me, provider, self.name.clone(), keys, now, rng)?
        } else {
            Machine::joiner(
                meeting,
                me,
                provider,
                self.name.clone(),
                keys,
                invite.host,
                now,
                rng,
            )
        };
        machine.set_local_addrs(self.listen_addrs.clone());
        machine.set_lobby(now, invite.lobby);
        Ok(Session {
            machine,
            host_hint: if host {
                None
            } else {
                invite.host.filter(|h| *h != local)
            },
            next_lookup: if host {
                now + self.config.lookup_interval_member
            } else {
                now
            },
            lookup_backoff: Backoff::new(self.config.lookup_interval_joining, LOOKUP_JOINING_MAX),
            next_provide: now + self.config.reprovide_interval,
            invite,
        })
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        self.redial_relays(now);
        self.run_retries(now);
        self.close_dead_paths(now);
        if self.ice_renew_at.is_some_and(|at| now >= at) {
            self.ice_renew_at = None;
            if self.media.is_some() {
                self.fetch_ice_servers(None);
            }
        }
        if self
            .pending_leave
            .as_ref()
            .is_some_and(|l| now >= l.deadline)
        {
            self.finish_leave();
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.machine.is_finished() {
            return;
        }
        if session.machine.poll_timeout().is_some_and(|t| t <= now) {
            session.machine.handle_timeout(now, unix_ms());
        }
        if now >= session.next_lookup {
            let joining = matches!(
                session.machine.phase(),
                crate::meeting::Phase::Joining { .. }
            );
            // While joining, look-ups are retries (until the group is found): they back off
            // from the joining interval to LOOKUP_JOINING_MAX. A member's look-ups are a
            // steady poll for newcomers and split groups.
            let interval = if joining {
                session.lookup_backoff.next_delay(&mut self.rng)
            } else {
                session.lookup_backoff.reset();
                self.config.lookup_interval_member
            };
            session.next_lookup = now + interval;
            let key = kad::RecordKey::new(&session.machine.rendezvous_key());
            let hint = if joining { session.host_hint } else { None };
            self.swarm.behaviour_mut().kad.get_providers(key);
            if let Some(host) = hint {
                self.offer_candidate(host);
                self.swarm.behaviour_mut().kad.get_closest_peers(host);
            }
        }
        let provide_due = self.session.as_ref().is_some_and(|s| now >= s.next_provide);
        if provide_due {
            self.provide();
        }
    }

    fn provide(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.machine.phase() != crate::meeting::Phase::Member {
            return;
        }
        session.next_provide = Instant::now() + self.config.reprovide_interval;
        let key = kad::RecordKey::new(&session.machine.rendezvous_key());
        if let Err(err) = self.swarm.behaviour_mut().kad.start_providing(key) {
            warn!(error = %err, "cannot announce the meeting on the DHT");
        }
    }

    /// Feeds a possible member to the machine with whatever addresses we know for it.
    fn offer_candidate(&mut self, peer: PeerId) {
        let addrs = self.routes_to(&peer);
        if let Some(session) = self.session.as_mut() {
            session
                .machine
                .handle_candidate(Instant::now(), unix_ms(), peer, addrs);
        }
    }

    /// Dials `peer` on `addrs` (nothing if there are none) when `condition` holds; `what`
    /// names the dial in the logs.
    fn dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        condition: PeerCondition,
        what: &'static str,
    ) {
        if addrs.is_empty() {
            return;
        }
        debug!(peer = %peer, what, "dialing");
        let dial = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(condition)
            .build();
        if let Err(err) = self.swarm.dial(dial) {
            debug!(peer = %peer, what, error = %err, "dial not started");
        }
    }

    /// Every way we know to reach `peer`: its addresses, then a circuit through each relay
    /// we know (members reserve at the meeting's relays, so behind any NAT the circuit is
    /// how they are reached; a relay without a reservation for it just refuses).
    fn routes_to(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut routes = self.addr_book.get(peer).cloned().unwrap_or_default();
        for (relay, addr) in &self.relays {
            if relay == peer || self.no_hop.contains(relay) {
                continue;
            }
            let circuit = addr.clone().with(Protocol::P2pCircuit);
            if !routes.contains(&circuit) {
                routes.push(circuit);
            }
        }
        routes
    }

    /// Reports a peer's control path when it changes: direct while any connection to it is
    /// not a relay circuit (after hole punching both may be open; requests then use either
    /// until the relayed one idles out), relayed otherwise. Relays themselves are not
    /// reported.
    fn update_path(&mut self, peer: PeerId) {
        if self.relays.contains_key(&peer) {
            return;
        }
        let Some(conns) = self.conns.get(&peer) else {
            if let Some(direct) = self.reported_paths.remove(&peer) {
                debug!(peer = %peer, direct, "no control connection left");
            }
            return;
        };
        let remote = conns
            .values()
            .find(|a| !is_relayed(a))
            .or_else(|| conns.values().next());
        let Some(remote) = remote.cloned() else {
            return;
        };
        let direct = !is_relayed(&remote);
        if self.reported_paths.insert(peer, direct) == Some(direct) {
            return;
        }
        let path = if direct { "direct" } else { "relayed" };
        info!(peer = %peer, path, %remote, "control path");
        let event = Event::ControlPath {
            peer_id: peer,
            path,
            remote,
        };
        self.emit(event);
    }

    /// After a failed hole punch, schedules a dial to `peer` through the relays (a new
    /// circuit beside the one in use), at most [`HOLE_PUNCH_RETRIES`] times while connected,
    /// with back-off: DCUtR runs on every new relayed connection with the address
    /// candidates both ends know by then. The first circuit often comes up before identify
    /// on our QUIC connection to the relay has told us our public UDP address, so the first
    /// round only had TCP candidates (and TCP punching fails where the routers answer
    /// unsolicited SYNs with resets).
    fn retry_hole_punch(&mut self, peer: PeerId) {
        if self.reported_paths.get(&peer) == Some(&true)
            || self.retries.contains_key(&Retry::HolePunch(peer))
        {
            return;
        }
        let backoff = self
            .punch_retries
            .entry(peer)
            .or_insert_with(|| Backoff::new(HOLE_PUNCH_RETRY_MIN, HOLE_PUNCH_RETRY_MAX));
        if backoff.attempt() >= HOLE_PUNCH_RETRIES {
            debug!(peer = %peer, "no more hole punching rounds while connected; staying relayed");
            return;
        }
        let delay = backoff.next_delay(&mut self.rng);
        debug!(peer = %peer, retry_in = ?delay, "another hole punching round scheduled");
        self.retries
            .insert(Retry::HolePunch(peer), Instant::now() + delay);
    }

    /// Dials a fresh circuit to `peer` for another hole punching round, unless a direct
    /// path came up meanwhile or the peer is gone.
    fn dial_punch_circuit(&mut self, peer: PeerId) {
        if self.reported_paths.get(&peer) == Some(&true) || !self.swarm.is_connected(&peer) {
            return;
        }
        let circuits: Vec<Multiaddr> = self
            .routes_to(&peer)
            .into_iter()
            .filter(is_relayed)
            .collect();
        self.dial(
            peer,
            circuits,
            PeerCondition::Always,
            "a new relay circuit for another hole punching round",
        );
    }

    /// Dials relay `relay` over QUIC too (once per connection to it) if it listens on QUIC,
    /// we do and we reached it another way. Identify on that connection tells us our public
    /// UDP address (the NAT's mapping of our QUIC port), the candidate hole punching over
    /// QUIC needs; a TCP connection only yields a TCP candidate.
    fn dial_relay_over_quic(&mut self, relay: PeerId, relay_addrs: &[Multiaddr]) {
        if !self
            .listen_addrs
            .iter()
            .any(|a| is_quic(a) && !is_relayed(a))
            || self
                .conns
                .get(&relay)
                .is_some_and(|c| c.values().any(is_quic))
            || self.relays_over_quic.contains(&relay)
        {
            return;
        }
        let quic: Vec<Multiaddr> = relay_addrs
            .iter()
            .filter(|a| is_quic(a) && !is_relayed(a) && is_dialable(a))
            .cloned()
            .collect();
        if quic.is_empty() {
            return;
        }
        self.relays_over_quic.insert(relay);
        debug!(%relay, addrs = ?quic, "dialing the relay over QUIC to learn our UDP mapping");
        let dial = DialOpts::peer_id(relay)
            .addresses(quic)
            .condition(PeerCondition::Always)
            .build();
        if let Err(err) = self.swarm.dial(dial) {
            debug!(%relay, error = %err, "QUIC dial to the relay not started");
        }
    }

    /// What a relay's identify says it serves: without the hop protocol it is not asked for
    /// reservations, without the TURN protocol not for credentials (until it lists them; an
    /// empty list tells nothing).
    fn learn_relay_services(&mut self, relay: PeerId, protocols: &[libp2p::StreamProtocol]) {
        if protocols.is_empty() {
            return;
        }
        if protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            if self.no_hop.remove(&relay) {
                info!(%relay, "the relay offers circuit relay now");
                if self.swarm.is_connected(&relay) {
                    self.reserve(relay);
                }
            }
        } else if self.no_hop.insert(relay) {
            info!(%relay, "the relay lists no circuit relay protocol; not asking it for a reservation");
        }
        if protocols.contains(&TURN_PROTOCOL) {
            self.no_turn.remove(&relay);
        } else if self.no_turn.insert(relay) {
            debug!(%relay, "the relay lists no TURN protocol; not asking it for credentials");
        }
    }

    fn remember_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        let addr = without_p2p(addr);
        if self.addr_book.len() >= ADDR_BOOK_PEERS && !self.addr_book.contains_key(&peer) {
            return;
        }
        let addrs = self.addr_book.entry(peer).or_default();
        if !addrs.contains(&addr) {
            if addrs.len() >= ADDR_BOOK_PER_PEER {
                addrs.remove(0);
            }
            addrs.push(addr);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.swarm.add_external_address(address.clone());
                if is_relayed(&address) {
                    info!(%address, "reachable through a relay");
                    // Announce the new way in at once.
                    self.provide();
                }
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
                let addrs: Vec<Multiaddr> =
                    self.listen_addrs.iter().take(MAX_ADDRS).cloned().collect();
                if let Some(session) = self.session.as_mut() {
                    session.machine.set_local_addrs(addrs);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                let remote = remote_of(&endpoint);
                if !self.relays.contains_key(&peer_id) {
                    self.paths
                        .opened(Instant::now(), peer_id, connection_id, remote.clone(), true);
                }
                self.conns
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, remote);
                self.update_path(peer_id);
                if endpoint.is_dialer() {
                    self.remember_addr(peer_id, endpoint.get_remote_address().clone());
                }
                if self.relays.contains_key(&peer_id) {
                    self.reserve(peer_id);
                    // A joiner's first hello to the invite's host went out before any relay
                    // was connected and failed at once: greet again now that a circuit can
                    // carry it, instead of at the next look-up.
                    if let Some(host) = self.session.as_ref().and_then(|s| s.host_hint)
                        && self.session.as_ref().is_some_and(|s| {
                            matches!(s.machine.phase(), crate::meeting::Phase::Joining { .. })
                        })
                    {
                        self.offer_candidate(host);
                    }
                    // TURN credentials for the media plane (fresh ones after a relay restart).
                    if self.media.is_some()
                        && self.turn_fetch.is_none()
                        && !self.no_turn.contains(&peer_id)
                    {
                        self.ice_servers.clear();
                        self.fetch_ice_servers(None);
                    }
                    if let Err(err) = self.swarm.behaviour_mut().kad.bootstrap() {
                        debug!(error = %err, "bootstrap not possible yet");
                    }
                    self.provide();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                debug!(peer = %peer_id, remaining = num_established, "connection closed");
                self.paths.closed(peer_id, connection_id);
                if let Some(conns) = self.conns.get_mut(&peer_id) {
                    conns.remove(&connection_id);
                    if conns.is_empty() {
                        self.conns.remove(&peer_id);
                    }
                }
                if num_established == 0 {
                    self.relays_over_quic.remove(&peer_id);
                    self.punch_retries.remove(&peer_id);
                    self.retries.remove(&Retry::HolePunch(peer_id));
                }
                self.update_path(peer_id);
                if num_established == 0 && self.relays.contains_key(&peer_id) {
                    // Our relayed media paths may have gone with it (a restarted TURN server
                    // keeps no allocations); the media plane repairs them once it is back.
                    self.pass_to_media(MediaInput::RelayLost);
                    if self.relay_redial.is_none() {
                        info!(relay = %peer_id, "lost the relay; dialing it again");
                        self.relay_backoff.reset();
                        self.relay_redial =
                            Some(Instant::now() + self.relay_backoff.next_delay(&mut self.rng));
                    }
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                for address in addresses {
                    self.swarm.remove_external_address(&address);
                    self.listen_addrs.retain(|a| *a != address);
                }
                if let Some(relay) = self.reservations.remove(&listener_id) {
                    let held = self.reservations_held.remove(&relay);
                    self.on_reservation_ended(relay, held, reason.as_ref().err());
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "dial failed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
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
                self.reservations_held.insert(relay_peer_id);
                if let Some(backoff) = self.reserve_backoff.get_mut(&relay_peer_id) {
                    backoff.reset();
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if self.relays.contains_key(&peer_id) {
                    self.dial_relay_over_quic(peer_id, &info.listen_addrs);
                    self.learn_relay_services(peer_id, &info.protocols);
                }
                let serves_kad = info.protocols.contains(&KAD_PROTOCOL);
                for addr in info.listen_addrs.into_iter().filter(is_dialable) {
                    if serves_kad {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                    self.remember_addr(peer_id, addr);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            }) => match result {
                Ok(rtt) => {
                    self.paths.ping_ok(Instant::now(), peer, connection, rtt);
                    let rtt = self.paths.rtt(&peer);
                    if let Some(session) = self.session.as_mut() {
                        // Any answer (a relay's, a DHT node's, a member's) proves our own
                        // network works: the machine tells "they are gone" from "we are
                        // cut off" by it.
                        session.machine.network_heard(Instant::now());
                        session.machine.set_rtt(peer, rtt);
                    }
                }
                Err(err) => debug!(peer = %peer, error = %err, "ping failed"),
            },
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => info!(peer = %remote_peer_id, "hole punched: direct connection"),
                Err(err) => {
                    info!(peer = %remote_peer_id, error = %err, "hole punching failed; staying relayed");
                    self.retry_hole_punch(remote_peer_id);
                }
            },
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    debug!(peer = %peer, %addr, "found on the LAN");
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.remember_addr(peer, addr);
                    let dial = DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let _ = self.swarm.dial(dial);
                }
            }
            _ => {}
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
                        .addresses(self.routes_to(&peer))
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
                            self.remember_addr(info.peer_id, addr);
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

    /// Answers from cache while every credential has more than [`ICE_RENEW_MARGIN_SECS`]
    /// left; otherwise asks every known relay (joining a round already under way). Without
    /// `reply` (renewal for the media plane) the result only goes to the media actor.
    fn fetch_ice_servers(&mut self, reply: Option<oneshot::Sender<Result<Vec<IceServer>, Error>>>) {
        let renew_after = unix_ms() / 1000 + ICE_RENEW_MARGIN_SECS;
        if !self.ice_servers.is_empty()
            && self
                .ice_servers
                .iter()
                .all(|s| s.expires_unix > renew_after)
        {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(self.ice_servers.clone()));
            }
            return;
        }
        if let Some(fetch) = self.turn_fetch.as_mut() {
            fetch.waiters.extend(reply);
            return;
        }
        let mut relays: Vec<PeerId> = self
            .relays
            .keys()
            .filter(|relay| !self.no_turn.contains(relay))
            .copied()
            .collect();
        relays.sort();
        let mut fetch = TurnFetch {
            waiters: reply.into_iter().collect(),
            ..TurnFetch::default()
        };
        for relay in relays {
            let id = self
                .swarm
                .behaviour_mut()
                .turn
                .send_request(&relay, TurnRequest {});
            fetch.outstanding.insert(id, relay);
        }
        self.turn_fetch = Some(fetch);
        self.finish_turn_fetch_if_done();
    }

    fn on_turn_event(&mut self, event: request_response::Event<TurnRequest, TurnResponse>) {
        let Some(fetch) = self.turn_fetch.as_mut() else {
            return;
        };
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if fetch.outstanding.remove(&request_id).is_none() {
                    return;
                }
                match response {
                    TurnResponse::Credentials(server) => {
                        debug!(relay = %peer, expires = server.expires_unix, "TURN credentials received");
                        fetch.servers.push(server);
                    }
                    TurnResponse::Refused(reason) => {
                        warn!(relay = %peer, %reason, "relay refused TURN credentials");
                        if reason == TurnRefusal::Unavailable {
                            self.no_turn.insert(peer);
                        }
                        fetch.refusal = Some((peer, reason));
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } if fetch.outstanding.remove(&request_id).is_some() => {
                if matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                ) {
                    info!(relay = %peer, "the relay does not serve TURN credentials; not asking it again");
                    self.no_turn.insert(peer);
                } else {
                    warn!(relay = %peer, %error, "no TURN credentials from relay");
                }
            }
            _ => {}
        }
        self.finish_turn_fetch_if_done();
    }

    /// Once every relay has answered: the servers received, or the refusal if every relay
    /// that answered refused.
    fn finish_turn_fetch_if_done(&mut self) {
        if self
            .turn_fetch
            .as_ref()
            .is_none_or(|f| !f.outstanding.is_empty())
        {
            return;
        }
        let Some(fetch) = self.turn_fetch.take() else {
            return;
        };
        if fetch.servers.is_empty() {
            self.schedule_turn_retry();
        } else {
            self.turn_backoff.reset();
        }
        if fetch.servers.is_empty()
            && let Some((relay, reason)) = fetch.refusal
        {
            for waiter in fetch.waiters {
                let _ = waiter.send(Err(Error::TurnRefused {
                    relay: relay.to_string(),
                    reason: reason.to_string(),
                }));
            }
            return;
        }
        self.ice_servers = fetch.servers;
        for waiter in fetch.waiters {
            let _ = waiter.send(Ok(self.ice_servers.clone()));
        }
        self.ice_renew_at = self
            .ice_servers
            .iter()
            .map(|s| s.expires_unix)
            .min()
            .map(|expires| {
                let left = expires.saturating_sub(unix_ms() / 1000 + ICE_RENEW_MARGIN_SECS);
                Instant::now() + Duration::from_secs(left.max(10))
            });
        if self.media.is_some() {
            let servers = self
                .ice_servers
                .iter()
                .map(|s| media::transport::IceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect();
            self.pass_to_media(MediaInput::IceServers(servers));
        }
    }

    /// After a credential round that brought nothing: the media plane still needs them, so
    /// the relays that may serve them are asked again after the TURN back-off.
    fn schedule_turn_retry(&mut self) {
        let askable = self.relays.keys().any(|r| !self.no_turn.contains(r));
        if self.media.is_none() || !askable || self.retries.contains_key(&Retry::Turn) {
            return;
        }
        let delay = self.turn_backoff.next_delay(&mut self.rng);
        debug!(retry_in = ?delay, "no TURN credentials; asking the relays again later");
        self.retries.insert(Retry::Turn, Instant::now() + delay);
    }

    fn on_control_event(&mut self, event: request_response::Event<Request, Response>) {
        let now = Instant::now();
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if let Request::Hello(hello) = &request {
                        for addr in hello.addrs.iter().filter(|a| is_dialable(a)) {
                            self.remember_addr(peer, addr.clone());
                        }
                    }
                    let response = match self.session.as_mut() {
                        Some(session) => {
                            session
                                .machine
                                .handle_request(now, unix_ms(), peer, request)
                        }
                        None => Response::NotMember,
                    };
                    if self
                        .swarm
                        .behaviour_mut()
                        .control
                        .send_response(channel, response)
                        .is_err()
                    {
                        debug!(peer = %peer, "response channel closed before answering");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.request_done(request_id);
                    let sent = self.requests.remove(&request_id);
                    if let (Some(session), Some(sent)) = (self.session.as_mut(), sent) {
                        session
                            .machine
                            .handle_response(now, unix_ms(), peer, sent.tag, response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let Some(sent) = self.requests.remove(&request_id) else {
                    self.request_done(request_id);
                    return;
                };
                // The connection it went out on closed (we closed a dead path, or the
                // transport gave up on it) but another one to the peer remains: send it
                // again there. Hellos are not repeated as they are (a second copy of one that
                // arrived is a replay): the machine greets afresh instead.
                let path_lost =
                    matches!(error, request_response::OutboundFailure::ConnectionClosed)
                        && self.swarm.is_connected(&peer);
                let is_hello = matches!(sent.request, Request::Hello(_));
                if path_lost && !is_hello && sent.resends < MAX_RESENDS {
                    debug!(peer = %peer, "connection closed under a control request; sending it again on another");
                    let new_id = self.send_control(peer, sent.request, sent.tag, sent.resends + 1);
                    if let Some(leave) = self.pending_leave.as_mut()
                        && leave.outstanding.remove(&request_id)
                    {
                        leave.outstanding.insert(new_id);
                    }
                    return;
                }
                debug!(peer = %peer, error = %error, "control request failed");
                self.request_done(request_id);
                if let Some(session) = self.session.as_mut() {
                    session.machine.handle_send_failed(now, peer, sent.tag);
                }
                if path_lost && is_hello {
                    self.offer_candidate(peer);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                warn!(peer = %peer, error = %error, "malformed or failed control request");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn request_done(&mut self, request_id: OutboundRequestId) {
        let done = self.pending_leave.as_mut().is_some_and(|leave| {
            leave.outstanding.remove(&request_id);
            leave.outstanding.is_empty()
        });
        if done {
            self.finish_leave();
        }
    }

    fn finish_leave(&mut self) {
        if let Some(leave) = self.pending_leave.take() {
            let _ = leave.reply.send(());
        }
    }

    /// Keeps what must survive a restart: members as bootstrap peers, the meeting for
    /// rejoining, chat lines. Failures are logged; the meeting goes on.
    fn record(&mut self, event: &MeetingEvent) {
        let Some(session) = &self.session else { return };
        let meeting = session.invite.meeting_id;
        let result = match event {
            MeetingEvent::MemberJoined { peer_id, .. } => {
                let addrs = self.addr_book.get(peer_id).cloned().unwrap_or_default();
                self.store.remember_peer(peer_id, &addrs, unix_ms() / 1000)
            }
            MeetingEvent::Joined { .. } => self.store.remember_meeting(
                meeting,
                &MeetingRecord {
                    invite: session.invite.to_uri(),
                    last_seen_unix_ms: unix_ms(),
                },
            ),
            MeetingEvent::ChatSent { text, unix_ms, .. } => self.store.append_chat(
                meeting,
                &ChatRecord {
                    from: self.swarm.local_peer_id().to_base58(),
                    name: self.name.clone(),
                    text: text.clone(),
                    unix_ms: *unix_ms,
                },
            ),
            MeetingEvent::Chat {
                from,
                name,
                text,
                unix_ms,
            } => self.store.append_chat(
                meeting,
                &ChatRecord {
                    from: from.to_base58(),
                    name: name.clone(),
                    text: text.clone(),
                    unix_ms: *unix_ms,
                },
            ),
            _ => Ok(()),
        };
        if let Err(err) = result {
            warn!(error = %err, "cannot save meeting data");
        }
    }

    /// Sends a control request to `peer` (dialing its known routes if need be) and
    /// remembers it until answered.
    fn send_control(
        &mut self,
        peer: PeerId,
        request: Request,
        tag: u64,
        resends: u8,
    ) -> OutboundRequestId {
        let known = self.routes_to(&peer);
        let id = self
            .swarm
            .behaviour_mut()
            .control
            .send_request_with_addresses(&peer, request.clone(), known);
        self.requests.insert(
            id,
            SentRequest {
                tag,
                request,
                resends,
            },
        );
        id
    }

    /// Carries out the machine's outputs (never waiting: events go to the outbox).
    fn drain_machine(&mut self) {
        loop {
            let Some(output) = self.session.as_mut().and_then(|s| s.machine.poll_output()) else {
                break;
            };
            match output {
                Output::Send {
                    to,
                    addrs,
                    request,
                    tag,
                } => {
                    for addr in addrs.into_iter().filter(is_dialable) {
                        self.remember_addr(to, addr);
                    }
                    let is_bye = matches!(request, Request::Bye { .. });
                    let id = self.send_control(to, request, tag, 0);
                    if is_bye && let Some(leave) = self.pending_leave.as_mut() {
                        leave.outstanding.insert(id);
                    }
                }
                Output::StartProviding => self.provide(),
                Output::StopProviding => {
                    if let Some(session) = &self.session {
                        let key = kad::RecordKey::new(&session.machine.rendezvous_key());
                        self.swarm.behaviour_mut().kad.stop_providing(&key);
                    }
                }
                Output::Media(command) => {
                    self.pass_to_media(MediaInput::Command(command));
                }
                // Not written: a restart never loads a group (see `store`'s module docs).
                Output::Persist(_) => {}
                Output::Event(event) => {
                    self.record(&event);
                    self.emit(Event::Meeting(event));
                }
            }
        }
        if self
            .pending_leave
            .as_ref()
            .is_some_and(|l| l.outstanding.is_empty())
        {
            self.finish_leave();
        }
    }
}

/// Why a relay refused a reservation, from the error that closed the circuit listener
/// (the relay transport's error, wrapped in the swarm's transport layers).
fn reserve_error(err: &io::Error) -> Option<&ReserveError> {
    let mut cause = err
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(error) = cause {
        if let Some(refusal) = error.downcast_ref::<ReserveError>() {
            return Some(refusal);
        }
        if let Some(relay::client::transport::Error::Reservation(refusal)) = error.downcast_ref() {
            return Some(refusal);
        }
        cause = error.source();
    }
    None
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1))
}

/// The remote end of a connection: the address dialed, or where a listener's peer came from
/// (for an inbound circuit, the local circuit address, which names the relay).
fn remote_of(endpoint: &libp2p::core::ConnectedPoint) -> Multiaddr {
    match endpoint {
        libp2p::core::ConnectedPoint::Dialer { address, .. } => address.clone(),
        libp2p::core::ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => {
            local_addr.clone()
        }
        libp2p::core::ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
    }
}

fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn without_p2p(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reservation_is_recognised_through_the_transport_layers() {
        let unsupported = io::Error::other(relay::client::transport::Error::Reservation(
            ReserveError::Unsupported,
        ));
        assert!(matches!(
            reserve_error(&unsupported),
            Some(ReserveError::Unsupported)
        ));
        // The relay transport's error inside the swarm's `Either` of transports, whose
        // `source()` is its inner error's source (the inner error itself is skipped).
        #[derive(Debug)]
        struct EitherLike(relay::client::transport::Error);
        impl std::fmt::Display for EitherLike {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::error::Error for EitherLike {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                std::error::Error::source(&self.0)
            }
        }
        let full = EitherLike(relay::client::transport::Error::Reservation(
            ReserveError::ResourceLimitExceeded,
        ));
        assert!(matches!(
            reserve_error(&io::Error::other(full)),
            Some(ReserveError::ResourceLimitExceeded)
        ));
        assert!(reserve_error(&io::Error::other("something else")).is_none());
        assert!(reserve_error(&io::ErrorKind::TimedOut.into()).is_none());
    }
}
