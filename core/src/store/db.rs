//! Opening the database, the schema check, and the identity records.

use std::path::{Path, PathBuf};

use tracing::{debug, info};

use super::StoreError;
use super::schema::{
    KEY_DISPLAY_NAME, KEY_SCHEMA_VERSION, KEY_SECRET_KEY, SCHEMA_VERSION, TREE_IDENTITY, TREE_META,
    TREE_PEERS,
};
use crate::identity::Identity;

/// Handle to the open database. Cheap to clone; all clones share one sled instance.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    pub(super) db: sled::Db,
    pub(super) identity: sled::Tree,
    pub(super) peers: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`.
    ///
    /// Fails with [`StoreError::Locked`] when another process has it open.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Open {
            path: data_dir.to_owned(),
            source,
        })?;
        let db_path = data_dir.join("db");
        let db = sled::Config::new()
            .path(&db_path)
            .open()
            .map_err(|err| classify_open_error(data_dir, err))?;
        let meta = db.open_tree(TREE_META)?;
        match meta.get(KEY_SCHEMA_VERSION)? {
            None => {
                meta.insert(KEY_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())?;
                info!(version = SCHEMA_VERSION, "created new store");
            }
            Some(raw) => {
                let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "schema version",
                })?;
                let found = u32::from_be_bytes(bytes);
                if found > SCHEMA_VERSION {
                    return Err(StoreError::UnsupportedSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                debug!(version = found, "opened store");
            }
        }
        let store = Self {
            path: data_dir.to_owned(),
            identity: db.open_tree(TREE_IDENTITY)?,
            peers: db.open_tree(TREE_PEERS)?,
            db,
        };
        store.flush()?;
        Ok(store)
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
        // compare_and_swap: if two threads race here, exactly one key wins.
        let won =
            self.identity
                .compare_and_swap(KEY_SECRET_KEY, None::<&[u8]>, Some(secret.as_ref()))?;
        self.flush()?;
        match won {
            Ok(()) => {
                info!(peer_id = %identity.peer_id(), "created new identity");
                Ok(identity)
            }
            Err(_) => self.load_or_create_identity(),
        }
    }

    /// Replaces the installation identity (restoring a backup). Takes effect the next time
    /// a client starts on this data directory. Stored MLS groups and verification marks
    /// belonged to the old key and are kept only as history.
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

    /// Opens the store in `dir` and loads (or creates) its identity.
    fn identity_in(dir: &Path) -> Identity {
        Store::open(dir).unwrap().load_or_create_identity().unwrap()
    }

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = identity_in(dir.path());
        let second = identity_in(dir.path());
        assert_eq!(first.peer_id(), second.peer_id());
    }

    #[test]
    fn second_opener_gets_a_lock_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.open_tree(TREE_META)
                .unwrap()
                .insert(KEY_SCHEMA_VERSION, &99u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            StoreError::UnsupportedSchema {
                found: 99,
                supported: 1
            }
        ));
    }

    #[test]
    fn a_replaced_identity_is_loaded_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let other = Identity::generate();
        {
            let store = Store::open(dir.path()).unwrap();
            store.load_or_create_identity().unwrap();
            store.replace_identity(&other).unwrap();
        }
        let loaded = identity_in(dir.path());
        assert_eq!(loaded.peer_id(), other.peer_id());
    }

    #[test]
    fn display_name_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.display_name().unwrap(), None);
        store.set_display_name("Ada").unwrap();
        assert_eq!(store.display_name().unwrap().as_deref(), Some("Ada"));
    }
}
