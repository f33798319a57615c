//! The driver's loop: one `select!` over cancellation, the client's commands, the swarm,
//! the media actor and the two outboxes, and one timer for everything time-driven.
//!
//! After every input the meeting machine's and the routing's outputs are drained
//! (`drain`), so no decision waits for the next wake-up. Local work (cancellation,
//! commands) is served before remote input.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::{info, instrument};

use super::media_link::{recv_event, recv_signal, room};
use super::{Driver, clock};

impl Driver {
    #[instrument(skip_all, fields(me = %self.swarm.local_peer_id()))]
    pub(super) async fn run(mut self) {
        info!("control plane running");
        loop {
            let deadline = self.next_deadline(clock::now());
            // Handles of our own, so that waiting for room does not borrow `self`.
            let events = self.outbox.sender();
            let media = self.media.input.clone();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                command = self.inbox.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                signal = recv_signal(&mut self.media.signals) => self.on_signal(signal),
                event = recv_event(&mut self.media.events) => self.on_media_event(event),
                permit = room(&media), if !self.media.outbox.is_empty() => {
                    self.media.send_next(permit);
                }
                permit = events.reserve(), if self.outbox.has_pending() => match permit {
                    Ok(permit) => self.outbox.send_next(permit),
                    // The application is gone.
                    Err(_) => break,
                },
                () = tokio::time::sleep_until(deadline.into()) => self.on_timer(),
            }
            self.drain();
        }
        info!("control plane stopped");
    }

    /// Carries out what the machine and the routing decided, until neither has more.
    pub(super) fn drain(&mut self) {
        loop {
            let machine = self.drain_machine();
            let routing = self.drain_routing();
            if !machine && !routing {
                break;
            }
        }
        self.finish_leave_if_done();
    }

    /// The earliest time something is due (at most an hour away).
    fn next_deadline(&self, now: Instant) -> Instant {
        let mut deadline = now + Duration::from_secs(3600);
        if let Some(at) = self.session_deadline() {
            deadline = deadline.min(at);
        }
        if let Some(leave) = &self.pending_leave {
            deadline = deadline.min(leave.deadline);
        }
        if let Some(at) = self.routing.poll_timeout(now) {
            deadline = deadline.min(at);
        }
        if let Some(at) = self.turn.poll_timeout() {
            deadline = deadline.min(at);
        }
        deadline
    }

    fn on_timer(&mut self) {
        let now = clock::now();
        let in_meeting = self.in_meeting();
        self.routing.handle_timeout(now, in_meeting);
        if self.turn.handle_timeout(now) && self.media.is_on() {
            self.fetch_ice_servers(None);
        }
        if self
            .pending_leave
            .as_ref()
            .is_some_and(|l| now >= l.deadline)
        {
            self.finish_leave();
        }
        self.on_session_timer(now);
    }
}
