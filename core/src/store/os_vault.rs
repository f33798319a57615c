//! The OS secret service as a [`SecretVault`], through the `keyring` crate: the Secret
//! Service over D-Bus on Linux (GNOME Keyring, KWallet, KeePassXC), the Keychain on macOS,
//! the Credential Manager on Windows.
//!
//! One item per data directory: service [`SERVICE`], account the data directory's path;
//! its secret is the 32-byte store key. A data directory whose key is there carries the
//! marker file [`VAULT_MARKER`] (nothing secret in it), so that a later start without the
//! secret service is refused with a sentence saying where the key is, instead of being
//! taken for a new directory.

use tracing::debug;
use zeroize::Zeroizing;

use super::key_source::SecretVault;

/// The secret service item's service attribute.
pub const SERVICE: &str = "Conclave store key";
/// File in a data directory whose store key is in the OS secret service.
pub const VAULT_MARKER: &str = "store.key.in-secret-service";
/// The account probed to learn whether the secret service answers (never written).
const PROBE_ACCOUNT: &str = "conclave-probe";

/// The OS secret service of this session.
#[derive(Debug, Clone, Copy)]
pub struct OsVault;

impl OsVault {
    /// The secret service, if one answers now: a D-Bus session with an unlocked keyring on
    /// Linux, the login keychain on macOS.
    pub fn reachable() -> Option<Self> {
        let entry = keyring::Entry::new(SERVICE, PROBE_ACCOUNT).ok()?;
        match entry.get_secret() {
            Ok(_) | Err(keyring::Error::NoEntry) => Some(Self),
            Err(err) => {
                debug!(error = %err, "no OS secret service");
                None
            }
        }
    }
}

impl SecretVault for OsVault {
    fn load(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let entry = keyring::Entry::new(SERVICE, account).map_err(|err| err.to_string())?;
        match entry.get_secret() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(err) => Err(err.to_string()),
        }
    }

    fn save(&self, account: &str, secret: &[u8]) -> Result<(), String> {
        let entry = keyring::Entry::new(SERVICE, account).map_err(|err| err.to_string())?;
        entry.set_secret(secret).map_err(|err| err.to_string())
    }
}
