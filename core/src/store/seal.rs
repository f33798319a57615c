//! Sealing of stored values under the store key: XChaCha20-Poly1305 and blinded keys.
//!
//! Every value in a sealed tree is `nonce (24, random) ‖ XChaCha20-Poly1305(value) + tag
//! (16)`, with associated data `tree name ‖ 0x00 ‖ stored key`: a value moved to another key
//! or tree fails to open. Keys that would say something about the user (peer ids, meeting
//! ids) are stored blinded, as `HMAC-SHA256(store key, "conclave store blind v1" ‖ tree ‖
//! 0x00 ‖ key)`, and the plain key travels inside the sealed value (`pack`).
//!
//! Invariant: the store key never reaches a log line or a `Debug` rendering
//! ([`StoreKey`]'s `Debug` is `StoreKey(..)`), and it is zeroized on drop.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::StoreError;

/// Length of the store key in bytes.
pub const STORE_KEY_LEN: usize = 32;
/// Domain separation label of blinded keys.
pub const BLIND_LABEL: &[u8] = b"conclave store blind v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The key that seals every secret or private value of the store. Zeroized on drop.
#[derive(Clone)]
pub struct StoreKey(Zeroizing<[u8; STORE_KEY_LEN]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; STORE_KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// The key of these bytes; `None` unless exactly [`STORE_KEY_LEN`] long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; STORE_KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(*bytes)))
    }

    /// The raw bytes, for wrapping the key (never for logging).
    pub(crate) fn expose(&self) -> &[u8; STORE_KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
    }

    /// Seals `plain` for `stored_key` in `tree`.
    pub(crate) fn seal(&self, tree: &str, stored_key: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(tree, stored_key);
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value made by [`StoreKey::seal`] for the same tree and key.
    pub(crate) fn open(
        &self,
        tree: &'static str,
        stored_key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Corrupt { what: tree });
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let aad = associated_data(tree, stored_key);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Corrupt { what: tree })
    }

    /// The blinded form of `key` in `tree` (see the module docs).
    pub(crate) fn blind(&self, tree: &str, key: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..])
            .expect("HMAC accepts keys of any length");
        mac.update(BLIND_LABEL);
        mac.update(tree.as_bytes());
        mac.update(&[0]);
        mac.update(key);
        mac.finalize().into_bytes().into()
    }
}

fn associated_data(tree: &str, stored_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tree.len() + 1 + stored_key.len());
    aad.extend_from_slice(tree.as_bytes());
    aad.push(0);
    aad.extend_from_slice(stored_key);
    aad
}

/// `len (u16 BE) ‖ key ‖ value`: a plain key carried inside a sealed value.
pub(crate) fn pack(key: &[u8], value: &[u8]) -> Zeroizing<Vec<u8>> {
    let len = u16::try_from(key.len()).expect("store keys are short");
    let mut out = Zeroizing::new(Vec::with_capacity(2 + key.len() + value.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// The inverse of [`pack`].
pub(crate) fn unpack(packed: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = packed.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// One opened entry: the plain key and the plain value.
pub(crate) type Entry = (Vec<u8>, Zeroizing<Vec<u8>>);

/// A sled tree whose keys are blinded and whose values are sealed.
#[derive(Clone)]
pub(crate) struct SealedTree {
    pub(crate) tree: sled::Tree,
    name: &'static str,
    key: std::sync::Arc<StoreKey>,
}

impl std::fmt::Debug for SealedTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedTree")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SealedTree {
    pub(crate) fn open(
        db: &sled::Db,
        name: &'static str,
        key: std::sync::Arc<StoreKey>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree(name)?,
            name,
            key,
        })
    }

    fn sealed_value(&self, stored: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
        self.key.seal(self.name, stored, &pack(key, value))
    }

    /// Inserts `value` under `key`.
    pub(crate) fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let stored = self.key.blind(self.name, key);
        self.tree
            .insert(stored, self.sealed_value(&stored, key, value))?;
        Ok(())
    }

    /// Inserts `value` under `key` unless the key is taken; `true` when inserted.
    pub(crate) fn insert_new(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let stored = self.key.blind(self.name, key);
        let sealed = self.sealed_value(&stored, key, value);
        Ok(self
            .tree
            .compare_and_swap(stored, None::<&[u8]>, Some(sealed))?
            .is_ok())
    }

    /// The value under `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let stored = self.key.blind(self.name, key);
        let Some(raw) = self.tree.get(stored)? else {
            return Ok(None);
        };
        let plain = self.key.open(self.name, &stored, &raw)?;
        let (_, value) = unpack(&plain).ok_or(StoreError::Corrupt { what: self.name })?;
        Ok(Some(Zeroizing::new(value.to_vec())))
    }

    /// Removes `key`.
    pub(crate) fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(self.key.blind(self.name, key))?;
        Ok(())
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.tree.len()
    }

    /// Every `(key, value)`; entries that fail to open are skipped with a warning.
    pub(crate) fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.iter() {
            let (stored, raw) = entry?;
            let opened = self
                .key
                .open(self.name, &stored, &raw)
                .ok()
                .and_then(|plain| {
                    unpack(&plain).map(|(k, v)| (k.to_vec(), Zeroizing::new(v.to_vec())))
                });
            match opened {
                Some(pair) => out.push(pair),
                None => tracing::warn!(tree = self.name, "skipping an unreadable entry"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_to_their_tree_and_key() {
        let key = StoreKey::generate();
        let sealed = key.seal("history", b"k1", b"hello");
        assert_eq!(
            key.open("history", b"k1", &sealed).unwrap().as_slice(),
            b"hello"
        );
        assert!(key.open("meetings", b"k1", &sealed).is_err());
        assert!(key.open("history", b"k2", &sealed).is_err());
        assert!(
            StoreKey::generate()
                .open("history", b"k1", &sealed)
                .is_err()
        );
        // A fresh nonce every time: the same value never seals to the same bytes.
        assert_ne!(sealed, key.seal("history", b"k1", b"hello"));
    }

    #[test]
    fn pack_round_trips() {
        let packed = pack(b"key", b"value");
        assert_eq!(unpack(&packed), Some((&b"key"[..], &b"value"[..])));
        assert_eq!(unpack(&[0]), None);
        assert_eq!(unpack(&[0, 9, 1]), None);
    }

    #[test]
    fn debug_hides_the_key() {
        let key = StoreKey::generate();
        let rendered = format!("{key:?}");
        assert_eq!(rendered, "StoreKey(..)");
        assert!(!rendered.contains(&hex::encode(key.expose())));
    }
}
