//! Admission (`docs/protocol.md` §5): greeting candidates, the hello pipeline, and the
//! answers to our own hellos.
//!
//! A hello we receive goes through four steps, each a function that either hands over to
//! the next or ends the pipeline with the answer ([`Step`]):
//! 1. **limit** ([`HelloLimiter`](crate::admission::HelloLimiter)): checked before anything
//!    else, so that a flood costs one look-up per hello; one over the limit is answered
//!    `NotMember` (try later), never `Refused` (a refusal from the host ends a join);
//! 2. **verify**: the meeting id, the MAC over the meeting secret, freshness and replay, a
//!    ban (a member the host removed), then the key package (its credential must be the
//!    sender's key, else the sender is an impostor) — any failure is `Refused`;
//! 3. **lobby** ([`super::lobby`]): in a lobby meeting a joiner not yet approved waits there
//!    and learns nothing about the group;
//! 4. **admit**: the sender becomes a known peer (its key package queued for the committer)
//!    and gets an admission `Welcome` with our peer list.
//!
//! Our own hellos carry a fresh nonce (and our key package while joining); the `Welcome`
//! that answers one must prove the secret over that nonce.

use std::time::Instant;

use libp2p::{Multiaddr, PeerId};
use rand::{CryptoRng, RngCore};
use tracing::{debug, info, warn};

use super::{Inflight, Machine, MeetingEvent, Output, PendingHello, Phase};
use crate::admission::{AdmissionError, NONCE_LEN};
use crate::group::GroupError;
use crate::group::mls::{JoinerPackage, validate_key_package};
use crate::proto::control::{Hello, MemberInfo, Request, Response};

/// One step of the hello pipeline: `Err` is the answer that ends it early.
type Step<T> = Result<T, Response>;

impl<R: RngCore + CryptoRng> Machine<R> {
    /// A peer that may be a member (DHT provider, invite hint, gossip): greet it.
    pub fn handle_candidate(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) {
        if self.is_finished() || peer == self.local {
            return;
        }
        if let Some(known) = self.peers.get_mut(&peer) {
            if known.addrs.is_empty() {
                known.addrs = addrs;
            }
            return;
        }
        if self
            .pending
            .get(&peer)
            .is_some_and(|p| now < p.sent_at + self.config.hello_retry)
        {
            return;
        }
        self.send_hello(now, unix_ms, peer, addrs);
    }

    /// Greets every known peer again with a fresh key package (the committer may have
    /// changed, missed our package, or we lost our group).
    pub(super) fn greet_everyone_afresh(&mut self, now: Instant, unix_ms: u64) {
        self.next_rehello = now + self.config.rehello_interval;
        self.mls.key_package = None;
        let known: Vec<(PeerId, Vec<Multiaddr>)> = self
            .peers
            .iter()
            .map(|(p, i)| (*p, i.addrs.clone()))
            .collect();
        for (peer, addrs) in known {
            self.send_hello(now, unix_ms, peer, addrs);
        }
    }

    pub(super) fn send_hello(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let mac = self.keys.hello_mac(&self.local, &peer, &nonce, unix_ms);
        self.pending.insert(
            peer,
            PendingHello {
                nonce,
                sent_at: now,
            },
        );
        let key_package = self.joining_key_package();
        debug!(peer = %peer, with_key_package = !key_package.is_empty(), "sending hello");
        let hello = Request::Hello(Hello {
            meeting_id: self.keys.meeting_id(),
            nonce,
            unix_ms,
            mac,
            name: self.name.clone(),
            addrs: self.local_addrs.clone(),
            key_package,
        });
        self.send_to(peer, addrs, hello, Inflight::Hello { nonce });
    }

    /// Hellos of ours left unanswered for long are forgotten.
    pub(super) fn forget_unanswered_hellos(&mut self, now: Instant) {
        let retry = self.config.hello_retry;
        self.pending.retain(|_, p| now < p.sent_at + retry * 4);
    }

    /// A hello from `from`: limit → verify → lobby → admit (see the [module docs](self)).
    pub(super) fn on_hello(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        hello: Hello,
    ) -> Response {
        match self.hello_pipeline(now, unix_ms, from, hello) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn hello_pipeline(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        hello: Hello,
    ) -> Step<Response> {
        self.limit_hello(now, from)?;
        self.verify_hello(unix_ms, from, &hello)?;
        // Validated first (an impostor is refused outright), queued only once the lobby
        // and the size limit let the sender in.
        let package = self.verify_key_package(from, &hello)?;
        if self.must_wait_in_lobby(&from) {
            return Ok(self.knock(now, from, &hello, package));
        }
        Ok(self.admit(now, from, hello, package))
    }

    /// Step 1: the per-peer and global hello rate limits.
    fn limit_hello(&mut self, now: Instant, from: PeerId) -> Step<()> {
        let known = self.peers.contains_key(&from) || self.knocking.contains_key(&from);
        if let Err(limit) = self.limiter.check(now, from, known) {
            self.stats.hellos_rate_limited += 1;
            debug!(peer = %from, %limit, "hello over the rate limit, not checked");
            return Err(Response::NotMember);
        }
        Ok(())
    }

    /// Step 2a: the hello is for this meeting, proves the secret, is fresh and new, and
    /// its sender is not banned.
    fn verify_hello(&mut self, unix_ms: u64, from: PeerId, hello: &Hello) -> Step<()> {
        if hello.meeting_id != self.keys.meeting_id() {
            self.stats.hellos_wrong_meeting += 1;
            debug!(peer = %from, "hello for another meeting refused");
            return Err(Response::Refused);
        }
        let verdict = self
            .keys
            .verify_hello(
                &from,
                &self.local,
                &hello.nonce,
                hello.unix_ms,
                &hello.mac,
                unix_ms,
            )
            .and_then(|()| {
                self.replay
                    .check_and_record(from, hello.nonce, hello.unix_ms, unix_ms)
            });
        if let Err(err) = verdict {
            match err {
                AdmissionError::BadMac => self.stats.hellos_bad_mac += 1,
                AdmissionError::Stale { .. } => self.stats.hellos_stale += 1,
                AdmissionError::Replayed => self.stats.hellos_replayed += 1,
            }
            warn!(peer = %from, error = %err, "hello refused");
            return Err(Response::Refused);
        }
        if self.banned.contains(&from) {
            warn!(peer = %from, "hello from a removed member refused");
            return Err(Response::Refused);
        }
        Ok(())
    }

    /// Step 2b: the hello's key package, if any (and if we have a group to add it to), is
    /// valid and its credential is the sender's key.
    fn verify_key_package(&mut self, from: PeerId, hello: &Hello) -> Step<Option<JoinerPackage>> {
        if hello.key_package.is_empty() || self.mls.group.is_none() {
            return Ok(None);
        }
        match validate_key_package(&self.mls.provider, &hello.key_package, from) {
            Ok(package) => Ok(Some(package)),
            Err(GroupError::Impostor { .. }) => {
                self.stats.impostors += 1;
                warn!(peer = %from, "key package credential is not the sender's: impostor refused");
                Err(Response::Refused)
            }
            Err(err) => {
                warn!(peer = %from, error = %err, "invalid key package refused");
                Err(Response::Refused)
            }
        }
    }

    /// Step 4: the sender becomes a known peer, its key package queued for the committer;
    /// unless the meeting is full.
    fn admit(
        &mut self,
        now: Instant,
        from: PeerId,
        hello: Hello,
        package: Option<JoinerPackage>,
    ) -> Response {
        if !self.peers.contains_key(&from) && self.peers.len() + 1 >= self.config.max_members {
            warn!(peer = %from, "meeting full, hello refused");
            return Response::Refused;
        }
        if let Some(package) = package {
            self.queue_add(from, &hello.key_package, package);
        }
        self.add_peer(now, from, hello.name, hello.addrs);
        let response = Response::Welcome {
            mac: self.keys.welcome_mac(&self.local, &from, &hello.nonce),
            members: self.peer_list(),
        };
        self.maybe_commit(now);
        response
    }

    /// The answer to our hello to `from`.
    pub(super) fn on_hello_answer(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        nonce: &[u8; NONCE_LEN],
        response: Response,
    ) {
        match response {
            Response::Welcome { mac, members } => {
                self.on_admitted(now, unix_ms, from, nonce, &mac, members);
            }
            Response::Refused => {
                self.pending.remove(&from);
                self.on_hello_refused(from);
            }
            _ => {
                self.pending.remove(&from);
            }
        }
    }

    /// `from` admitted us: if its welcome proves the secret over the nonce of the hello it
    /// answers, it is a known peer, a deferred MLS welcome of its is taken, and its peers
    /// are greeted in turn. The answer to an earlier hello counts as well as the latest's
    /// (on a slow path, a hello sent again can overtake it).
    fn on_admitted(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: PeerId,
        nonce: &[u8; NONCE_LEN],
        mac: &[u8],
        members: Vec<MemberInfo>,
    ) {
        if self
            .keys
            .verify_welcome(&from, &self.local, nonce, mac)
            .is_err()
        {
            self.stats.welcomes_rejected += 1;
            warn!(peer = %from, "welcome without proof of the secret ignored");
            return;
        }
        self.pending.remove(&from);
        if self.lobby && matches!(self.phase, Phase::Joining { .. }) && self.peers.is_empty() {
            self.emit(MeetingEvent::Waiting);
        }
        let own = members.iter().find(|m| m.peer_id == from);
        let name = own.map(|m| m.name.clone()).unwrap_or_default();
        let addrs = own.map(|m| m.addrs.clone()).unwrap_or_default();
        self.add_peer(now, from, name, addrs);
        if let Some((sender, welcome, banned)) = self.mls.deferred_welcome.take() {
            if sender == from {
                self.on_mls_welcome(now, from, &welcome, banned);
            } else {
                self.mls.deferred_welcome = Some((sender, welcome, banned));
            }
        }
        for info in members {
            if info.peer_id != from {
                self.handle_candidate(now, unix_ms, info.peer_id, info.addrs);
            }
        }
    }

    /// `from` refused our hello. A refusal proves nothing (it carries no MAC): only the
    /// invite's host can end a join with it; anyone else's is counted and the join goes on.
    fn on_hello_refused(&mut self, from: PeerId) {
        let authoritative = self.host.is_none_or(|host| host == from);
        if matches!(self.phase, Phase::Joining { .. }) && self.peers.is_empty() && authoritative {
            info!(peer = %from, "join refused: the invite's secret is not this meeting's");
            self.phase = Phase::Refused;
            self.outputs.push_back(Output::StopProviding);
            self.emit(MeetingEvent::JoinRefused);
        } else {
            warn!(peer = %from, "a peer refused our hello");
        }
    }
}
