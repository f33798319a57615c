//! TURN credentials on the runtime side: asking the relays (the decisions are
//! [`crate::net::turn_fetch`]'s), answering the callers, and passing the credentials to the
//! media plane.

use libp2p::request_response;
use tokio::sync::oneshot;

use super::{Driver, clock};
use crate::Error;
use crate::net::turn_fetch::{Outcome, Start};
use crate::proto::turn::{IceServer, TurnRequest, TurnResponse};

impl Driver {
    /// Credentials for `reply` (from cache, or from a round of requests, joining one under
    /// way); without `reply` (a renewal for the media plane) the result only goes to the
    /// media actor.
    pub(super) fn fetch_ice_servers(
        &mut self,
        reply: Option<oneshot::Sender<Result<Vec<IceServer>, Error>>>,
    ) {
        match self
            .turn
            .start(clock::unix_ms() / 1000, self.routing.relays())
        {
            Start::Cached(servers) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(servers));
                }
                return;
            }
            Start::Joined => {}
            Start::Ask(relays) => {
                for relay in relays {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .turn
                        .send_request(&relay, TurnRequest {});
                    self.turn.requested(id, relay);
                }
            }
        }
        self.turn_waiters.extend(reply);
        self.finish_turn_round();
    }

    pub(super) fn on_turn_event(
        &mut self,
        event: request_response::Event<TurnRequest, TurnResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => match response {
                TurnResponse::Credentials(server) => {
                    self.turn.handle_credentials(request_id, peer, vec![server]);
                }
                TurnResponse::Servers(servers) => {
                    self.turn.handle_credentials(request_id, peer, servers);
                }
                TurnResponse::Refused(reason) => self.turn.handle_refused(request_id, peer, reason),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => self.turn.handle_failed(request_id, peer, &error),
            _ => {}
        }
        self.finish_turn_round();
    }

    /// Once every relay of the round has answered: the callers get the credentials (or the
    /// refusal), and the media plane gets new credentials.
    fn finish_turn_round(&mut self) {
        let media = self.media.is_on();
        let Some(outcome) = self.turn.poll_outcome(
            clock::now(),
            clock::unix_ms() / 1000,
            self.routing.relays(),
            media,
        ) else {
            return;
        };
        let waiters = std::mem::take(&mut self.turn_waiters);
        match outcome {
            Outcome::Refused { relay, reason } => {
                for waiter in waiters {
                    let _ = waiter.send(Err(Error::TurnRefused {
                        relay: relay.to_string(),
                        reason: reason.to_string(),
                    }));
                }
            }
            Outcome::Servers(servers) => {
                for waiter in waiters {
                    let _ = waiter.send(Ok(servers.clone()));
                }
                self.media.pass_ice_servers(&servers);
            }
        }
    }
}
