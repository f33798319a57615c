//! Passphrase-protected identity backups: move an installation's key to another machine.
//!
//! File format (all lengths fixed, version 1):
//!
//! ```text
//! magic "CONCLAVE-IDENTITY\x01" (18) ‖ salt (16) ‖ nonce (24) ‖ XChaCha20-Poly1305(secret key (32)) + tag (16)
//! ```
//!
//! The key is Argon2id(passphrase, salt) with [`ARGON2_MEMORY_KIB`], [`ARGON2_ITERATIONS`]
//! and one lane; the magic is the AEAD's associated data, so a backup cannot be relabelled.
//! A wrong passphrase and a damaged file are indistinguishable by design: both are
//! [`BackupError::Decrypt`]. Randomness (salt, nonce) is injected by the caller.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::CryptoRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{Identity, SECRET_KEY_LEN};

/// First bytes of every backup file (format version 1).
pub const BACKUP_MAGIC: &[u8; 18] = b"CONCLAVE-IDENTITY\x01";
/// Argon2id memory cost in KiB (19 MiB, the OWASP recommendation).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Shortest passphrase accepted for a new backup.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Exact length of a version-1 backup.
pub const BACKUP_LEN: usize = BACKUP_MAGIC.len() + SALT_LEN + NONCE_LEN + SECRET_KEY_LEN + TAG_LEN;

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The passphrase is too short to protect a key.
    #[error("the passphrase must have at least {min} characters")]
    WeakPassphrase {
        /// Minimum length.
        min: usize,
    },
    /// The bytes are not a Conclave identity backup (or of an unknown version).
    #[error("this is not a Conclave identity backup")]
    NotABackup,
    /// Wrong passphrase, or the file was altered.
    #[error("wrong passphrase, or the backup file is damaged")]
    Decrypt,
    /// The key derivation failed (parameters rejected).
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

pub(crate) fn derive_key(
    passphrase: &str,
    salt: &[u8; SALT_LEN],
) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, 1, Some(32))
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key[..])
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    Ok(key)
}

/// Seals `identity` under `passphrase` into the backup format.
pub fn export(
    identity: &Identity,
    passphrase: &str,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, BackupError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(BackupError::WeakPassphrase {
            min: MIN_PASSPHRASE_CHARS,
        });
    }
    let mut salt = [0u8; SALT_LEN];
    rng.fill_bytes(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let key = derive_key(passphrase, &salt)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key[..]));
    let secret = identity.secret_bytes();
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret.as_ref(),
                aad: BACKUP_MAGIC,
            },
        )
        .map_err(|_| BackupError::Kdf("encryption failed".to_owned()))?;
    let mut out = Vec::with_capacity(BACKUP_LEN);
    out.extend_from_slice(BACKUP_MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a backup made by [`export`].
pub fn import(bytes: &[u8], passphrase: &str) -> Result<Identity, BackupError> {
    if bytes.len() != BACKUP_LEN || !bytes.starts_with(BACKUP_MAGIC) {
        return Err(BackupError::NotABackup);
    }
    let rest = &bytes[BACKUP_MAGIC.len()..];
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let salt: [u8; SALT_LEN] = salt.try_into().expect("split at SALT_LEN");
    let key = derive_key(passphrase, &salt)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key[..]));
    let secret = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: BACKUP_MAGIC,
                },
            )
            .map_err(|_| BackupError::Decrypt)?,
    );
    Identity::from_secret_bytes(&secret).map_err(|_| BackupError::NotABackup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn round_trip_restores_the_same_identity() {
        let identity = Identity::generate();
        let backup = export(&identity, "correct horse battery", &mut rng()).unwrap();
        assert_eq!(backup.len(), BACKUP_LEN);
        let restored = import(&backup, "correct horse battery").unwrap();
        assert_eq!(restored.peer_id(), identity.peer_id());
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let backup = export(&Identity::generate(), "correct horse battery", &mut rng()).unwrap();
        let err = import(&backup, "incorrect horse battery").unwrap_err();
        assert!(matches!(err, BackupError::Decrypt), "{err:?}");
    }

    #[test]
    fn damaged_or_foreign_files_are_refused() {
        let mut backup =
            export(&Identity::generate(), "correct horse battery", &mut rng()).unwrap();
        assert!(matches!(
            import(&backup[..10], "x"),
            Err(BackupError::NotABackup)
        ));
        let last = backup.len() - 1;
        backup[last] ^= 1;
        assert!(matches!(
            import(&backup, "correct horse battery"),
            Err(BackupError::Decrypt)
        ));
    }

    #[test]
    fn short_passphrases_are_refused() {
        let err = export(&Identity::generate(), "short", &mut rng()).unwrap_err();
        assert!(matches!(err, BackupError::WeakPassphrase { min: 8 }));
    }

    #[test]
    fn the_backup_does_not_contain_the_secret_in_clear() {
        let identity = Identity::generate();
        let backup = export(&identity, "correct horse battery", &mut rng()).unwrap();
        let secret = identity.secret_bytes();
        assert!(!backup.windows(32).any(|w| w == secret.as_ref()));
    }
}
