//! The openmls provider and the per-operation storage delta.
//!
//! openmls' `StorageProvider` has no transaction boundaries: one `merge_pending_commit`
//! performs many writes. We let openmls write into an in-memory map and, after each MLS
//! operation, take the difference against what is on disk as a [`StorageDelta`]; the
//! store applies a delta as one sled batch (all or nothing). The map is loaded from sled at
//! start, so a restarted client reloads its groups (`MlsGroup::load`).

use std::collections::HashMap;

use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use openmls_traits::OpenMlsProvider;

/// The keys written and removed by one MLS operation. The values are MLS secrets: `Debug`
/// shows only how many there are, and they are zeroized on drop.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct StorageDelta {
    /// Keys written, with their new values.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys removed.
    pub deletes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for StorageDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageDelta")
            .field("puts", &self.puts.len())
            .field("deletes", &self.deletes.len())
            .finish()
    }
}

impl Drop for StorageDelta {
    fn drop(&mut self) {
        for (key, value) in &mut self.puts {
            zeroize::Zeroize::zeroize(key);
            zeroize::Zeroize::zeroize(value);
        }
    }
}

impl StorageDelta {
    /// Whether the operation changed nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// openmls provider: RustCrypto for crypto and randomness, an in-memory map for storage.
#[derive(Default)]
pub struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
    /// What the durable store holds, to compute deltas.
    persisted: HashMap<Vec<u8>, Vec<u8>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider whose storage starts with `entries` (as loaded from the store).
    pub fn with_entries(entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        let persisted: HashMap<Vec<u8>, Vec<u8>> = entries.into_iter().collect();
        let provider = Self {
            persisted: persisted.clone(),
            ..Self::default()
        };
        *provider.values_mut() = persisted;
        provider
    }

    fn values_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        // A poisoned lock means a panic inside openmls mid-write: the map is still a map.
        self.storage
            .values
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writes since the last call, to be applied to the durable store atomically.
    pub fn take_delta(&mut self) -> StorageDelta {
        let current = self
            .storage
            .values
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut delta = StorageDelta::default();
        for (key, value) in &current {
            if self.persisted.get(key) != Some(value) {
                delta.puts.push((key.clone(), value.clone()));
            }
        }
        for key in self.persisted.keys() {
            if !current.contains_key(key) {
                delta.deletes.push(key.clone());
            }
        }
        delta.puts.sort();
        delta.deletes.sort();
        self.persisted = current;
        delta
    }
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
