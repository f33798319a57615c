//! The control plane: one libp2p swarm per client.
//!
//! - [`behaviour`]: the composed `NetworkBehaviour` (Kademlia under Conclave's own protocol
//!   name, identify, mDNS, relay client, ping, and the control request-response protocol).
//! - [`wire`]: the control messages and their versioned, length-bounded encoding.
//! - [`codec`]: the request-response codec that frames [`wire`] messages on a stream.
//! - [`turn`]: TURN credentials fetched from relays (`/conclave/turn/1.0.0`).
//! - [`paths`]: which connections to a peer are proven, which went quiet (sans-IO).
//! - [`backoff`]: exponential back-off with jitter, used by every retry of the driver
//!   (sans-IO).
//! - [`driver`]: the actor that owns the `Swarm` and the meeting machine; the only code that
//!   touches the swarm.
//!
//! Layers on the wire: libp2p stream (Noise-encrypted, peer-authenticated) → length-prefixed
//! frame ([`codec`]) → versioned CBOR control message ([`wire`]).

pub mod backoff;
pub mod behaviour;
pub mod codec;
pub mod driver;
pub mod paths;
pub mod turn;
pub mod wire;
