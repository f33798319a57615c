//! The control protocol on the wire side of the driver: requests from peers go to the
//! meeting machine and its answer goes back; our requests go out along every route we know
//! and their answers (or failures) go back to the machine.
//!
//! A request whose connection closed while the peer stayed reachable over another is sent
//! again there (at most [`MAX_RESENDS`] times), except a hello: a second copy of one that
//! arrived would be a replay, so the machine greets afresh instead.
//!
//! A request that waited for a dial fails with that dial, whichever dial it was: libp2p's
//! request-response fails every request queued for a peer when *any* dial to it fails, and
//! starts no dial of its own while another is under way. A dial started elsewhere with a
//! poor address list (the DHT's, with only the peer's private LAN address) thus took with it
//! requests that the peer's circuits would have carried; a member whose requests all went
//! that way for its liveness timeout was evicted. Such a request never left, so it is sent
//! again, hello included (at most [`MAX_REDIALS`] times), with a dial of every route to the
//! peer that does not wait for the other dial to end. A dial that neither fails nor
//! connects (a handshake to a private address runs into its timeout, 5 s and more) gets
//! the same dial of every route beside it after 1.5 s
//! ([`Routing::handle_requests_waiting`](crate::net::routing::Routing::handle_requests_waiting)).

use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId};
use tracing::{debug, warn};

use super::{Driver, clock};
use crate::net::routing::is_dialable;
use crate::proto::control::{Request, Response};

/// How often one control request is sent again after the connection it was on closed
/// while the peer stayed reachable over another.
pub(super) const MAX_RESENDS: u8 = 3;
/// How often one control request is sent again after the dial it waited for failed.
pub(super) const MAX_REDIALS: u8 = 3;

/// A control request in flight.
pub(super) struct SentRequest {
    /// The machine's tag for it.
    tag: u64,
    request: Request,
    /// How often it was sent again after losing its connection.
    resends: u8,
    /// How often it was sent again after the dial it waited for failed.
    redials: u8,
}

impl Driver {
    pub(super) fn on_control_event(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_request(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(peer, request_id, response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => self.on_request_failed(peer, request_id, &error),
            request_response::Event::InboundFailure { peer, error, .. } => {
                warn!(peer = %peer, error = %error, "malformed or failed control request");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A peer's request: the machine answers it (a hello's addresses are remembered).
    fn on_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: request_response::ResponseChannel<Response>,
    ) {
        if let Request::Hello(hello) = &request {
            for addr in hello.addrs.iter().filter(|a| is_dialable(a)) {
                self.routing.remember_addr(peer, addr.clone());
            }
        }
        let response = match self.session.as_mut() {
            Some(session) => {
                session
                    .machine
                    .handle_request(clock::now(), clock::unix_ms(), peer, request)
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

    /// The answer to one of our requests.
    fn on_response(&mut self, peer: PeerId, request_id: OutboundRequestId, response: Response) {
        self.request_done(request_id);
        let sent = self.requests.remove(&request_id);
        if let (Some(session), Some(sent)) = (self.session.as_mut(), sent) {
            session.machine.handle_response(
                clock::now(),
                clock::unix_ms(),
                peer,
                sent.tag,
                response,
            );
        }
    }

    /// One of our requests failed: sent again on another connection, or reported to the
    /// machine.
    fn on_request_failed(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        error: &request_response::OutboundFailure,
    ) {
        let Some(sent) = self.requests.remove(&request_id) else {
            self.request_done(request_id);
            return;
        };
        // The connection it went out on closed (we closed a dead path, or the
        // transport gave up on it) but another one to the peer remains: send it
        // again there. Hellos are not repeated as they are (a second copy of one that
        // arrived is a replay): the machine greets afresh instead.
        let path_lost = matches!(error, request_response::OutboundFailure::ConnectionClosed)
            && self.swarm.is_connected(&peer);
        let is_hello = matches!(sent.request, Request::Hello(_));
        // The dial it waited for failed: it never left (a hello too), and the dial may have
        // been someone else's, with addresses of its own.
        let never_left = matches!(error, request_response::OutboundFailure::DialFailure);
        if never_left && sent.redials < MAX_REDIALS && self.session.is_some() {
            debug!(peer = %peer, redial = sent.redials + 1, "the dial a control request waited for failed; dialing every route and sending it again");
            self.routing.dial_every_route(clock::now(), peer);
            let resent = SentRequest {
                redials: sent.redials + 1,
                ..sent
            };
            self.resend(request_id, peer, resent);
            return;
        }
        if path_lost && !is_hello && sent.resends < MAX_RESENDS {
            debug!(peer = %peer, "connection closed under a control request; sending it again on another");
            let resent = SentRequest {
                resends: sent.resends + 1,
                ..sent
            };
            self.resend(request_id, peer, resent);
            return;
        }
        debug!(peer = %peer, error = %error, "control request failed");
        self.request_done(request_id);
        if let Some(session) = self.session.as_mut() {
            session
                .machine
                .handle_send_failed(clock::now(), peer, sent.tag);
        }
        if path_lost && is_hello {
            self.offer_candidate(peer);
        }
    }

    /// Sends a failed request (`request_id`) again as `sent`; a leave waiting for it now
    /// waits for the new one.
    fn resend(&mut self, request_id: OutboundRequestId, peer: PeerId, sent: SentRequest) {
        let new_id = self.send_sent(peer, sent);
        if let Some(leave) = self.pending_leave.as_mut()
            && leave.outstanding.remove(&request_id)
        {
            leave.outstanding.insert(new_id);
        }
    }

    /// A request is settled: a leave waiting for it may be done.
    fn request_done(&mut self, request_id: OutboundRequestId) {
        let done = self.pending_leave.as_mut().is_some_and(|leave| {
            leave.outstanding.remove(&request_id);
            leave.outstanding.is_empty()
        });
        if done {
            self.finish_leave();
        }
    }

    /// Sends a control request to `peer` (dialing its known routes if need be) and
    /// remembers it until answered.
    pub(super) fn send_control(
        &mut self,
        peer: PeerId,
        request: Request,
        tag: u64,
    ) -> OutboundRequestId {
        let sent = SentRequest {
            tag,
            request,
            resends: 0,
            redials: 0,
        };
        self.send_sent(peer, sent)
    }

    fn send_sent(&mut self, peer: PeerId, sent: SentRequest) -> OutboundRequestId {
        let known = self.routing.routes_to(&peer);
        let id = self
            .swarm
            .behaviour_mut()
            .control
            .send_request_with_addresses(&peer, sent.request.clone(), known);
        if !self.swarm.is_connected(&peer) {
            self.routing.handle_requests_waiting(clock::now(), peer);
        }
        self.requests.insert(id, sent);
        id
    }
}
