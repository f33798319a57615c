//! Chat history and remembered meetings, sealed (see [`super::seal`]).
//!
//! - tree `history`: blinded meeting id (16) ‖ local sequence (u64 BE) → sealed CBOR
//!   [`ChatRecord`], so a meeting's lines iterate in arrival order without naming it.
//! - tree `meetings`: blinded meeting id → sealed (meeting id ‖ CBOR [`MeetingRecord`]), the
//!   invite to rejoin later. The invite holds the meeting secret.
//!
//! [`Store::forget_meeting`] removes both and rewrites the database, so nothing of the
//! meeting stays in sled's log.

use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::key_source::KeySource;
use super::schema::TREE_HISTORY;
use super::{Store, StoreError};
use crate::invite::MeetingId;

/// Most lines kept per meeting; older ones are dropped first.
pub const MAX_HISTORY_PER_MEETING: usize = 10_000;

/// One chat line as stored. `Debug` shows who and when, never the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl std::fmt::Debug for ChatRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRecord")
            .field("from", &self.from)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("unix_ms", &self.unix_ms)
            .finish_non_exhaustive()
    }
}

/// A meeting this installation was in. `Debug` never shows the invite (it holds the secret).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct MeetingRecord {
    /// The invite URI (contains the secret): the current one, after any rotation.
    pub invite: String,
    /// Last time we were in it, ms since the Unix epoch.
    pub last_seen_unix_ms: u64,
    /// Members kicked from the meeting (base58 peer ids): refused after a restart too.
    #[serde(default)]
    pub banned: Vec<String>,
    /// SHA-256 of each meeting secret a kick rotated away from: joining with an invite that
    /// holds one of them uses `invite` instead ([`MeetingRecord::supersedes`]).
    #[serde(default)]
    pub superseded: Vec<[u8; 32]>,
}

impl MeetingRecord {
    /// The record of a meeting entered with `invite` (no bans, nothing superseded yet).
    pub fn new(invite: String, last_seen_unix_ms: u64) -> Self {
        Self {
            invite,
            last_seen_unix_ms,
            banned: Vec::new(),
            superseded: Vec::new(),
        }
    }

    /// What `superseded` keeps of a secret.
    pub fn secret_digest(secret: &crate::invite::MeetingSecret) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::new()
            .chain_update(b"conclave superseded secret v1")
            .chain_update(secret.expose())
            .finalize()
            .into()
    }

    /// Whether a kick rotated this meeting away from `secret` (so our `invite` is newer).
    pub fn supersedes(&self, secret: &crate::invite::MeetingSecret) -> bool {
        self.superseded.contains(&Self::secret_digest(secret))
    }
}

impl std::fmt::Debug for MeetingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeetingRecord")
            .field("invite", &"Invite(..)")
            .field("last_seen_unix_ms", &self.last_seen_unix_ms)
            .field("banned", &self.banned.len())
            .field("superseded", &self.superseded.len())
            .finish()
    }
}

fn encode<T: Serialize>(value: &T) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = zeroize::Zeroizing::new(Vec::new());
    crate::proto::write_cbor(value, &mut out);
    out
}

impl Store {
    /// The (blinded) key prefix of a meeting's history lines.
    fn history_prefix(&self, meeting: MeetingId) -> [u8; 16] {
        let blinded = self.key.blind(TREE_HISTORY, &meeting.0);
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&blinded[..16]);
        prefix
    }

    /// Appends an already encoded line to a meeting's history (bounded, oldest dropped).
    pub(super) fn append_sealed_line(
        &self,
        meeting: MeetingId,
        encoded: &[u8],
    ) -> Result<(), StoreError> {
        let prefix = self.history_prefix(meeting);
        // The next sequence number follows the meeting's last line (sled's id generator
        // would restart after a rewrite into a fresh database).
        let seq = match self.history.scan_prefix(prefix).next_back() {
            Some(entry) => {
                let (key, _) = entry?;
                key.get(16..24)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, |b| u64::from_be_bytes(b).saturating_add(1))
            }
            None => 0,
        };
        let mut key = prefix.to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let sealed = self.key.seal(TREE_HISTORY, &key, encoded);
        self.history.insert(key, sealed)?;
        if self.history.scan_prefix(prefix).count() > MAX_HISTORY_PER_MEETING
            && let Some(Ok((oldest, _))) = self.history.scan_prefix(prefix).next()
        {
            self.history.remove(oldest)?;
        }
        Ok(())
    }

    /// Appends a chat line to a meeting's history.
    pub fn append_chat(&self, meeting: MeetingId, record: &ChatRecord) -> Result<(), StoreError> {
        self.append_sealed_line(meeting, &encode(record))?;
        self.flush()
    }

    /// Appends a line of ours to a meeting's history and keeps it as unacknowledged
    /// ([`Store::save_pending_chat`]), with one flush.
    pub fn append_own_chat(
        &self,
        meeting: MeetingId,
        record: &ChatRecord,
        pending: &crate::store::PendingChat,
    ) -> Result<(), StoreError> {
        self.append_sealed_line(meeting, &encode(record))?;
        self.insert_pending_chat(meeting, pending)?;
        self.flush()
    }

    /// A meeting's history, oldest first. Unreadable lines are skipped.
    pub fn chat_history(&self, meeting: MeetingId) -> Result<Vec<ChatRecord>, StoreError> {
        let mut lines = Vec::new();
        for entry in self.history.scan_prefix(self.history_prefix(meeting)) {
            let (key, value) = entry?;
            let record = self
                .key
                .open(TREE_HISTORY, &key, &value)
                .ok()
                .and_then(|plain| ciborium::from_reader(plain.as_slice()).ok());
            match record {
                Some(record) => lines.push(record),
                None => tracing::warn!("skipping a corrupt history line"),
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
        self.meetings.insert(&meeting.0, &encode(record))?;
        self.flush()
    }

    /// The remembered meeting `meeting`, if any.
    pub fn meeting(&self, meeting: MeetingId) -> Result<Option<MeetingRecord>, StoreError> {
        Ok(self
            .meetings
            .get(&meeting.0)?
            .and_then(|value| ciborium::from_reader::<MeetingRecord, _>(value.as_slice()).ok()))
    }

    /// Remembered meetings, most recent first.
    pub fn meetings(&self) -> Result<Vec<(MeetingId, MeetingRecord)>, StoreError> {
        let mut meetings = Vec::new();
        for (key, value) in self.meetings.entries()? {
            let Ok(id) = <[u8; 16]>::try_from(key.as_slice()) else {
                continue;
            };
            if let Ok(record) = ciborium::from_reader::<MeetingRecord, _>(value.as_slice()) {
                meetings.push((MeetingId(id), record));
            }
        }
        meetings.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_seen_unix_ms));
        Ok(meetings)
    }

    /// Forgets a meeting: its history, its unsent lines and its invite are removed and the database is
    /// rewritten into fresh files, so nothing of it (not even sealed) stays on disk. Needs the
    /// data directory to itself (no client running on it). Returns whether anything was
    /// known about the meeting.
    pub fn forget_meeting(
        data_dir: &Path,
        source: &KeySource,
        meeting: MeetingId,
    ) -> Result<bool, StoreError> {
        let store = Self::open(data_dir, source)?;
        let known = store.meetings.get(&meeting.0)?.is_some();
        let mut lines = 0usize;
        let prefix = store.history_prefix(meeting);
        let keys: Vec<sled::IVec> = store
            .history
            .scan_prefix(prefix)
            .keys()
            .collect::<Result<_, _>>()?;
        for key in keys {
            store.history.remove(key)?;
            lines += 1;
        }
        store.meetings.remove(&meeting.0)?;
        lines += store.clear_pending_chats(meeting)?;
        store.flush()?;
        store.rewrite()?;
        tracing::info!(meeting = %meeting.short(), lines, "forgot a meeting");
        Ok(known || lines > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeySource;

    #[test]
    fn history_survives_reopening_and_stays_per_meeting() {
        let dir = crate::store::private_tempdir();
        let line = |text: &str| ChatRecord {
            from: "p".into(),
            name: "Ada".into(),
            text: text.into(),
            unix_ms: 1,
        };
        {
            let store = Store::open(dir.path(), &KeySource::InsecureKeyFile).unwrap();
            store.append_chat(MeetingId([1; 16]), &line("one")).unwrap();
            store
                .append_chat(MeetingId([2; 16]), &line("other"))
                .unwrap();
            store.append_chat(MeetingId([1; 16]), &line("two")).unwrap();
        }
        let store = Store::open(dir.path(), &KeySource::InsecureKeyFile).unwrap();
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
        let dir = crate::store::private_tempdir();
        let store = Store::open(dir.path(), &KeySource::InsecureKeyFile).unwrap();
        store
            .remember_meeting(MeetingId([1; 16]), &MeetingRecord::new("a".into(), 1))
            .unwrap();
        store
            .remember_meeting(MeetingId([2; 16]), &MeetingRecord::new("b".into(), 2))
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
