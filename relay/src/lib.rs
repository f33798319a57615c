//! `conclave-relay`: the small server a secure site runs on its own premises.
//!
//! Today it is a libp2p node with Kademlia in server mode (the DHT bootstrap for Conclave's
//! private DHT), identify, ping, and a circuit relay v2 server. STUN/TURN join it with the
//! connectivity work. It never holds meeting keys: everything it carries is Noise-encrypted
//! libp2p traffic between clients, and the DHT records it stores are keyed by rendezvous
//! hashes that only invitees can compute.
//!
//! - [`config`]: TOML configuration with documented defaults.
//! - [`node`]: the libp2p node and its actor loop.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod node;

pub use config::{Config, ConfigError};
pub use node::{Relay, RelayError};
