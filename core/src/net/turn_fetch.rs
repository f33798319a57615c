//! TURN credential fetching (sans-IO): rounds of requests to the relays, the relays that
//! serve none, retries with back-off and renewal before expiry.
//!
//! ```text
//! start(unix) ─▶ Cached(servers)            every credential has > ICE_RENEW_MARGIN_SECS left
//!            ├─▶ Joined                     a round is under way; its outcome answers all
//!            └─▶ Ask(relays) ─▶ requested(id, relay) per request the runtime sent
//! handle_credentials / handle_refused / handle_failed (per answer)
//! poll_outcome(now, unix, …) ─▶ Servers(list) | Refused { relay, reason }   once all answered
//! ```
//!
//! A round asks every known relay that may serve TURN, in peer-id order. Its outcome is the
//! credentials received (possibly none), or the last refusal when every relay that
//! answered refused. A round that brought nothing is retried after the TURN back-off
//! ([`TURN_RETRY_MIN`]…[`TURN_RETRY_MAX`]) while the media plane needs credentials and
//! some relay may serve them; credentials are renewed [`ICE_RENEW_MARGIN_SECS`] before
//! the first of them expires. A relay that does not speak the TURN protocol, or runs no TURN
//! service, is not asked again this session ("no-turn").
//!
//! The runtime sends the requests (`/conclave/turn/1.0.0`) and owns the replies to the
//! callers; request ids are its own type `Id` (libp2p's `OutboundRequestId` there).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use libp2p::request_response::OutboundFailure;
use libp2p::{PeerId, StreamProtocol};
use rand::rngs::StdRng;
use tracing::{debug, info, warn};

use super::codec::TURN_PROTOCOL;
use crate::backoff::Backoff;
use crate::proto::turn::{IceServer, TurnRefusal};

/// First wait before asking the relays for TURN credentials again after a round that
/// brought none (requests failed, or refused by the allowlist).
pub const TURN_RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between TURN credential rounds.
pub const TURN_RETRY_MAX: Duration = Duration::from_secs(60);
/// Credentials are renewed this long (in seconds) before they expire.
pub const ICE_RENEW_MARGIN_SECS: u64 = 120;
/// Shortest wait before a renewal, however close the expiry.
const MIN_RENEW_WAIT_SECS: u64 = 10;

/// What [`TurnFetch::start`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Fresh enough: these, at once.
    Cached(Vec<IceServer>),
    /// A round is under way: its outcome answers this request too.
    Joined,
    /// A new round: send a request to each of these relays and report it with
    /// [`TurnFetch::requested`] (with none, the round is over at once).
    Ask(Vec<PeerId>),
}

/// How a round ended, from [`TurnFetch::poll_outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The credentials received (empty when no relay gave any and none refused).
    Servers(Vec<IceServer>),
    /// Every relay that answered refused; this is the last refusal.
    Refused {
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: TurnRefusal,
    },
}

/// One round of requests.
#[derive(Debug)]
struct Round<Id> {
    outstanding: HashMap<Id, PeerId>,
    servers: Vec<IceServer>,
    refusal: Option<(PeerId, TurnRefusal)>,
}

impl<Id> Default for Round<Id> {
    fn default() -> Self {
        Self {
            outstanding: HashMap::new(),
            servers: Vec::new(),
            refusal: None,
        }
    }
}

/// TURN credential state of one client. See the [module docs](self).
#[derive(Debug)]
pub struct TurnFetch<Id> {
    /// Randomness for the back-off jitter.
    rng: StdRng,
    /// The round under way, if any.
    round: Option<Round<Id>>,
    /// Back-off of the rounds that brought nothing.
    backoff: Backoff,
    /// When to start another round after one that brought nothing.
    retry_at: Option<Instant>,
    /// Relays that do not serve TURN credentials: never asked again this session.
    no_turn: HashSet<PeerId>,
    /// The last credentials received.
    servers: Vec<IceServer>,
    /// When to renew them.
    renew_at: Option<Instant>,
}

impl<Id: Copy + Eq + Hash> TurnFetch<Id> {
    /// No credentials yet; jitter drawn from `rng`.
    pub fn new(rng: StdRng) -> Self {
        Self {
            rng,
            round: None,
            backoff: Backoff::new(TURN_RETRY_MIN, TURN_RETRY_MAX),
            retry_at: None,
            no_turn: HashSet::new(),
            servers: Vec::new(),
            renew_at: None,
        }
    }

    /// Credentials are wanted at `unix_s` (seconds since the epoch) from `relays`: served
    /// from cache while every credential has more than [`ICE_RENEW_MARGIN_SECS`] left,
    /// else by a round (joining one under way).
    pub fn start(&mut self, unix_s: u64, relays: impl IntoIterator<Item = PeerId>) -> Start {
        let renew_after = unix_s + ICE_RENEW_MARGIN_SECS;
        if !self.servers.is_empty() && self.servers.iter().all(|s| s.expires_unix > renew_after) {
            return Start::Cached(self.servers.clone());
        }
        if self.round.is_some() {
            return Start::Joined;
        }
        let mut relays: Vec<PeerId> = relays
            .into_iter()
            .filter(|relay| !self.no_turn.contains(relay))
            .collect();
        relays.sort();
        relays.dedup();
        self.round = Some(Round::default());
        Start::Ask(relays)
    }

    /// The request `id` to `relay` of the current round went out.
    pub fn requested(&mut self, id: Id, relay: PeerId) {
        if let Some(round) = self.round.as_mut() {
            round.outstanding.insert(id, relay);
        }
    }

    /// Whether a round is under way.
    pub fn in_round(&self) -> bool {
        self.round.is_some()
    }

    /// `relay` answered request `id` with credentials for `servers`.
    pub fn handle_credentials(&mut self, id: Id, relay: PeerId, servers: Vec<IceServer>) {
        let Some(round) = self.answered(id) else {
            return;
        };
        for server in &servers {
            debug!(%relay, urls = ?server.urls, expires = server.expires_unix, "TURN credentials received");
        }
        round.servers.extend(servers);
    }

    /// `relay` refused request `id`; a relay without a TURN service is not asked again.
    pub fn handle_refused(&mut self, id: Id, relay: PeerId, reason: TurnRefusal) {
        let Some(round) = self.answered(id) else {
            return;
        };
        warn!(%relay, %reason, "relay refused TURN credentials");
        round.refusal = Some((relay, reason));
        if reason == TurnRefusal::Unavailable {
            self.no_turn.insert(relay);
        }
    }

    /// Request `id` to `relay` failed; a relay that does not speak the protocol is not asked
    /// again.
    pub fn handle_failed(&mut self, id: Id, relay: PeerId, error: &OutboundFailure) {
        if self.answered(id).is_none() {
            return;
        }
        if matches!(error, OutboundFailure::UnsupportedProtocols) {
            info!(%relay, "the relay does not serve TURN credentials; not asking it again");
            self.no_turn.insert(relay);
        } else {
            warn!(%relay, %error, "no TURN credentials from relay");
        }
    }

    /// The round's outcome once every relay has answered (`None` while some have not, or
    /// without a round). A round that brought nothing is retried after the back-off if
    /// `retry` (the media plane wants credentials) and one of `relays` may serve them;
    /// credentials received are renewed before they expire.
    pub fn poll_outcome(
        &mut self,
        now: Instant,
        unix_s: u64,
        relays: impl IntoIterator<Item = PeerId>,
        retry: bool,
    ) -> Option<Outcome> {
        if self.round.as_ref()?.outstanding.is_empty() {
            let round = self.round.take()?;
            return Some(self.finish(now, unix_s, round, relays, retry));
        }
        None
    }

    fn finish(
        &mut self,
        now: Instant,
        unix_s: u64,
        round: Round<Id>,
        relays: impl IntoIterator<Item = PeerId>,
        retry: bool,
    ) -> Outcome {
        if round.servers.is_empty() {
            let askable = relays.into_iter().any(|r| !self.no_turn.contains(&r));
            if retry && askable && self.retry_at.is_none() {
                let delay = self.backoff.next_delay(&mut self.rng);
                debug!(retry_in = ?delay, "no TURN credentials; asking the relays again later");
                self.retry_at = Some(now + delay);
            }
            if let Some((relay, reason)) = round.refusal {
                return Outcome::Refused { relay, reason };
            }
        } else {
            self.backoff.reset();
        }
        self.servers = round.servers;
        self.renew_at = self
            .servers
            .iter()
            .map(|s| s.expires_unix)
            .min()
            .map(|expires| {
                let left = expires.saturating_sub(unix_s + ICE_RENEW_MARGIN_SECS);
                now + Duration::from_secs(left.max(MIN_RENEW_WAIT_SECS))
            });
        Outcome::Servers(self.servers.clone())
    }

    /// When [`TurnFetch::handle_timeout`] has work next: a retry or a renewal.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at.into_iter().chain(self.renew_at).min()
    }

    /// Whether a round is due at `now` (a retry or a renewal); the runtime then calls
    /// [`TurnFetch::start`] if the media plane still wants credentials.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let mut due = false;
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            due = true;
        }
        if self.renew_at.is_some_and(|at| now >= at) {
            self.renew_at = None;
            due = true;
        }
        due
    }

    /// A connection to `relay` came up: fresh credentials are wanted (a restarted relay's
    /// TURN server forgot the old ones) unless a round is under way or it serves none.
    /// Returns whether to start a round.
    pub fn relay_connected(&mut self, relay: PeerId) -> bool {
        if self.round.is_some() || self.no_turn.contains(&relay) {
            return false;
        }
        self.servers.clear();
        true
    }

    /// What a relay's identify lists: without the TURN protocol it is not asked for
    /// credentials (until it lists it; an empty list tells nothing).
    pub fn handle_relay_protocols(&mut self, relay: PeerId, protocols: &[StreamProtocol]) {
        if protocols.is_empty() {
            return;
        }
        if protocols.contains(&TURN_PROTOCOL) {
            self.no_turn.remove(&relay);
        } else if self.no_turn.insert(relay) {
            debug!(%relay, "the relay lists no TURN protocol; not asking it for credentials");
        }
    }

    /// Takes the answer to request `id` off the round.
    fn answered(&mut self, id: Id) -> Option<&mut Round<Id>> {
        let round = self.round.as_mut()?;
        round.outstanding.remove(&id)?;
        Some(round)
    }
}

#[cfg(test)]
mod tests;
