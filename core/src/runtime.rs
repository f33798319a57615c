//! The async wiring of a client: the one place where tasks are spawned and channels are
//! sized.
//!
//! ```text
//! Client ──Command (bounded mpsc, oneshot replies)──▶ Driver ──Event (outbox, lossy)──▶ app
//!                                                     │  │  │
//!                      swarm events / swarm calls ────┘  │  └──── MediaInput (outbox, lossless)
//!                                                        │        MediaEvent, signals ◀── media actor
//!                                  Machine (sans-IO) ◀───┘
//!                                  Routing, TurnFetch (sans-IO, crate::net)
//! ```
//!
//! `startup` opens the store, loads the identity and the display name, builds the swarm
//! ([`crate::net::swarm`]), binds the listeners, spawns the media actor and then the
//! `Driver`'s task. The driver owns the `Swarm` (the only code that touches it), the
//! meeting [`Machine`](crate::meeting::Machine) of the current `session`, the routing and
//! TURN state ([`crate::net::routing`], [`crate::net::turn_fetch`]) and the link to the media
//! actor (`media_link`). Its loop (`event_loop`) is
//! `select! { biased; cancel, commands, swarm, media, outboxes, timer }`: local work
//! (cancellation, commands) is served before remote input, and after every input the
//! machine's and the routing's outputs are drained. Every other file adds one concern to
//! the driver: `command` (the client's commands), `swarm_events` (what the swarm
//! reports and carrying out routing decisions), `control` (the control protocol's
//! requests and answers), `turn` (TURN credentials), `history` (what survives a
//! restart), `outbox` (events for the application).
//!
//! Only `clock` reads the time and the wall clock; everything below the runtime takes
//! `now` as an argument.

mod clock;
mod command;
mod control;
mod event;
mod event_loop;
mod history;
mod media_link;
mod outbox;
mod session;
mod startup;
mod swarm_events;
mod turn;

use std::collections::HashMap;
use std::time::Duration;

use libp2p::Swarm;
use libp2p::request_response::OutboundRequestId;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::identity::Identity;
use crate::net::behaviour::Behaviour;
use crate::net::routing::Routing;
use crate::net::turn_fetch::TurnFetch;
use crate::proto::turn::IceServer;
use crate::store::Store;
use crate::{Config, Error};

pub(crate) use command::Command;
pub use event::Event;
pub(crate) use startup::start;

/// Capacity of the event stream to the application. The driver never waits for room:
/// past [`Config::event_backlog`] unread events the oldest are dropped and counted
/// ([`Event::Lagged`]).
pub const EVENT_CAPACITY: usize = 256;
/// Capacity of the command inbox (a client handle waits for room).
pub const COMMAND_CAPACITY: usize = 32;
/// How a leave waits for goodbyes to be acknowledged.
pub const LEAVE_GRACE: Duration = Duration::from_millis(1500);
/// How long start-up waits for listeners to report their addresses.
pub const LISTEN_WAIT: Duration = Duration::from_secs(5);
/// Longest wait between two DHT look-ups while joining; the first waits
/// [`Config::lookup_interval_joining`](crate::Config).
pub const LOOKUP_JOINING_MAX: Duration = Duration::from_secs(4);
/// How long connections without open streams stay open.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The client's actor. See the [module docs](self).
pub(crate) struct Driver {
    swarm: Swarm<Behaviour>,
    store: Store,
    identity: Identity,
    config: Config,
    name: String,
    inbox: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    /// Events for the application (lossy on purpose, with [`Event::Lagged`]).
    outbox: outbox::Outbox,
    /// The meeting we are in, or were in last.
    session: Option<session::Session>,
    /// A leave waiting for its goodbyes to be acknowledged.
    pending_leave: Option<session::PendingLeave>,
    /// Control requests awaiting their answer.
    requests: HashMap<OutboundRequestId, control::SentRequest>,
    /// Addresses, relays, reservations, connections and their retries (sans-IO).
    routing: Routing,
    /// TURN credential rounds (sans-IO).
    turn: TurnFetch<OutboundRequestId>,
    /// Callers waiting for the TURN credential round under way.
    turn_waiters: Vec<oneshot::Sender<Result<Vec<IceServer>, Error>>>,
    /// The media actor, when media is on.
    media: media_link::MediaLink,
    /// Randomness for the look-ups' back-off jitter.
    rng: StdRng,
    /// Relay-only: the peers TCP and QUIC may dial (the relays; see
    /// [`crate::net::relay_only`]).
    direct_dials: Option<std::sync::Arc<crate::net::relay_only::DirectDials>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("peer_id", self.swarm.local_peer_id())
            .field("in_meeting", &self.in_meeting())
            .finish_non_exhaustive()
    }
}
