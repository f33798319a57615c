//! Durable local state in one sled database under the data directory.
//!
//! Sealed at rest: every value except the schema version is encrypted with the store key
//! (XChaCha20-Poly1305, a random nonce per value, the tree name and stored key as associated
//! data), and keys naming people or meetings are blinded ([`seal`]). The store key comes from
//! a [`KeySource`] ([`key_source`]: OS secret service, passphrase, or an opt-in 0600 file).
//! The data directory is 0700 and its files 0600; a directory open to other users is refused
//! ([`permissions`]).
//!
//! Layout (schema version [`SCHEMA_VERSION`], see [`schema`]):
//! - tree `meta`: `schema_version` → u32 big-endian (plain); `key_check` → a sealed constant
//!   that tells a wrong key from a damaged database;
//! - tree `identity`: `secret_key` → 32 bytes, `display_name` → UTF-8;
//! - tree `peers`: peer id → CBOR [`KnownPeer`] (addresses and last-seen time), bounded to
//!   [`peers::MAX_KNOWN_PEERS`] entries, oldest evicted first;
//! - tree `history`: chat lines per meeting; tree `meetings`: remembered invites;
//! - tree `outbox`: our chat lines not yet acknowledged by every member ([`outbox`]);
//! - tree `verified`: contacts whose safety number the user confirmed.
//!
//! MLS state is not stored: a restart never uses it (a host creates a new group, a joiner
//! deletes any stale one and joins afresh), so `Output::Persist` is not written and the
//! schema-1 `mls` tree is dropped by the migration.
//!
//! Schema 1 (plaintext) data directories are migrated at open by rewriting every value into
//! a fresh database and deleting the old one: sled is log-structured, so values deleted or
//! overwritten in place would stay readable in its files. [`Store::forget_meeting`] rewrites
//! the same way, so a forgotten meeting's history and invite leave no trace, not even sealed.
//!
//! Only one process may open a data directory at a time: sled holds an exclusive file lock
//! and a second opener gets [`StoreError::Locked`], never a shared, corrupting handle.
//! Every write is flushed before the call returns, so a crash loses nothing acknowledged.

mod contacts;
mod db;
mod history;
pub mod key_source;
pub mod os_vault;
mod outbox;
mod peers;
pub mod permissions;
pub mod schema;
pub mod seal;

pub use db::Store;
pub use history::{ChatRecord, MAX_HISTORY_PER_MEETING, MeetingRecord};
pub use key_source::{INSECURE_KEY_FILE_ENV, KeySource, SecretVault};
pub use outbox::{MAX_PENDING_PER_MEETING, PendingChat};
pub use peers::{KnownPeer, MAX_ADDRS_PER_PEER, MAX_KNOWN_PEERS};
pub use schema::SCHEMA_VERSION;
pub use seal::StoreKey;

use std::path::PathBuf;

/// Errors of the local store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (another Conclave with the same `--data-dir`) holds the database.
    #[error("the data directory {path} is in use by another Conclave process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory could not be created or opened.
    #[error("cannot open the data directory {path}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer Conclave whose format this build cannot read.
    #[error(
        "the data directory uses schema version {found}, this build understands up to {supported}"
    )]
    UnsupportedSchema {
        /// Version found on disk.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// A stored value could not be decoded (the database was damaged or edited by hand).
    #[error("stored {what} is corrupt")]
    Corrupt {
        /// Which value.
        what: &'static str,
    },
    /// The data directory (or a key file) is open to other local users: refused, like ssh.
    #[error(
        "refusing to use {path}: its mode {mode:03o} lets other users read it; run `chmod go-rwx {path}` and start again"
    )]
    TooOpen {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No way to protect the store key was chosen and no secret service is available.
    #[error(
        "no secret service to keep the store key in: run from a terminal to type a passphrase, pass --passphrase-file FILE, or --insecure-key-file (env CONCLAVE_INSECURE_KEY_FILE=1) to keep it unprotected in a 0600 file"
    )]
    NoKeySource,
    /// The data directory's key is kept another way than the one asked for.
    #[error("the data directory {path} keeps its key another way: {hint}")]
    WrongKeySource {
        /// The data directory.
        path: PathBuf,
        /// Which flag to pass.
        hint: &'static str,
    },
    /// The passphrase does not unwrap the store key.
    #[error("wrong passphrase for the store key")]
    WrongPassphrase,
    /// A new passphrase is too short.
    #[error("the passphrase must have at least {min} characters")]
    WeakPassphrase {
        /// Minimum length.
        min: usize,
    },
    /// The store key does not open this database (the key file was replaced or lost).
    #[error("the store key does not open the data directory {path}")]
    WrongKey {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory's key is in the OS secret service, which does not answer.
    #[error(
        "the store key of {path} is kept in the OS secret service, which does not answer: unlock your keyring (log in to your desktop session) and start again"
    )]
    VaultUnreachable {
        /// The data directory.
        path: PathBuf,
    },
    /// The OS secret service failed.
    #[error("the secret service failed: {reason}")]
    Vault {
        /// Why.
        reason: String,
    },
    /// The database engine failed (disk full, I/O error, ...).
    #[error("storage failure")]
    Sled(#[from] sled::Error),
}

/// A temporary directory with mode 0700, as a data directory must be (tests only).
#[cfg(test)]
pub(crate) fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    permissions::set_mode(dir.path(), permissions::DIR_MODE).expect("chmod 700");
    dir
}
