//! Durable local state in one sled database under the data directory.
//!
//! Layout (schema version [`SCHEMA_VERSION`], see [`schema`]):
//! - tree `meta`: `schema_version` → u32 big-endian;
//! - tree `identity`: `secret_key` → 32 bytes, `display_name` → UTF-8;
//! - tree `peers`: peer id bytes → CBOR [`KnownPeer`] (addresses and last-seen time),
//!   bounded to [`peers::MAX_KNOWN_PEERS`] entries, oldest evicted first;
//! - tree `mls`: the openmls key-value map, one atomic batch per MLS operation
//!   ([`Store::apply_mls_delta`]);
//! - tree `history`: chat lines per meeting; tree `meetings`: remembered invites;
//! - tree `verified`: contacts whose safety number the user confirmed.
//!
//! Only one process may open a data directory at a time: sled holds an exclusive file lock
//! and a second opener gets [`StoreError::Locked`], never a shared, corrupting handle.
//! Every write is flushed before the call returns, so a crash loses nothing acknowledged.

mod contacts;
mod db;
mod history;
mod mls_storage;
mod peers;
pub mod schema;

pub use db::Store;
pub use history::{ChatRecord, MAX_HISTORY_PER_MEETING, MeetingRecord};
pub use mls_storage::MlsEntry;
pub use peers::{KnownPeer, MAX_ADDRS_PER_PEER, MAX_KNOWN_PEERS};
pub use schema::SCHEMA_VERSION;

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
    /// The database engine failed (disk full, I/O error, ...).
    #[error("storage failure")]
    Sled(#[from] sled::Error),
}
