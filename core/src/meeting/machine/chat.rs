//! Chat that is never lost: a sender window per member, retries with backoff until each
//! member acknowledged the line or left, and a delivery state per line.
//!
//! A chat line is state, not telemetry: someone pasting a document must not lose two thirds
//! of it. [`ChatOutbox`] (sans-IO, fed acknowledgements, failures and time) keeps every line
//! until each member it was written to has acknowledged it:
//! - **Window**: at most [`WINDOW`] lines are in flight to one member; the next goes when one
//!   is acknowledged. The receiver's reorder buffer (64 lines) is larger than the window, so
//!   nothing a well-behaved sender sends is ever dropped for lack of room there.
//! - **Retries** after a failure or a `Nack` (the member is an epoch behind, or still on its
//!   way in): one [`Backoff`] per line and member, from
//!   [`Config::chat_retry`](super::Config::chat_retry) doubling to [`RETRY_CAP`], with equal
//!   jitter (the wait is drawn from the upper half of the nominal delay); each attempt is
//!   encrypted afresh in the epoch of the moment.
//! - **Give up** on a member only after [`Config::chat_give_up`](super::Config::chat_give_up)
//!   without an acknowledgement: the line is then *failed* for that member, and the user can
//!   send it again ([`ChatOutbox::resend`]). A member who leaves the group is not a failure:
//!   it no longer counts.
//! - **States** for the sender: pending from [`MeetingEvent::ChatSent`](crate::meeting::MeetingEvent::ChatSent)
//!   on, then delivered (every member acknowledged) or failed for someone.
//!
//! At most [`MAX_UNSENT`] lines wait at once; beyond that `send_chat` refuses with a clear
//! error rather than growing without bound.
//!
//! Every line has a random identity. The runtime keeps the lines still waiting in the store,
//! and after a restart sends them again (`Machine::resume_chat`) under the same identity;
//! receivers take each identity once ([`SeenLines`]), so a line that arrived before its
//! sender crashed, unacknowledged, is not shown twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rand::Rng;

use crate::backoff::Backoff;

/// Lines in flight to one member at once.
pub(crate) const WINDOW: usize = 16;
/// Longest pause between two attempts to deliver a line to one member.
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(4);
/// Most lines waiting for acknowledgements at once (all members together).
pub(crate) const MAX_UNSENT: usize = 10_000;
/// Failed lines remembered for a resend.
const MAX_FAILED_KEPT: usize = 256;

/// What became of a line, for its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Every member it was written to acknowledged it (or left).
    Delivered { seq: u64 },
    /// These members did not acknowledge it in time.
    Failed { seq: u64, peers: Vec<PeerId> },
}

/// One send the caller must make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Send {
    /// To whom.
    pub(crate) peer: PeerId,
    /// The line (our number for it).
    pub(crate) line: u64,
    /// The member's stream and the line's number in it (contiguous per member).
    pub(crate) stream: u64,
    pub(crate) wire: u64,
    /// Attempt number (1 = first).
    pub(crate) attempt: u32,
    /// The line's identity across our restarts (receivers take a line once).
    pub(crate) id: u64,
    /// The text and when it was written.
    pub(crate) text: String,
    pub(crate) unix_ms: u64,
}

/// One line and whom it still has to reach.
#[derive(Debug)]
struct Line {
    id: u64,
    text: String,
    unix_ms: u64,
    /// Members that have not acknowledged it yet.
    waiting: BTreeSet<PeerId>,
    /// Members for whom it failed.
    failed: BTreeSet<PeerId>,
}

/// One line on its way to one member.
#[derive(Debug, Clone)]
struct Attempt {
    line: u64,
    /// The attempt number (1 = first send).
    number: u32,
    /// When the line was first sent to this member (the give-up clock).
    first: Instant,
    /// When to send again; `None` while an attempt is in flight.
    retry_at: Option<Instant>,
    /// The pause before the next attempt.
    backoff: Backoff,
}

/// The lines to one member: a stream of its own (random id, numbers from 1 without gaps),
/// so that the member's reorder buffer never waits for a line that was not for it.
#[derive(Debug)]
struct Queue {
    stream: u64,
    next_wire: u64,
    /// Not sent yet, in order: (line, wire number).
    unsent: VecDeque<(u64, u64)>,
    /// Sent and not acknowledged, by wire number.
    in_flight: BTreeMap<u64, Attempt>,
}

impl Queue {
    fn new(stream: u64) -> Self {
        Self {
            stream,
            next_wire: 1,
            unsent: VecDeque::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// Starts over as `stream`: the unacknowledged lines, in order, from number 1.
    fn restart(&mut self, stream: u64) {
        let mut lines: Vec<u64> = self
            .in_flight
            .values()
            .map(|a| a.line)
            .chain(self.unsent.iter().map(|(line, _)| *line))
            .collect();
        lines.sort_unstable();
        *self = Queue::new(stream);
        for line in lines {
            self.enqueue(line);
        }
    }

    fn enqueue(&mut self, line: u64) {
        self.unsent.push_back((line, self.next_wire));
        self.next_wire += 1;
    }
}

/// Every unacknowledged chat line of ours. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct ChatOutbox {
    /// The first retry's nominal delay.
    retry: Duration,
    lines: BTreeMap<u64, Line>,
    queues: HashMap<PeerId, Queue>,
    /// Lines that failed for someone, oldest first (for a resend).
    failed: VecDeque<u64>,
}

impl ChatOutbox {
    /// An empty outbox whose retries back off from `retry` doubling to [`RETRY_CAP`].
    pub(crate) fn new(retry: Duration) -> Self {
        Self {
            retry,
            lines: BTreeMap::new(),
            queues: HashMap::new(),
            failed: VecDeque::new(),
        }
    }

    /// Whether another line may be queued.
    pub(crate) fn has_room(&self) -> bool {
        self.lines.len() < MAX_UNSENT
    }

    /// Queues line `seq` (whose identity is `id`) for `recipients` (a member seen for the
    /// first time gets a stream id from `new_stream`); a line for nobody is delivered at
    /// once.
    pub(crate) fn push(
        &mut self,
        seq: u64,
        id: u64,
        text: String,
        unix_ms: u64,
        recipients: impl IntoIterator<Item = PeerId>,
        mut new_stream: impl FnMut() -> u64,
    ) -> Option<Settled> {
        let waiting: BTreeSet<PeerId> = recipients.into_iter().collect();
        if waiting.is_empty() {
            return Some(Settled::Delivered { seq });
        }
        for peer in &waiting {
            self.queues
                .entry(*peer)
                .or_insert_with(|| Queue::new(new_stream()))
                .enqueue(seq);
        }
        self.lines.insert(
            seq,
            Line {
                id,
                text,
                unix_ms,
                waiting,
                failed: BTreeSet::new(),
            },
        );
        None
    }

    /// The sends due now: retries whose time came, and new lines within each member's
    /// window (no line more than [`WINDOW`] past the oldest one it has not acknowledged).
    /// The caller sends each and later reports [`ChatOutbox::acked`] or
    /// [`ChatOutbox::failed`] with its peer and wire number.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Send> {
        let mut due = Vec::new();
        let backoff = Backoff::new(self.retry, RETRY_CAP);
        for (peer, queue) in &mut self.queues {
            for (wire, attempt) in &mut queue.in_flight {
                if attempt.retry_at.is_some_and(|at| at <= now) {
                    attempt.retry_at = None;
                    attempt.number += 1;
                    due.push((*peer, queue.stream, *wire, attempt.line, attempt.number));
                }
            }
            while let Some(&(line, wire)) = queue.unsent.front() {
                let oldest = queue.in_flight.keys().next().copied().unwrap_or(wire);
                if wire >= oldest + WINDOW as u64 {
                    break;
                }
                queue.unsent.pop_front();
                queue.in_flight.insert(
                    wire,
                    Attempt {
                        line,
                        number: 1,
                        first: now,
                        retry_at: None,
                        backoff: backoff.clone(),
                    },
                );
                due.push((*peer, queue.stream, wire, line, 1));
            }
        }
        due.sort_by_key(|(_, _, wire, line, _)| (*line, *wire));
        due.into_iter()
            .filter_map(|(peer, stream, wire, line, attempt)| {
                let text = self.lines.get(&line)?;
                Some(Send {
                    peer,
                    line,
                    stream,
                    wire,
                    attempt,
                    id: text.id,
                    text: text.text.clone(),
                    unix_ms: text.unix_ms,
                })
            })
            .collect()
    }

    /// `peer` acknowledged the line it got as number `wire` of `stream` (an answer from a
    /// stream since restarted is ignored: its numbers now name other lines).
    pub(crate) fn acked(&mut self, peer: PeerId, stream: u64, wire: u64) -> Option<Settled> {
        let queue = self.queues.get_mut(&peer).filter(|q| q.stream == stream)?;
        let attempt = queue.in_flight.remove(&wire)?;
        self.resolve(peer, attempt.line)
    }

    /// The line `wire` did not reach `peer` (a failure, or a `Nack`): retry after the
    /// next delay of its back-off (drawn with `rng`), or give up once `give_up` has passed
    /// since the first attempt.
    pub(crate) fn failed<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        peer: PeerId,
        stream: u64,
        wire: u64,
        give_up: Duration,
        rng: &mut R,
    ) -> Option<Settled> {
        let queue = self.queues.get_mut(&peer).filter(|q| q.stream == stream)?;
        let attempt = queue.in_flight.get_mut(&wire)?;
        if now >= attempt.first + give_up {
            let line = attempt.line;
            queue.in_flight.remove(&wire);
            self.lines.get_mut(&line)?.failed.insert(peer);
            return self.resolve(peer, line);
        }
        attempt.retry_at = Some(now + attempt.backoff.next_delay(rng));
        None
    }

    /// `peer` is no longer a member: its lines no longer wait for it (and should it come
    /// back, it gets a new stream).
    pub(crate) fn member_gone(&mut self, peer: PeerId) -> Vec<Settled> {
        let Some(queue) = self.queues.remove(&peer) else {
            return Vec::new();
        };
        let lines: Vec<u64> = queue
            .unsent
            .into_iter()
            .map(|(line, _)| line)
            .chain(queue.in_flight.into_values().map(|a| a.line))
            .collect();
        lines
            .into_iter()
            .filter_map(|line| self.resolve(peer, line))
            .collect()
    }

    /// Queues failed line `seq` again for those of `members` it failed for. Returns whether
    /// there was such a line.
    pub(crate) fn resend(
        &mut self,
        seq: u64,
        members: &BTreeSet<PeerId>,
        mut new_stream: impl FnMut() -> u64,
    ) -> bool {
        let Some(line) = self.lines.get_mut(&seq) else {
            return false;
        };
        let again: Vec<PeerId> = line
            .failed
            .iter()
            .filter(|p| members.contains(p))
            .copied()
            .collect();
        if again.is_empty() {
            return false;
        }
        for peer in again {
            line.failed.remove(&peer);
            line.waiting.insert(peer);
            self.queues
                .entry(peer)
                .or_insert_with(|| Queue::new(new_stream()))
                .enqueue(seq);
        }
        self.failed.retain(|s| *s != seq);
        true
    }

    /// We joined the group again (a new leaf): the members dropped what they knew of our
    /// streams, so every member's unacknowledged lines start over in a new stream,
    /// numbered from 1, in order.
    pub(crate) fn restart_streams(&mut self, mut new_stream: impl FnMut() -> u64) {
        for queue in self.queues.values_mut() {
            queue.restart(new_stream());
        }
    }

    /// `peer` joined again with a new leaf (it restarted): it knows nothing of our stream
    /// to it, which starts over as in [`ChatOutbox::restart_streams`].
    pub(crate) fn restart_stream(&mut self, peer: PeerId, stream: u64) {
        if let Some(queue) = self.queues.get_mut(&peer) {
            queue.restart(stream);
        }
    }

    /// The earliest retry.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .flat_map(|q| q.in_flight.values())
            .filter_map(|a| a.retry_at)
            .min()
    }

    /// Lines not yet acknowledged by everyone.
    pub(crate) fn pending(&self) -> usize {
        self.lines
            .values()
            .filter(|line| !line.waiting.is_empty())
            .count()
    }

    /// `peer` is done with `seq` (acknowledged, failed, or gone): settle the line once
    /// nobody is waiting for it.
    fn resolve(&mut self, peer: PeerId, seq: u64) -> Option<Settled> {
        let line = self.lines.get_mut(&seq)?;
        line.waiting.remove(&peer);
        if !line.waiting.is_empty() {
            return None;
        }
        if line.failed.is_empty() {
            self.lines.remove(&seq);
            return Some(Settled::Delivered { seq });
        }
        let peers = line.failed.iter().copied().collect();
        // Kept for a resend, up to a bound.
        self.failed.push_back(seq);
        while self.failed.len() > MAX_FAILED_KEPT {
            if let Some(old) = self.failed.pop_front() {
                self.lines.remove(&old);
            }
        }
        Some(Settled::Failed { seq, peers })
    }
}

/// Identities of the lines taken from each sender lately: a line its sender wrote before
/// it restarted (and sends again, not knowing it arrived) is taken once.
#[derive(Debug, Default)]
pub(crate) struct SeenLines {
    by_sender: HashMap<PeerId, SeenFrom>,
}

/// The latest [`SEEN_PER_SENDER`] line identities of one sender, oldest first.
#[derive(Debug, Default)]
struct SeenFrom {
    order: VecDeque<u64>,
    ids: HashSet<u64>,
}

/// Line identities remembered per sender (more than a sender keeps unsent).
const SEEN_PER_SENDER: usize = MAX_UNSENT;

impl SeenLines {
    /// Whether line `id` from `sender` is new (and remembers it). Identity 0 is a line of a
    /// sender that names none: always new.
    pub(crate) fn first_time(&mut self, sender: PeerId, id: u64) -> bool {
        if id == 0 {
            return true;
        }
        let seen = self.by_sender.entry(sender).or_default();
        if !seen.ids.insert(id) {
            return false;
        }
        seen.order.push_back(id);
        if seen.order.len() > SEEN_PER_SENDER
            && let Some(old) = seen.order.pop_front()
        {
            seen.ids.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const BASE: Duration = Duration::from_millis(300);
    const GIVE_UP: Duration = Duration::from_secs(30);

    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    fn stream() -> u64 {
        7
    }

    fn push(outbox: &mut ChatOutbox, seq: u64, to: &[PeerId]) -> Option<Settled> {
        outbox.push(
            seq,
            seq,
            format!("line {seq}"),
            seq,
            to.iter().copied(),
            stream,
        )
    }

    #[test]
    fn a_window_of_lines_goes_out_and_each_ack_lets_one_more_through() {
        let now = start();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut outbox = ChatOutbox::new(BASE);
        for seq in 1..=40 {
            assert_eq!(push(&mut outbox, seq, &[a, b]), None);
        }
        let sends = outbox.due(now);
        assert_eq!(sends.len(), 2 * WINDOW);
        assert!(outbox.due(now).is_empty(), "nothing more until an ack");
        assert_eq!(outbox.acked(a, 7, 1), None, "b still has to acknowledge it");
        assert_eq!(outbox.acked(b, 7, 1), Some(Settled::Delivered { seq: 1 }));
        let next = outbox.due(now);
        assert_eq!(next.len(), 2);
        assert!(next.iter().all(|s| s.line == WINDOW as u64 + 1));
        assert_eq!(next[0].text, format!("line {}", WINDOW + 1));
        assert_eq!(outbox.pending(), 39);
    }

    #[test]
    fn a_stuck_line_holds_the_window_so_the_receiver_never_buffers_more_than_it() {
        let now = start();
        let a = PeerId::random();
        let mut outbox = ChatOutbox::new(BASE);
        for seq in 1..=100 {
            push(&mut outbox, seq, &[a]);
        }
        outbox.due(now);
        // Everything but the first is acknowledged: nothing past 1 + WINDOW goes out.
        for wire in 2..=WINDOW as u64 {
            outbox.acked(a, 7, wire);
        }
        assert!(outbox.due(now).is_empty());
        outbox.acked(a, 7, 1);
        let next: Vec<u64> = outbox.due(now).iter().map(|s| s.wire).collect();
        assert_eq!(
            next,
            (WINDOW as u64 + 1..=2 * WINDOW as u64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn each_member_gets_its_own_gapless_numbering() {
        let now = start();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut outbox = ChatOutbox::new(BASE);
        push(&mut outbox, 1, &[a]);
        push(&mut outbox, 2, &[a, b]); // b joined in between
        let sends = outbox.due(now);
        let to_b: Vec<(u64, u64)> = sends
            .iter()
            .filter(|s| s.peer == b)
            .map(|s| (s.line, s.wire))
            .collect();
        assert_eq!(to_b, vec![(2, 1)], "b's first line is its number 1");
    }

    #[test]
    fn failures_back_off_then_give_up_and_a_resend_goes_out_again() {
        let mut now = start();
        let a = PeerId::random();
        let mut outbox = ChatOutbox::new(BASE);
        push(&mut outbox, 1, &[a]);
        assert_eq!(outbox.due(now).len(), 1);
        let mut rng = StdRng::seed_from_u64(1);
        let mut gaps = Vec::new();
        let mut settled = None;
        for _ in 0..100 {
            settled = outbox.failed(now, a, 7, 1, GIVE_UP, &mut rng);
            if settled.is_some() {
                break;
            }
            let at = outbox.next_deadline().expect("a retry is scheduled");
            gaps.push(at - now);
            now = at;
            assert_eq!(outbox.due(now).len(), 1);
        }
        // 300 ms doubling to 4 s, each wait in the upper half of its nominal delay.
        for (i, gap) in gaps.iter().enumerate() {
            let nominal = BASE.saturating_mul(1 << i.min(16)).min(RETRY_CAP);
            assert!(
                *gap >= nominal / 2 && *gap <= nominal,
                "retry {i} after {gap:?}, nominal {nominal:?}"
            );
        }
        assert!(gaps.len() >= 8, "30 s hold at least 8 retries: {gaps:?}");
        assert_eq!(
            settled,
            Some(Settled::Failed {
                seq: 1,
                peers: vec![a]
            })
        );
        // The user sends it again: it goes out to `a` once more, as its next number.
        assert!(outbox.resend(1, &BTreeSet::from([a]), stream));
        let sends = outbox.due(now);
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].wire, 2);
        assert_eq!(outbox.acked(a, 7, 2), Some(Settled::Delivered { seq: 1 }));
        assert!(!outbox.resend(1, &BTreeSet::from([a]), stream));
    }

    #[test]
    fn a_member_who_leaves_is_no_longer_waited_for() {
        let now = start();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut outbox = ChatOutbox::new(BASE);
        for seq in 1..=20 {
            push(&mut outbox, seq, &[a, b]);
        }
        for _ in 0..3 {
            for send in outbox.due(now) {
                if send.peer == a {
                    outbox.acked(a, send.stream, send.wire);
                }
            }
        }
        let settled = outbox.member_gone(b);
        assert_eq!(
            settled.len(),
            20,
            "every line is delivered to those still there"
        );
        assert!(
            settled
                .iter()
                .all(|s| matches!(s, Settled::Delivered { .. }))
        );
        assert_eq!(outbox.pending(), 0);
    }

    #[test]
    fn an_answer_from_before_a_stream_restart_is_ignored() {
        let now = start();
        let a = PeerId::random();
        let mut outbox = ChatOutbox::new(BASE);
        push(&mut outbox, 1, &[a]);
        push(&mut outbox, 2, &[a]);
        outbox.due(now);
        outbox.acked(a, 7, 1);
        // `a` rejoined: line 2 is its number 1 in stream 8 now.
        outbox.restart_stream(a, 8);
        assert_eq!(outbox.acked(a, 7, 1), None, "a stale answer settled a line");
        let sends = outbox.due(now);
        assert_eq!((sends[0].line, sends[0].stream, sends[0].wire), (2, 8, 1));
        assert_eq!(outbox.acked(a, 8, 1), Some(Settled::Delivered { seq: 2 }));
    }

    #[test]
    fn jitter_spreads_retries_and_a_line_for_nobody_is_delivered_at_once() {
        let now = start();
        let mut outbox = ChatOutbox::new(BASE);
        assert_eq!(
            push(&mut outbox, 7, &[]),
            Some(Settled::Delivered { seq: 7 })
        );
        // Members that failed together do not retry together.
        let peers: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
        push(&mut outbox, 1, &peers);
        outbox.due(now);
        let mut rng = StdRng::seed_from_u64(3);
        let mut waits = BTreeSet::new();
        for peer in &peers {
            outbox.failed(now, *peer, 7, 1, GIVE_UP, &mut rng);
            let retry_at = outbox.queues[peer].in_flight[&1].retry_at;
            let wait = retry_at.expect("a retry is scheduled") - now;
            assert!(
                wait >= BASE / 2 && wait <= BASE,
                "first retry after {wait:?}"
            );
            waits.insert(wait);
        }
        assert!(waits.len() > 1, "every member retries at the same moment");
    }
}
