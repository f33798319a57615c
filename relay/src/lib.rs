//! `conclave-relay`: the small server a secure site runs on its own premises.
//!
//! A libp2p node with Kademlia in server mode (the DHT bootstrap for Conclave's private
//! DHT), identify, ping, a circuit relay v2 server and the TURN credential protocol, beside
//! a standard STUN/TURN server for media. It never holds meeting keys: everything it carries
//! is Noise-encrypted libp2p traffic or DTLS-SRTP media with SFrame inside, and the DHT
//! records it stores are keyed by rendezvous hashes that only invitees can compute.
//!
//! - [`config`]: TOML configuration with documented defaults.
//! - [`node`]: the libp2p node and its actor loop; starts everything else.
//! - [`turn`]: the STUN/TURN server (UDP, TCP and TLS) with quotas and counters, and its TCP
//!   framing codec (shared with the system tests' TURN client).
//! - [`issuer`]: TURN credentials for the relay's own and external TURN servers.
//! - [`access`]: allowlist, REST-API credentials and quota rules (pure).
//! - [`policy`]: which peer addresses TURN may relay to (pure): no internal ranges.
//! - [`allowfile`]: `conclave-relay allow add|remove|list`, editing the config file.
//! - `private_file`: secrets written to new owner-only files (the identity key, the TURN
//!   secret).
//! - [`metrics`]: Prometheus counters.
//! - [`health`]: the HTTP endpoint for `/metrics` and `/healthz`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod access;
pub mod allowfile;
pub mod config;
pub mod health;
pub mod issuer;
pub mod metrics;
pub mod node;
pub mod policy;
mod private_file;
pub mod turn;

pub use config::{Config, ConfigError};
pub use node::{Relay, RelayError, ReloadReport};
