//! Who we are: the installation's ed25519 key, and how people compare keys.
//!
//! One key per installation ([`Identity`]) is created on first run and kept in the
//! [`store`](crate::store). The very same key is the libp2p identity (its [`PeerId`]) and,
//! from the MLS group issue on, the MLS signature key. Humans compare keys through
//! [`SafetyNumber`]s (format documented in `docs/protocol.md`).
//!
//! [`backup`] seals the key under a passphrase for moving it to another machine.
//!
//! Invariant: secret key bytes never reach a log line or a `Debug` rendering; the unit tests
//! below check the `Debug` impls.

pub mod backup;
mod keys;
mod safety_number;

pub use keys::{Identity, IdentityError, SECRET_KEY_LEN, peer_id_of, public_key_of};
pub use libp2p::PeerId;
pub(crate) use safety_number::DigitGroups;
pub use safety_number::{GROUPS, ITERATIONS, SAFETY_NUMBER_LABEL, SafetyNumber};
