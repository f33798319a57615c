//! Our chat lines not yet acknowledged by every member, sealed (see [`super::seal`]), so that
//! a crash or a restart loses none: the runtime writes a line here when it is sent and
//! removes it once every member has it (or it failed for someone, who was told); the lines
//! left are sent again when we are back in the meeting.
//!
//! Tree `outbox`: meeting id (16) ‖ line identity (u64 BE), blinded → sealed CBOR
//! [`PendingChat`].

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::invite::MeetingId;

/// Most unacknowledged lines kept per meeting (the meeting machine keeps no more waiting).
pub const MAX_PENDING_PER_MEETING: usize = 10_000;

/// One of our lines on its way. `Debug` never shows the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChat {
    /// The line's identity (the same when it is sent again).
    pub id: u64,
    /// When it was written, ms since the Unix epoch.
    pub unix_ms: u64,
    /// Its number in the session that wrote it: orders lines written in one millisecond.
    pub order: u64,
    /// The text.
    pub text: String,
}

impl std::fmt::Debug for PendingChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingChat")
            .field("id", &self.id)
            .field("unix_ms", &self.unix_ms)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish_non_exhaustive()
    }
}

fn outbox_key(meeting: MeetingId, id: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&meeting.0);
    key[16..].copy_from_slice(&id.to_be_bytes());
    key
}

impl Store {
    /// Keeps `line` of ours until [`Store::remove_pending_chat`] (a meeting holding
    /// [`MAX_PENDING_PER_MEETING`] lines keeps no more).
    pub fn save_pending_chat(
        &self,
        meeting: MeetingId,
        line: &PendingChat,
    ) -> Result<(), StoreError> {
        self.insert_pending_chat(meeting, line)?;
        self.flush()
    }

    /// [`Store::save_pending_chat`] without the flush (the caller flushes).
    pub(super) fn insert_pending_chat(
        &self,
        meeting: MeetingId,
        line: &PendingChat,
    ) -> Result<(), StoreError> {
        if self.outbox.len() >= MAX_PENDING_PER_MEETING
            && self.pending_chats(meeting)?.len() >= MAX_PENDING_PER_MEETING
        {
            tracing::warn!("too many unacknowledged chat lines to keep another");
            return Ok(());
        }
        let mut value = zeroize::Zeroizing::new(Vec::new());
        crate::proto::write_cbor(line, &mut value);
        self.outbox.insert(&outbox_key(meeting, line.id), &value)
    }

    /// Our line `id` reached everyone it could: it is no longer kept. Not flushed: should
    /// a crash undo the removal, the line is only sent again, and receivers take it once.
    pub fn remove_pending_chat(&self, meeting: MeetingId, id: u64) -> Result<(), StoreError> {
        self.outbox.remove(&outbox_key(meeting, id))
    }

    /// Our lines of a meeting still on their way, in the order they were written.
    pub fn pending_chats(&self, meeting: MeetingId) -> Result<Vec<PendingChat>, StoreError> {
        let mut lines: Vec<PendingChat> = self
            .outbox
            .entries()?
            .into_iter()
            .filter(|(key, _)| key.get(..16) == Some(&meeting.0[..]))
            .filter_map(|(_, value)| ciborium::from_reader(value.as_slice()).ok())
            .collect();
        lines.sort_by_key(|line| (line.unix_ms, line.order));
        Ok(lines)
    }

    /// Forgets every pending line of a meeting; returns how many there were.
    pub(super) fn clear_pending_chats(&self, meeting: MeetingId) -> Result<usize, StoreError> {
        let lines = self.pending_chats(meeting)?;
        for line in &lines {
            self.outbox.remove(&outbox_key(meeting, line.id))?;
        }
        Ok(lines.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeySource;

    fn line(id: u64, unix_ms: u64, order: u64) -> PendingChat {
        PendingChat {
            id,
            unix_ms,
            order,
            text: format!("line {id}"),
        }
    }

    #[test]
    fn pending_lines_survive_reopening_in_order_per_meeting_until_removed() {
        let dir = crate::store::private_tempdir();
        let (one, two) = (MeetingId([1; 16]), MeetingId([2; 16]));
        {
            let store = Store::open(dir.path(), &KeySource::InsecureKeyFile).unwrap();
            store.save_pending_chat(one, &line(30, 5, 2)).unwrap();
            store.save_pending_chat(one, &line(10, 5, 1)).unwrap();
            store.save_pending_chat(two, &line(20, 1, 1)).unwrap();
            store.save_pending_chat(one, &line(40, 9, 1)).unwrap();
            store.remove_pending_chat(one, 40).unwrap();
        }
        let store = Store::open(dir.path(), &KeySource::InsecureKeyFile).unwrap();
        let ids = |m| -> Vec<u64> {
            store
                .pending_chats(m)
                .unwrap()
                .into_iter()
                .map(|l| l.id)
                .collect()
        };
        assert_eq!(ids(one), vec![10, 30], "oldest first; the removed one gone");
        assert_eq!(ids(two), vec![20]);
        assert_eq!(store.clear_pending_chats(one).unwrap(), 2);
        assert!(ids(one).is_empty());
        assert_eq!(ids(two), vec![20]);
    }
}
