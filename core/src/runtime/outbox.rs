//! Events for the application, queued without ever waiting for it (lossy on purpose).
//!
//! The driver never blocks on a slow reader: events wait here, and the loop hands the
//! oldest on whenever the stream has room. When the reader falls
//! [`Config::event_backlog`](crate::Config) events behind, the oldest are dropped and
//! counted, and the reader is told with [`Event::Lagged`] as soon as it reads again (then
//! re-reads the state it needs: roster, history). Lossless state (keys, roster in the
//! machine, chat history in the store) never depends on this stream.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tracing::warn;

use super::Event;

/// The event outbox. See the [module docs](self).
#[derive(Debug)]
pub(super) struct Outbox {
    /// The stream to the application (bounded, [`super::EVENT_CAPACITY`]).
    events: mpsc::Sender<Event>,
    /// Events not yet taken by the application.
    queue: VecDeque<Event>,
    /// Events dropped from a full outbox since the reader was last told.
    lagged: u64,
    /// Most events held.
    backlog: usize,
}

impl Outbox {
    /// An outbox in front of `events` holding at most `backlog` events (at least one).
    pub(super) fn new(events: mpsc::Sender<Event>, backlog: usize) -> Self {
        Self {
            events,
            queue: VecDeque::new(),
            lagged: 0,
            backlog: backlog.max(1),
        }
    }

    /// Queues `event`, dropping the oldest one when full.
    pub(super) fn push(&mut self, event: Event) {
        if self.queue.len() >= self.backlog {
            self.queue.pop_front();
            self.lagged += 1;
            if self.lagged == 1 {
                warn!("the application is not reading events; dropping the oldest");
            }
        }
        self.queue.push_back(event);
    }

    /// Whether something waits for the reader.
    pub(super) fn has_pending(&self) -> bool {
        !self.queue.is_empty() || self.lagged > 0
    }

    /// A handle on the stream, so that waiting for room does not borrow the driver.
    pub(super) fn sender(&self) -> mpsc::Sender<Event> {
        self.events.clone()
    }

    /// Sends the next event into the room reserved: the reader is told where a gap is,
    /// right after what it read.
    pub(super) fn send_next(&mut self, permit: mpsc::Permit<'_, Event>) {
        if self.lagged > 0 {
            let missed = std::mem::take(&mut self.lagged);
            permit.send(Event::Lagged { missed });
        } else if let Some(event) = self.queue.pop_front() {
            permit.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meeting::MeetingEvent;

    fn chat(n: u64) -> Event {
        Event::Meeting(MeetingEvent::ChatSent {
            seq: n,
            id: n,
            text: format!("line {n}"),
            unix_ms: n,
            resumed: false,
        })
    }

    /// Hands on what the stream has room for.
    fn flush(outbox: &mut Outbox, events: &mpsc::Sender<Event>) {
        while outbox.has_pending() {
            let Ok(permit) = events.try_reserve() else {
                return;
            };
            outbox.send_next(permit);
        }
    }

    #[test]
    fn a_reader_that_falls_behind_loses_the_oldest_and_is_told_where() {
        let (events, mut reader) = mpsc::channel(2);
        let mut outbox = Outbox::new(events.clone(), 3);
        for n in 0..2 {
            outbox.push(chat(n));
        }
        flush(&mut outbox, &events);
        // The stream is full: six more wait, of which the outbox keeps the newest three.
        for n in 2..8 {
            outbox.push(chat(n));
        }
        assert_eq!(reader.try_recv().ok(), Some(chat(0)));
        assert_eq!(reader.try_recv().ok(), Some(chat(1)));
        flush(&mut outbox, &events);
        assert_eq!(reader.try_recv().ok(), Some(Event::Lagged { missed: 3 }));
        assert_eq!(reader.try_recv().ok(), Some(chat(5)));
        flush(&mut outbox, &events);
        assert_eq!(reader.try_recv().ok(), Some(chat(6)));
        assert_eq!(reader.try_recv().ok(), Some(chat(7)));
        assert!(!outbox.has_pending());
    }
}
