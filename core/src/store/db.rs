//! Opening the database: permissions, the store key, the schema check and migration, the
//! rewrite into a fresh database, and the identity records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::StoreError;
use super::key_source::KeySource;
use super::permissions::{prepare_data_dir, tighten};
use super::schema::{
    DB_DIR, DB_NEW_DIR, KEY_CHECK_PLAIN, KEY_DISPLAY_NAME, KEY_KEY_CHECK, KEY_SCHEMA_VERSION,
    KEY_SECRET_KEY, SCHEMA_PLAINTEXT, SCHEMA_VERSION, TREE_HISTORY, TREE_IDENTITY, TREE_MEETINGS,
    TREE_META, TREE_MLS, TREE_OUTBOX, TREE_PEERS, TREE_VERIFIED,
};
use super::seal::{SealedTree, StoreKey};
use crate::identity::Identity;

/// Handle to the open database. Cheap to clone; all clones share one sled instance.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    pub(super) db: sled::Db,
    pub(super) key: Arc<StoreKey>,
    pub(super) identity: SealedTree,
    pub(super) peers: SealedTree,
    pub(super) meetings: SealedTree,
    pub(super) verified: SealedTree,
    pub(super) outbox: SealedTree,
    pub(super) history: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, with the key from `source`.
    ///
    /// Refuses a data directory open to other users ([`StoreError::TooOpen`]); migrates a
    /// plaintext (schema 1) database into a fresh sealed one. Fails with
    /// [`StoreError::Locked`] when another process has it open.
    pub fn open(data_dir: &Path, source: &KeySource) -> Result<Self, StoreError> {
        prepare_data_dir(data_dir)?;
        recover_interrupted_rewrite(data_dir)?;
        let key = Arc::new(source.resolve(data_dir)?);
        let db = open_db(data_dir, &data_dir.join(DB_DIR))?;
        let meta = db.open_tree(TREE_META)?;
        let found = match meta.get(KEY_SCHEMA_VERSION)? {
            None => None,
            Some(raw) => {
                let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "schema version",
                })?;
                Some(u32::from_be_bytes(bytes))
            }
        };
        let store = match found {
            None => {
                drop(meta);
                let store = Self::init(data_dir, db, key)?;
                info!(version = SCHEMA_VERSION, "created new store");
                store
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::UnsupportedSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) if found <= SCHEMA_PLAINTEXT => {
                drop(meta);
                migrate_plaintext(data_dir, db, key.clone())?;
                let db = open_db(data_dir, &data_dir.join(DB_DIR))?;
                Self::with_db(data_dir, db, key)?
            }
            Some(found) => {
                let check = meta
                    .get(KEY_KEY_CHECK)?
                    .ok_or(StoreError::Corrupt { what: "key check" })?;
                match key.open(TREE_META, KEY_KEY_CHECK, &check) {
                    Ok(plain) if plain.as_slice() == KEY_CHECK_PLAIN => {}
                    _ => {
                        return Err(StoreError::WrongKey {
                            path: data_dir.to_owned(),
                        });
                    }
                }
                debug!(version = found, "opened store");
                drop(meta);
                Self::with_db(data_dir, db, key)?
            }
        };
        store.flush()?;
        tighten(data_dir).map_err(|source| StoreError::Open {
            path: data_dir.to_owned(),
            source,
        })?;
        Ok(store)
    }

    fn with_db(data_dir: &Path, db: sled::Db, key: Arc<StoreKey>) -> Result<Self, StoreError> {
        Ok(Self {
            path: data_dir.to_owned(),
            identity: SealedTree::open(&db, TREE_IDENTITY, key.clone())?,
            peers: SealedTree::open(&db, TREE_PEERS, key.clone())?,
            meetings: SealedTree::open(&db, TREE_MEETINGS, key.clone())?,
            verified: SealedTree::open(&db, TREE_VERIFIED, key.clone())?,
            outbox: SealedTree::open(&db, TREE_OUTBOX, key.clone())?,
            history: db.open_tree(TREE_HISTORY)?,
            key,
            db,
        })
    }

    /// A store on a new, empty database: writes the schema version and the key check.
    fn init(data_dir: &Path, db: sled::Db, key: Arc<StoreKey>) -> Result<Self, StoreError> {
        let meta = db.open_tree(TREE_META)?;
        meta.insert(
            KEY_KEY_CHECK,
            key.seal(TREE_META, KEY_KEY_CHECK, KEY_CHECK_PLAIN),
        )?;
        meta.insert(KEY_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())?;
        Self::with_db(data_dir, db, key)
    }

    /// The data directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The installation identity, created and persisted on first use.
    pub fn load_or_create_identity(&self) -> Result<Identity, StoreError> {
        if let Some(raw) = self.identity.get(KEY_SECRET_KEY)? {
            return Identity::from_secret_bytes(&raw).map_err(|_| StoreError::Corrupt {
                what: "identity key",
            });
        }
        let identity = Identity::generate();
        let secret = identity.secret_bytes();
        // Compare and swap: if two threads race here, exactly one key wins.
        let won = self.identity.insert_new(KEY_SECRET_KEY, secret.as_ref())?;
        self.flush()?;
        if won {
            info!(peer_id = %identity.peer_id(), "created new identity");
            Ok(identity)
        } else {
            self.load_or_create_identity()
        }
    }

    /// Replaces the installation identity (restoring a backup). Takes effect the next time
    /// a client starts on this data directory. Verification marks belonged to the old key
    /// and are kept only as history.
    pub fn replace_identity(&self, identity: &Identity) -> Result<(), StoreError> {
        let secret = identity.secret_bytes();
        self.identity.insert(KEY_SECRET_KEY, secret.as_ref())?;
        info!(peer_id = %identity.peer_id(), "identity replaced from a backup");
        self.flush()
    }

    /// The display name saved by [`Store::set_display_name`], if any.
    pub fn display_name(&self) -> Result<Option<String>, StoreError> {
        self.identity
            .get(KEY_DISPLAY_NAME)?
            .map(|raw| {
                String::from_utf8(raw.to_vec()).map_err(|_| StoreError::Corrupt {
                    what: "display name",
                })
            })
            .transpose()
    }

    /// Saves the display name shown to other members.
    pub fn set_display_name(&self, name: &str) -> Result<(), StoreError> {
        self.identity.insert(KEY_DISPLAY_NAME, name.as_bytes())?;
        self.flush()
    }

    pub(super) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Rewrites the database into a fresh one holding only the live entries, and deletes
    /// the old files: nothing removed before survives in sled's log. Consumes the store;
    /// every clone must be gone (the rewrite needs the database to itself).
    pub(super) fn rewrite(self) -> Result<(), StoreError> {
        let data_dir = self.path.clone();
        let db = self.db.clone();
        drop(self);
        let new_path = data_dir.join(DB_NEW_DIR);
        remove_dir_if_present(&data_dir, &new_path)?;
        {
            let fresh = open_db(&data_dir, &new_path)?;
            for name in db.tree_names() {
                let from = db.open_tree(&name)?;
                let to = fresh.open_tree(&name)?;
                for entry in from.iter() {
                    let (key, value) = entry?;
                    to.insert(key, value)?;
                }
            }
            fresh.flush()?;
        }
        drop(db);
        swap_in_new_db(&data_dir)
    }
}

/// Opens the sled database at `path`, telling a held lock from other failures.
fn open_db(data_dir: &Path, path: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(path)
        .open()
        .map_err(|err| classify_open_error(data_dir, err))
}

/// Copies a plaintext (schema 1) database into a fresh sealed one and swaps it in. The MLS
/// tree is not copied (MLS state is no longer stored).
fn migrate_plaintext(data_dir: &Path, old: sled::Db, key: Arc<StoreKey>) -> Result<(), StoreError> {
    let new_path = data_dir.join(DB_NEW_DIR);
    remove_dir_if_present(data_dir, &new_path)?;
    let mut lines = 0usize;
    {
        let fresh = Store::init(data_dir, open_db(data_dir, &new_path)?, key)?;
        let identity = old.open_tree(TREE_IDENTITY)?;
        for name in [KEY_SECRET_KEY, KEY_DISPLAY_NAME] {
            if let Some(value) = identity.get(name)? {
                fresh.identity.insert(name, &value)?;
            }
        }
        for (tree, into) in [
            (TREE_PEERS, &fresh.peers),
            (TREE_MEETINGS, &fresh.meetings),
            (TREE_VERIFIED, &fresh.verified),
        ] {
            for entry in old.open_tree(tree)?.iter() {
                let (key, value) = entry?;
                into.insert(&key, &value)?;
            }
        }
        // History keys were meeting id (16) ‖ sequence: iteration keeps the order.
        for entry in old.open_tree(TREE_HISTORY)?.iter() {
            let (key, value) = entry?;
            let Some(meeting) = key.get(..16).and_then(|m| <[u8; 16]>::try_from(m).ok()) else {
                continue;
            };
            fresh.append_sealed_line(crate::invite::MeetingId(meeting), &value)?;
            lines += 1;
        }
        fresh.flush()?;
    }
    let had_mls = old
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == TREE_MLS.as_bytes());
    drop(old);
    swap_in_new_db(data_dir)?;
    info!(
        lines,
        dropped_mls_state = had_mls,
        "migrated the plaintext store into a sealed one"
    );
    Ok(())
}

/// Replaces `db` by `db.new` (both in `data_dir`): the old directory is deleted first, so a
/// crash in between leaves only `db.new`, which [`recover_interrupted_rewrite`] renames.
fn swap_in_new_db(data_dir: &Path) -> Result<(), StoreError> {
    let db_path = data_dir.join(DB_DIR);
    let new_path = data_dir.join(DB_NEW_DIR);
    remove_dir_if_present(data_dir, &db_path)?;
    std::fs::rename(&new_path, &db_path).map_err(|source| StoreError::Open {
        path: data_dir.to_owned(),
        source,
    })
}

/// Finishes or abandons a rewrite a crash interrupted: `db.new` alone is complete (the old
/// database is only deleted once the new one is flushed); next to `db` it is discarded.
fn recover_interrupted_rewrite(data_dir: &Path) -> Result<(), StoreError> {
    let db_path = data_dir.join(DB_DIR);
    let new_path = data_dir.join(DB_NEW_DIR);
    if !new_path.exists() {
        return Ok(());
    }
    if db_path.exists() {
        warn!("discarding an interrupted rewrite of the store");
        remove_dir_if_present(data_dir, &new_path)
    } else {
        warn!("completing an interrupted rewrite of the store");
        swap_in_new_db(data_dir)
    }
}

fn remove_dir_if_present(data_dir: &Path, path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Open {
            path: data_dir.to_owned(),
            source,
        }),
    }
}

fn classify_open_error(data_dir: &Path, err: sled::Error) -> StoreError {
    match err {
        sled::Error::Io(io) if is_lock_error(&io) => StoreError::Locked {
            path: data_dir.to_owned(),
        },
        sled::Error::Io(io) => StoreError::Open {
            path: data_dir.to_owned(),
            source: io,
        },
        other => StoreError::Sled(other),
    }
}

/// sled reports a held file lock as `WouldBlock` ("could not acquire lock").
fn is_lock_error(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::WouldBlock
        || err.to_string().contains("could not acquire lock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChatRecord, MeetingRecord};

    const KEY_FILE: KeySource = KeySource::InsecureKeyFile;

    fn open(dir: &Path) -> Store {
        Store::open(dir, &KEY_FILE).unwrap()
    }

    /// Opens the store in `dir` and loads (or creates) its identity.
    fn identity_in(dir: &Path) -> Identity {
        open(dir).load_or_create_identity().unwrap()
    }

    /// Every byte of every file under `dir`.
    fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.extend(std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = crate::store::private_tempdir();
        let first = identity_in(dir.path());
        let second = identity_in(dir.path());
        assert_eq!(first.peer_id(), second.peer_id());
    }

    #[test]
    fn second_opener_gets_a_lock_error() {
        let dir = crate::store::private_tempdir();
        let _first = open(dir.path());
        let err = Store::open(dir.path(), &KEY_FILE).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = crate::store::private_tempdir();
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.open_tree(TREE_META)
                .unwrap()
                .insert(KEY_SCHEMA_VERSION, &99u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path(), &KEY_FILE).unwrap_err();
        assert!(matches!(
            err,
            StoreError::UnsupportedSchema {
                found: 99,
                supported: SCHEMA_VERSION
            }
        ));
    }

    #[test]
    fn a_lost_key_is_told_from_a_damaged_database() {
        let dir = crate::store::private_tempdir();
        drop(open(dir.path()));
        std::fs::remove_file(dir.path().join(super::super::key_source::KEY_FILE)).unwrap();
        let err = Store::open(dir.path(), &KEY_FILE).unwrap_err();
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
    }

    #[test]
    fn a_replaced_identity_is_loaded_next_time() {
        let dir = crate::store::private_tempdir();
        let other = Identity::generate();
        {
            let store = open(dir.path());
            store.load_or_create_identity().unwrap();
            store.replace_identity(&other).unwrap();
        }
        let loaded = identity_in(dir.path());
        assert_eq!(loaded.peer_id(), other.peer_id());
    }

    #[test]
    fn display_name_round_trips() {
        let dir = crate::store::private_tempdir();
        let store = open(dir.path());
        assert_eq!(store.display_name().unwrap(), None);
        store.set_display_name("Ada").unwrap();
        assert_eq!(store.display_name().unwrap().as_deref(), Some("Ada"));
    }

    /// A schema-1 (plaintext) data directory is migrated: everything is still there, and
    /// no plaintext value is left in any file.
    #[test]
    fn a_plaintext_store_is_migrated_without_leaving_plaintext() {
        let dir = crate::store::private_tempdir();
        let identity = Identity::generate();
        let record = |text: &str| {
            let mut out = Vec::new();
            ciborium::into_writer(
                &ChatRecord {
                    from: "p".into(),
                    name: "Ada".into(),
                    text: text.into(),
                    unix_ms: 1,
                },
                &mut out,
            )
            .unwrap();
            out
        };
        let invite = "conclave:secret-invite-text-0123456789";
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.open_tree(TREE_META)
                .unwrap()
                .insert(KEY_SCHEMA_VERSION, &1u32.to_be_bytes())
                .unwrap();
            let id = db.open_tree(TREE_IDENTITY).unwrap();
            id.insert(KEY_SECRET_KEY, identity.secret_bytes().as_ref())
                .unwrap();
            id.insert(KEY_DISPLAY_NAME, b"Ada").unwrap();
            let history = db.open_tree(TREE_HISTORY).unwrap();
            for (seq, text) in [(1u64, "first plaintext line"), (2, "second plaintext line")] {
                let mut key = vec![7; 16];
                key.extend_from_slice(&seq.to_be_bytes());
                history.insert(key, record(text)).unwrap();
            }
            let mut meeting = Vec::new();
            ciborium::into_writer(&MeetingRecord::new(invite.into(), 5), &mut meeting).unwrap();
            db.open_tree(TREE_MEETINGS)
                .unwrap()
                .insert([7; 16], meeting)
                .unwrap();
            db.open_tree(TREE_MLS)
                .unwrap()
                .insert(b"mls-key", b"mls plaintext state")
                .unwrap();
            db.flush().unwrap();
        }
        let store = open(dir.path());
        assert_eq!(
            store.load_or_create_identity().unwrap().peer_id(),
            identity.peer_id()
        );
        assert_eq!(store.display_name().unwrap().as_deref(), Some("Ada"));
        let texts: Vec<String> = store
            .chat_history(crate::invite::MeetingId([7; 16]))
            .unwrap()
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(texts, ["first plaintext line", "second plaintext line"]);
        assert_eq!(store.meetings().unwrap()[0].1.invite, invite);
        drop(store);
        let bytes = all_bytes(dir.path());
        for needle in [
            identity.secret_bytes().as_ref(),
            b"first plaintext line".as_slice(),
            invite.as_bytes(),
            b"mls plaintext state",
        ] {
            assert!(!contains(&bytes, needle), "plaintext left after migration");
        }
    }
}
