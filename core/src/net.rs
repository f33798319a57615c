//! The control plane: one libp2p swarm per client.
//!
//! - [`behaviour`]: the composed `NetworkBehaviour` (Kademlia under Conclave's own protocol
//!   name, identify, mDNS, relay client, ping, and the control request-response protocol).
//! - [`codec`]: the protocol names and the request-response codec that frames
//!   [`crate::proto`] messages on a stream.
//! - [`paths`]: which connections to a peer are proven, which went quiet (sans-IO).
//! - [`driver`]: the actor that owns the `Swarm` and the meeting machine; the only code that
//!   touches the swarm.
//!
//! Layers on the wire: libp2p stream (Noise-encrypted, peer-authenticated) → length-prefixed
//! frame ([`crate::proto::framing`]) → versioned CBOR message ([`crate::proto`]).

pub mod behaviour;
pub mod codec;
pub mod driver;
pub mod routing;
pub mod swarm;
pub mod turn_fetch;
