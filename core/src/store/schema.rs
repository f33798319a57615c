//! Names and version of the on-disk schema.
//!
//! Bump [`SCHEMA_VERSION`] whenever a tree's key or value format changes, and add the
//! migration to [`super::Store::open`]. Version 1 was plaintext; version 2 seals every value
//! (see [`super::seal`]).

/// Current schema version written by this build.
pub const SCHEMA_VERSION: u32 = 2;
/// The plaintext schema, migrated at open.
pub const SCHEMA_PLAINTEXT: u32 = 1;

/// Directory of the sled database inside the data directory.
pub const DB_DIR: &str = "db";
/// Directory a rewrite (migration, forget) builds the fresh database in.
pub const DB_NEW_DIR: &str = "db.new";

/// Tree with format metadata.
pub const TREE_META: &str = "meta";
/// Tree with the installation identity and profile.
pub const TREE_IDENTITY: &str = "identity";
/// Tree with remembered peers (bootstrap candidates).
pub const TREE_PEERS: &str = "peers";
/// Tree of schema 1 with the openmls key-value map (no longer written).
pub const TREE_MLS: &str = "mls";
/// Tree with chat history.
pub const TREE_HISTORY: &str = "history";
/// Tree with remembered meetings.
pub const TREE_MEETINGS: &str = "meetings";
/// Tree with our chat lines not yet acknowledged by every member.
pub const TREE_OUTBOX: &str = "outbox";

/// Tree with verified contacts (peer id → verified safety number).
pub const TREE_VERIFIED: &str = "verified";

/// Key of the schema version in [`TREE_META`].
pub const KEY_SCHEMA_VERSION: &[u8] = b"schema_version";
/// Key of the sealed key-check constant in [`TREE_META`].
pub const KEY_KEY_CHECK: &[u8] = b"key_check";
/// The constant sealed under [`KEY_KEY_CHECK`].
pub const KEY_CHECK_PLAIN: &[u8] = b"conclave store v2";
/// Key of the ed25519 secret key in [`TREE_IDENTITY`].
pub const KEY_SECRET_KEY: &[u8] = b"secret_key";
/// Key of the display name in [`TREE_IDENTITY`].
pub const KEY_DISPLAY_NAME: &[u8] = b"display_name";
