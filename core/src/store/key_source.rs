//! Where the store key comes from (`docs/threat-model.md`, "Stolen laptop").
//!
//! Order of preference, chosen by the application through [`KeySource`]:
//! 1. [`KeySource::Auto`]: the OS secret service ([`OsVault`]: GNOME Keyring or KWallet over
//!    D-Bus, the macOS Keychain, the Windows Credential Manager), when one answers; the data
//!    directory then holds only the marker [`VAULT_MARKER`]. Without one, `Auto` refuses to
//!    start with [`StoreError::NoKeySource`], naming the two other choices. Any other vault
//!    plugs in through [`KeySource::Vault`].
//! 2. [`KeySource::Passphrase`]: the key is wrapped in `store.key.sealed` in the data
//!    directory: `magic "CONCLAVE-STOREKEY\x01" (18) ‖ salt (16) ‖ nonce (24) ‖
//!    XChaCha20-Poly1305(key (32)) + tag (16)`, the wrapping key being Argon2id(passphrase,
//!    salt) with the parameters of identity backups, the magic as associated data.
//! 3. [`KeySource::InsecureKeyFile`], only when the user opts in (`--insecure-key-file`, env
//!    `CONCLAVE_INSECURE_KEY_FILE=1`; `make demo`, CI and the system tests do): the raw key in
//!    `store.key`, mode 0600, with a warning on every start. Whoever can read the data
//!    directory can read the store.
//!
//! A data directory keeps the source it was created with: asking for another one is refused
//! with a sentence naming the right flag, never silently re-keyed.

use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::StoreError;
use super::os_vault::{OsVault, VAULT_MARKER};
use super::permissions::{FILE_MODE, set_mode};
use super::seal::{STORE_KEY_LEN, StoreKey};
use crate::identity::backup::{MIN_PASSPHRASE_CHARS, derive_key};

/// File name of the opt-in plain key file.
pub const KEY_FILE: &str = "store.key";
/// File name of the passphrase-wrapped key.
pub const SEALED_KEY_FILE: &str = "store.key.sealed";
/// First bytes of [`SEALED_KEY_FILE`] (format version 1).
pub const SEALED_KEY_MAGIC: &[u8; 18] = b"CONCLAVE-STOREKEY\x01";
/// Environment variable that opts in to [`KeySource::InsecureKeyFile`] (value `1`).
pub const INSECURE_KEY_FILE_ENV: &str = "CONCLAVE_INSECURE_KEY_FILE";

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const SEALED_KEY_LEN: usize = SEALED_KEY_MAGIC.len() + SALT_LEN + NONCE_LEN + STORE_KEY_LEN + 16;

/// An OS secret service (GNOME Keyring, macOS Keychain, Windows Credential Manager).
pub trait SecretVault: Send + Sync {
    /// The secret kept for `account`, if any.
    fn load(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, String>;
    /// Keeps `secret` for `account`.
    fn save(&self, account: &str, secret: &[u8]) -> Result<(), String>;
}

/// How the store key is obtained (see the module docs for the order and the file formats).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum KeySource {
    /// The OS secret service when there is one; otherwise refuse to start.
    #[default]
    Auto,
    /// This secret service.
    Vault(Arc<dyn SecretVault>),
    /// Wrapped under this passphrase in `store.key.sealed`.
    Passphrase(Zeroizing<String>),
    /// In a 0600 key file, unprotected (the user opted in).
    InsecureKeyFile,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "Auto",
            Self::Vault(_) => "Vault(..)",
            Self::Passphrase(_) => "Passphrase(..)",
            Self::InsecureKeyFile => "InsecureKeyFile",
        })
    }
}

impl KeySource {
    /// A passphrase source (the passphrase is zeroized when the source is dropped).
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        Self::Passphrase(Zeroizing::new(passphrase.into()))
    }

    /// Reads a passphrase from the first line of `path`.
    pub fn passphrase_file(path: &Path) -> Result<Self, StoreError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| StoreError::Open {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let line = text.lines().next().unwrap_or_default();
        Ok(Self::passphrase(line))
    }

    /// The store key of `data_dir`, created if the directory has none yet.
    pub(crate) fn resolve(&self, data_dir: &Path) -> Result<StoreKey, StoreError> {
        let key_file = data_dir.join(KEY_FILE);
        let sealed_file = data_dir.join(SEALED_KEY_FILE);
        let has_key_file = key_file.exists();
        let has_sealed = sealed_file.exists();
        let in_vault = data_dir.join(VAULT_MARKER).exists();
        let wrong = |hint| {
            Err(StoreError::WrongKeySource {
                path: data_dir.to_owned(),
                hint,
            })
        };
        match self {
            _ if in_vault && !matches!(self, Self::Auto | Self::Vault(_)) => {
                wrong("its key is in the OS secret service: start without a key flag")
            }
            Self::InsecureKeyFile | Self::Auto if has_sealed => {
                wrong("its key is wrapped under a passphrase: pass --passphrase-file FILE")
            }
            Self::Passphrase(_) | Self::Auto if has_key_file => {
                wrong("its key is in a plain key file: pass --insecure-key-file")
            }
            Self::InsecureKeyFile => {
                warn!(
                    file = %key_file.display(),
                    "the store key is kept unprotected in a file (--insecure-key-file): anyone who can read the data directory can read your identity and history"
                );
                if has_key_file {
                    read_key_file(&key_file)
                } else {
                    let key = StoreKey::generate();
                    write_private(&key_file, key.expose())?;
                    info!("created a store key file");
                    Ok(key)
                }
            }
            Self::Passphrase(passphrase) => {
                if has_sealed {
                    let bytes = std::fs::read(&sealed_file).map_err(|source| StoreError::Open {
                        path: sealed_file.clone(),
                        source,
                    })?;
                    unwrap_key(&bytes, passphrase)
                } else {
                    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
                        return Err(StoreError::WeakPassphrase {
                            min: MIN_PASSPHRASE_CHARS,
                        });
                    }
                    let key = StoreKey::generate();
                    write_private(&sealed_file, &wrap_key(&key, passphrase)?)?;
                    info!("created a passphrase-wrapped store key");
                    Ok(key)
                }
            }
            Self::Vault(vault) => key_in_vault(vault.as_ref(), data_dir, in_vault),
            Self::Auto => match OsVault::reachable() {
                Some(vault) => key_in_vault(&vault, data_dir, in_vault),
                None if in_vault => Err(StoreError::VaultUnreachable {
                    path: data_dir.to_owned(),
                }),
                None => Err(StoreError::NoKeySource),
            },
        }
    }
}

/// The store key of `data_dir` kept in `vault` (created there, and the directory marked,
/// if the directory is new). A marked directory whose key the vault lacks is refused: a new
/// key would not open its database.
fn key_in_vault(
    vault: &dyn SecretVault,
    data_dir: &Path,
    marked: bool,
) -> Result<StoreKey, StoreError> {
    let account = data_dir.display().to_string();
    let vault_err = |reason: String| StoreError::Vault { reason };
    match vault.load(&account).map_err(vault_err)? {
        Some(bytes) => {
            let key = StoreKey::from_slice(&bytes).ok_or(StoreError::Corrupt {
                what: "store key in the secret service",
            })?;
            if !marked {
                mark_vault(data_dir)?;
            }
            Ok(key)
        }
        None if marked => Err(StoreError::Vault {
            reason: format!("it holds no store key for {account} any more"),
        }),
        None => {
            let key = StoreKey::generate();
            vault.save(&account, key.expose()).map_err(vault_err)?;
            mark_vault(data_dir)?;
            info!("created a store key in the OS secret service");
            Ok(key)
        }
    }
}

/// Marks `data_dir` as keyed by the secret service (the marker holds nothing secret).
fn mark_vault(data_dir: &Path) -> Result<(), StoreError> {
    write_private(
        &data_dir.join(VAULT_MARKER),
        b"The store key of this directory is kept in the OS secret service.\n",
    )
}

fn read_key_file(path: &Path) -> Result<StoreKey, StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?);
    StoreKey::from_slice(&bytes).ok_or(StoreError::Corrupt {
        what: "store key file",
    })
}

/// Writes `bytes` to a new 0600 file at `path` (through a temporary file and a rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(FILE_MODE);
        }
        let mut file = options.open(&tmp).map_err(io_err)?;
        file.write_all(bytes).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    set_mode(&tmp, FILE_MODE).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}

fn cipher(passphrase: &str, salt: &[u8; SALT_LEN]) -> Result<XChaCha20Poly1305, StoreError> {
    let wrapping = derive_key(passphrase, salt).map_err(|e| StoreError::Vault {
        reason: e.to_string(),
    })?;
    Ok(XChaCha20Poly1305::new(Key::from_slice(&wrapping[..])))
}

fn wrap_key(key: &StoreKey, passphrase: &str) -> Result<Vec<u8>, StoreError> {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(passphrase, &salt)?
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key.expose(),
                aad: SEALED_KEY_MAGIC,
            },
        )
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(SEALED_KEY_LEN);
    out.extend_from_slice(SEALED_KEY_MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn unwrap_key(bytes: &[u8], passphrase: &str) -> Result<StoreKey, StoreError> {
    if bytes.len() != SEALED_KEY_LEN || !bytes.starts_with(SEALED_KEY_MAGIC) {
        return Err(StoreError::Corrupt {
            what: "passphrase-wrapped store key",
        });
    }
    let rest = &bytes[SEALED_KEY_MAGIC.len()..];
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let salt: [u8; SALT_LEN] = salt.try_into().expect("split at SALT_LEN");
    let plain = Zeroizing::new(
        cipher(passphrase, &salt)?
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: SEALED_KEY_MAGIC,
                },
            )
            .map_err(|_| StoreError::WrongPassphrase)?,
    );
    StoreKey::from_slice(&plain).ok_or(StoreError::WrongPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_wraps_the_key_and_a_wrong_one_is_refused() {
        let dir = crate::store::private_tempdir();
        let source = KeySource::passphrase("correct horse battery");
        let key = source.resolve(dir.path()).unwrap();
        let again = source.resolve(dir.path()).unwrap();
        assert_eq!(key.expose(), again.expose());
        let err = KeySource::passphrase("wrong passphrase")
            .resolve(dir.path())
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase), "{err:?}");
        let err = KeySource::InsecureKeyFile.resolve(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::WrongKeySource { .. }), "{err:?}");
        let sealed = std::fs::read(dir.path().join(SEALED_KEY_FILE)).unwrap();
        assert!(
            !sealed
                .windows(STORE_KEY_LEN)
                .any(|w| w == key.expose().as_slice())
        );
    }

    #[test]
    fn auto_without_a_vault_refuses_and_the_key_file_is_private() {
        let dir = crate::store::private_tempdir();
        let err = KeySource::Auto.resolve(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NoKeySource), "{err:?}");
        let key = KeySource::InsecureKeyFile.resolve(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = KeySource::InsecureKeyFile.resolve(dir.path()).unwrap();
        assert_eq!(key.expose(), again.expose());
        let err = KeySource::Auto.resolve(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::WrongKeySource { .. }), "{err:?}");
    }
}
