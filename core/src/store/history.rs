//! Chat history and remembered meetings.
//!
//! - tree `history`: meeting id (16) ‖ local sequence (u64 BE) → CBOR [`ChatRecord`], so a
//!   meeting's lines iterate in arrival order.
//! - tree `meetings`: meeting id → CBOR [`MeetingRecord`] (the invite, to rejoin later).
//!   The invite holds the meeting secret: the data directory must be protected like a
//!   key store (see `docs/threat-model.md`).

use serde::{Deserialize, Serialize};

use super::schema::{TREE_HISTORY, TREE_MEETINGS};
use super::{Store, StoreError};
use crate::invite::MeetingId;

/// Most lines kept per meeting; older ones are dropped first.
pub const MAX_HISTORY_PER_MEETING: usize = 10_000;

/// One chat line as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRecord {
    /// Sender's peer id (base58).
    pub from: String,
    /// Sender's display name.
    pub name: String,
    /// The text.
    pub text: String,
    /// Sender's timestamp, ms since the Unix epoch.
    pub unix_ms: u64,
}

/// A meeting this installation was in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingRecord {
    /// The invite URI (contains the secret).
    pub invite: String,
    /// Last time we were in it, ms since the Unix epoch.
    pub last_seen_unix_ms: u64,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

impl Store {
    /// Appends a chat line to a meeting's history.
    pub fn append_chat(&self, meeting: MeetingId, record: &ChatRecord) -> Result<(), StoreError> {
        let tree = self.db.open_tree(TREE_HISTORY)?;
        let seq = self.db.generate_id()?;
        let mut key = meeting.0.to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        tree.insert(key, encode(record))?;
        if tree.scan_prefix(meeting.0).count() > MAX_HISTORY_PER_MEETING
            && let Some(Ok((oldest, _))) = tree.scan_prefix(meeting.0).next()
        {
            tree.remove(oldest)?;
        }
        self.flush()
    }

    /// A meeting's history, oldest first. Undecodable lines are skipped.
    pub fn chat_history(&self, meeting: MeetingId) -> Result<Vec<ChatRecord>, StoreError> {
        let tree = self.db.open_tree(TREE_HISTORY)?;
        let mut lines = Vec::new();
        for entry in tree.scan_prefix(meeting.0) {
            let (_, value) = entry?;
            match ciborium::from_reader(value.as_ref()) {
                Ok(record) => lines.push(record),
                Err(_) => tracing::warn!("skipping a corrupt history line"),
            }
        }
        Ok(lines)
    }

    /// Remembers a meeting (and its invite) for rejoining.
    pub fn remember_meeting(
        &self,
        meeting: MeetingId,
        record: &MeetingRecord,
    ) -> Result<(), StoreError> {
        self.db
            .open_tree(TREE_MEETINGS)?
            .insert(meeting.0, encode(record))?;
        self.flush()
    }

    /// Remembered meetings, most recent first.
    pub fn meetings(&self) -> Result<Vec<(MeetingId, MeetingRecord)>, StoreError> {
        let mut meetings = Vec::new();
        for entry in self.db.open_tree(TREE_MEETINGS)?.iter() {
            let (key, value) = entry?;
            let Ok(id) = <[u8; 16]>::try_from(key.as_ref()) else {
                continue;
            };
            if let Ok(record) = ciborium::from_reader::<MeetingRecord, _>(value.as_ref()) {
                meetings.push((MeetingId(id), record));
            }
        }
        meetings.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_seen_unix_ms));
        Ok(meetings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_survives_reopening_and_stays_per_meeting() {
        let dir = tempfile::tempdir().unwrap();
        let line = |text: &str| ChatRecord {
            from: "p".into(),
            name: "Ada".into(),
            text: text.into(),
            unix_ms: 1,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store.append_chat(MeetingId([1; 16]), &line("one")).unwrap();
            store
                .append_chat(MeetingId([2; 16]), &line("other"))
                .unwrap();
            store.append_chat(MeetingId([1; 16]), &line("two")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let texts: Vec<String> = store
            .chat_history(MeetingId([1; 16]))
            .unwrap()
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(texts, vec!["one", "two"]);
    }

    #[test]
    fn meetings_are_remembered_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .remember_meeting(
                MeetingId([1; 16]),
                &MeetingRecord {
                    invite: "a".into(),
                    last_seen_unix_ms: 1,
                },
            )
            .unwrap();
        store
            .remember_meeting(
                MeetingId([2; 16]),
                &MeetingRecord {
                    invite: "b".into(),
                    last_seen_unix_ms: 2,
                },
            )
            .unwrap();
        let ids: Vec<MeetingId> = store
            .meetings()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![MeetingId([2; 16]), MeetingId([1; 16])]);
    }
}
