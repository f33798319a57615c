//! `conclave-relay allow add|remove|list`: the `[access]` allowlist of a configuration file,
//! edited in place without hand-editing TOML.
//!
//! The file keeps its comments and layout (`toml_edit`); the result must still be a valid
//! configuration ([`Config::from_toml`]) before it replaces the old file, atomically (a
//! temporary file in the same directory, then a rename), with the old file's permissions.
//! A running relay notices the new file within a second, or at once on `SIGHUP`, and
//! applies it ([`crate::node::Relay::reload`]): a removed identity's allocations end then.
//!
//! Adding to an open relay (`open = true`, the default) closes it: from then on only the
//! listed identities get TURN credentials. Entries are compared by the identity they name,
//! so a peer id and the same key in hex are one entry.

use std::path::{Path, PathBuf};

use libp2p::PeerId;
use toml_edit::{Array, DocumentMut, Item, Table, Value};

use crate::access::parse_identity;
use crate::config::{Config, ConfigError};

/// Why the allowlist could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllowFileError {
    /// The file could not be read or written.
    #[error("cannot use the configuration file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or `[access]` has an unexpected shape.
    #[error("cannot edit {path}: {message}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The identity is neither a peer id nor a hex ed25519 key.
    #[error("{0:?} is neither a peer id (12D3KooW…) nor 64 hex digits of an ed25519 public key")]
    Identity(String),
    /// `remove` of an identity that is not listed.
    #[error("{0} is not on the allowlist")]
    NotListed(String),
    /// The edited file would not be a valid configuration.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// What an edit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The entries listed afterwards.
    pub allow: Vec<String>,
    /// Whether the list changed (an `add` of a listed identity changes nothing).
    pub changed: bool,
    /// Whether this edit closed an open relay.
    pub closed: bool,
}

/// The allowlist as a file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// `[access] open`: anyone gets credentials.
    pub open: bool,
    /// `[access] allow`.
    pub allow: Vec<String>,
}

fn identity(entry: &str) -> Result<PeerId, AllowFileError> {
    parse_identity(entry.trim()).ok_or_else(|| AllowFileError::Identity(entry.to_owned()))
}

fn read(path: &Path) -> Result<DocumentMut, AllowFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(AllowFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    text.parse()
        .map_err(|e: toml_edit::TomlError| AllowFileError::Shape {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

fn shape(path: &Path, message: &str) -> AllowFileError {
    AllowFileError::Shape {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// The `[access]` table and its `allow` array, created if missing.
fn access_mut<'a>(doc: &'a mut DocumentMut, path: &Path) -> Result<&'a mut Table, AllowFileError> {
    let access = doc
        .entry("access")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| shape(path, "access is not a table"))?;
    if !access.contains_key("allow") {
        access.insert("allow", Item::Value(Value::Array(Array::new())));
    }
    Ok(access)
}

fn entries(access: &Table, path: &Path) -> Result<Vec<String>, AllowFileError> {
    let Some(allow) = access.get("allow") else {
        return Ok(Vec::new());
    };
    let array = allow
        .as_array()
        .ok_or_else(|| shape(path, "access.allow is not an array"))?;
    array
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| shape(path, "access.allow holds a value that is not a string"))
        })
        .collect()
}

/// Lists the allowlist of `path` (a missing file is the default: open).
pub fn list(path: &Path) -> Result<Listing, AllowFileError> {
    let doc = read(path)?;
    let Some(access) = doc.get("access").and_then(Item::as_table) else {
        return Ok(Listing {
            open: true,
            allow: Vec::new(),
        });
    };
    let open = match access.get("open") {
        None => true,
        Some(item) => item
            .as_bool()
            .ok_or_else(|| shape(path, "access.open is not true or false"))?,
    };
    Ok(Listing {
        open,
        allow: entries(access, path)?,
    })
}

/// Adds `entry` to the allowlist of `path` (created if missing), closing the relay if it
/// was open.
pub fn add(path: &Path, entry: &str) -> Result<Edit, AllowFileError> {
    let peer = identity(entry)?;
    let mut doc = read(path)?;
    let access = access_mut(&mut doc, path)?;
    let was_open = access.get("open").and_then(Item::as_bool).unwrap_or(true);
    let mut allow = entries(access, path)?;
    let listed = allow.iter().any(|e| parse_identity(e.trim()) == Some(peer));
    if !listed {
        if let Some(array) = access.get_mut("allow").and_then(Item::as_array_mut) {
            array.push(entry.trim());
        }
        allow.push(entry.trim().to_owned());
    }
    if was_open {
        access.insert("open", toml_edit::value(false));
    }
    let changed = !listed || was_open;
    if changed {
        write(path, &doc)?;
    }
    Ok(Edit {
        allow,
        changed,
        closed: was_open,
    })
}

/// Removes `entry` (and any other entry naming the same identity) from the allowlist of
/// `path`. The relay stays closed, even with an empty list.
pub fn remove(path: &Path, entry: &str) -> Result<Edit, AllowFileError> {
    let peer = identity(entry)?;
    let mut doc = read(path)?;
    let access = access_mut(&mut doc, path)?;
    let before = entries(access, path)?;
    let allow: Vec<String> = before
        .iter()
        .filter(|e| parse_identity(e.trim()) != Some(peer))
        .cloned()
        .collect();
    if allow.len() == before.len() {
        return Err(AllowFileError::NotListed(entry.trim().to_owned()));
    }
    if let Some(array) = access.get_mut("allow").and_then(Item::as_array_mut) {
        array.retain(|v| v.as_str().and_then(|e| parse_identity(e.trim())) != Some(peer));
    }
    write(path, &doc)?;
    Ok(Edit {
        allow,
        changed: true,
        closed: false,
    })
}

/// Checks `doc` as a configuration, then replaces `path` with it atomically.
fn write(path: &Path, doc: &DocumentMut) -> Result<(), AllowFileError> {
    let text = doc.to_string();
    Config::from_toml(&text, path)?;
    let io = |source| AllowFileError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "relay.toml".into());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, text).map_err(io)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&temp, meta.permissions()).map_err(io)?;
        // Keep the owner too (e.g. a group the service reads it as); best effort.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::chown(&temp, Some(meta.uid()), Some(meta.gid()));
        }
    }
    std::fs::rename(&temp, path).map_err(|err| {
        let _ = std::fs::remove_file(&temp);
        io(err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_hex(key: &libp2p::identity::ed25519::Keypair) -> String {
        key.public()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn add_closes_an_open_relay_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "# site relay\n[turn]\nrealm = \"north\" # ours\n").unwrap();
        let alice = PeerId::random().to_string();
        let edit = add(&path, &alice).unwrap();
        assert_eq!(
            edit,
            Edit {
                allow: vec![alice.clone()],
                changed: true,
                closed: true
            }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# site relay") && text.contains("# ours"),
            "{text}"
        );
        let config = Config::load(&path).unwrap();
        assert!(!config.access.open);
        assert_eq!(config.turn.realm, "north");
        // Again: nothing changes.
        assert!(!add(&path, &alice).unwrap().changed);
        assert_eq!(
            list(&path).unwrap(),
            Listing {
                open: false,
                allow: vec![alice]
            }
        );
    }

    #[test]
    fn remove_matches_the_identity_in_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        let key = libp2p::identity::ed25519::Keypair::generate();
        let peer = libp2p::identity::PublicKey::from(key.public()).to_peer_id();
        let bob = PeerId::random().to_string();
        add(&path, &key_hex(&key)).unwrap();
        add(&path, &bob).unwrap();
        // Added by key, removed by peer id.
        let edit = remove(&path, &peer.to_string()).unwrap();
        assert_eq!(edit.allow, vec![bob.clone()]);
        assert!(matches!(
            remove(&path, &peer.to_string()),
            Err(AllowFileError::NotListed(_))
        ));
        // The last one out leaves a closed, empty list.
        remove(&path, &bob).unwrap();
        let config = Config::load(&path).unwrap();
        assert!(!config.access.open && config.access.allow.is_empty());
    }

    #[test]
    fn bad_identities_and_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        assert!(matches!(
            add(&path, "alice"),
            Err(AllowFileError::Identity(_))
        ));
        assert!(!path.exists(), "nothing written");
        assert_eq!(
            list(&path).unwrap(),
            Listing {
                open: true,
                allow: vec![]
            }
        );
        std::fs::write(&path, "access = 3\n").unwrap();
        let peer = PeerId::random().to_string();
        assert!(matches!(
            add(&path, &peer),
            Err(AllowFileError::Shape { .. })
        ));
        std::fs::write(&path, "[turn]\nlissen = 1\n").unwrap();
        assert!(matches!(add(&path, &peer), Err(AllowFileError::Invalid(_))));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[turn]\nlissen = 1\n"
        );
    }
}
