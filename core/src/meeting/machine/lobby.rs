//! The lobby (`docs/protocol.md` §5): joiners that proved the secret wait for the host's
//! approval.
//!
//! In a lobby meeting ([`Machine::set_lobby`]) a joiner that is neither a member nor
//! approved is held in a bounded lobby ([`Config::max_lobby`](super::Config::max_lobby));
//! the host is told it knocks ([`MeetingEvent::Knocking`]) and the joiner learns nothing
//! about the group but our own entry. The host lets it in with [`Machine::approve`], which
//! every member hears (`Approve`); only then may the committer add its key package. A joiner
//! that stops greeting us for [`Config::lobby_expiry`](super::Config::lobby_expiry), or says
//! goodbye, leaves the lobby with its key package and approval
//! ([`MeetingEvent::LobbyLeft`] at the host).

use std::time::Instant;

use libp2p::PeerId;
use rand::{CryptoRng, RngCore};
use tracing::{info, warn};

use super::{Inflight, Knock, Machine, MeetingEvent};
use crate::group::GroupError;
use crate::group::mls::JoinerPackage;
use crate::group::statements::{self, LeafBinding, Statement};
use crate::proto::control::{Hello, Request, Response, StatementSignature};

/// An approval names a joiner, not a leaf (it has none yet).
pub(super) const NO_LEAF: LeafBinding = [0; 32];

impl<R: RngCore + CryptoRng> Machine<R> {
    /// Makes this a lobby meeting (from the invite, or the host's choice): joiners wait
    /// for the host's approval and learn nothing about the group before it.
    pub fn set_lobby(&mut self, now: Instant, lobby: bool) {
        self.lobby = lobby;
        if let super::Phase::Joining { deadline } = &mut self.phase
            && lobby
        {
            *deadline = now + self.config.lobby_timeout;
        }
    }

    /// The host lets `peer` in (lobby meetings).
    pub fn approve(&mut self, now: Instant, peer: PeerId) -> Result<(), GroupError> {
        if self.host != Some(self.local) {
            return Err(GroupError::Mls("only the host admits joiners".into()));
        }
        if !self.knocking.contains_key(&peer) {
            return Err(GroupError::Mls(format!(
                "{peer} is not waiting in the lobby"
            )));
        }
        // Signed, so that every member can check the commit that adds it.
        let meeting_id = self.keys.meeting_id();
        let signature = StatementSignature(self.mls.me.sign_statement(
            Statement::Approve,
            meeting_id,
            &peer,
            &NO_LEAF,
        ));
        self.approved.insert(peer, signature);
        let members: Vec<PeerId> = self.members().into_iter().map(|(p, _)| p).collect();
        for member in members {
            let request = Request::Approve {
                meeting_id,
                peer_id: peer,
                signature: Some(signature),
            };
            self.send(member, request, Inflight::Other);
        }
        self.maybe_commit(now);
        Ok(())
    }

    /// The host's signed `Approve` for `peer`; anyone else's, or one without a valid
    /// signature, is refused.
    pub(super) fn on_approve(
        &mut self,
        from: PeerId,
        peer: PeerId,
        signature: Option<StatementSignature>,
    ) -> Response {
        match signature {
            Some(signature)
                if self.host == Some(from) && self.is_host_approval(&peer, &signature) =>
            {
                self.approved.insert(peer, signature);
                Response::Ack
            }
            _ => {
                self.stats.statements_refused += 1;
                Response::Refused
            }
        }
    }

    /// Whether `signature` is the host's signed approval of `joiner`.
    pub(super) fn is_host_approval(&self, joiner: &PeerId, signature: &StatementSignature) -> bool {
        self.host.is_some_and(|host| {
            statements::verify(
                &host,
                Statement::Approve,
                self.keys.meeting_id(),
                joiner,
                &NO_LEAF,
                &signature.0,
            )
        })
    }

    /// Whether a queued joiner may be added now.
    pub(super) fn may_add(&self, peer: &PeerId) -> bool {
        !self.lobby || self.is_group_member(peer) || self.approved.contains_key(peer)
    }

    /// Hello pipeline, step 3: whether the sender of a valid hello must wait in the lobby.
    pub(super) fn must_wait_in_lobby(&self, from: &PeerId) -> bool {
        self.lobby
            && self.mls.group.is_some()
            && !self.is_group_member(from)
            && !self.approved.contains_key(from)
    }

    /// The sender of a valid hello waits in the lobby (the host is told the first time);
    /// it learns nothing about the group but our own entry. A full lobby answers
    /// `NotMember` (try later).
    pub(super) fn knock(
        &mut self,
        now: Instant,
        from: PeerId,
        hello: &Hello,
        package: Option<JoinerPackage>,
    ) -> Response {
        if let Some(knock) = self.knocking.get_mut(&from) {
            knock.last_hello = now;
        } else if self.knocking.len() >= self.config.max_lobby {
            self.stats.lobby_full += 1;
            warn!(peer = %from, "lobby full, joiner asked to try again later");
            return Response::NotMember;
        } else {
            self.knocking.insert(
                from,
                Knock {
                    name: hello.name.clone(),
                    addrs: hello.addrs.clone(),
                    last_hello: now,
                },
            );
            if self.host == Some(self.local) {
                self.emit(MeetingEvent::Knocking {
                    peer_id: from,
                    name: hello.name.clone(),
                });
            }
        }
        if let Some(package) = package {
            self.queue_add(from, &hello.key_package, package);
        }
        Response::Welcome {
            mac: self.keys.welcome_mac(&self.local, &from, &hello.nonce),
            members: vec![self.own_info()],
        }
    }

    /// Lobby joiners that stopped greeting us are gone: they leave the lobby, their key
    /// package and any approval with them (coming back means knocking again).
    pub(super) fn expire_lobby(&mut self, now: Instant) {
        let expiry = self.config.lobby_expiry;
        let gone: Vec<PeerId> = self
            .knocking
            .iter()
            .filter(|(_, knock)| now >= knock.last_hello + expiry)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in gone {
            info!(peer = %peer, "lobby joiner went silent and left the lobby");
            self.stats.lobby_expired += 1;
            self.leave_lobby(peer);
        }
    }

    /// `peer` is no longer waiting in the lobby (silent, or said goodbye): its entry, key
    /// package and any approval go, and the host is told. Whether it was waiting.
    pub(super) fn leave_lobby(&mut self, peer: PeerId) -> bool {
        let Some(knock) = self.knocking.remove(&peer) else {
            return false;
        };
        self.mls.queued_adds.remove(&peer);
        self.approved.remove(&peer);
        if self.host == Some(self.local) {
            self.emit(MeetingEvent::LobbyLeft {
                peer_id: peer,
                name: knock.name,
            });
        }
        true
    }
}
