//! The control plane: libp2p only (no store, no meeting, no media, no tasks).
//!
//! - [`behaviour`]: the composed `NetworkBehaviour` (Kademlia under Conclave's own protocol
//!   name, identify, mDNS, relay client, DCUtR, ping, and the control and TURN
//!   request-response protocols).
//! - [`codec`]: the protocol names and the request-response codecs that frame
//!   [`crate::proto`] messages on a stream.
//! - [`swarm`]: the one swarm builder (TCP + Noise + yamux, QUIC, optional relay client,
//!   idle timeout) of the client and the relay, and the wait for listeners.
//! - [`routing`]: how peers and relays are reached (sans-IO): the address book, relays
//!   and circuit reservations with their back-off, relay redials, hole-punching retries,
//!   and every connection with its proven path ([`routing::paths`]). A relay is redialed
//!   here.
//! - [`handover`]: a listen-only transport for TCP connections another acceptor took (the
//!   relay's port shared by TURN over TLS and libp2p).
//! - [`relay_only`]: relay-only mode's dial guard (TCP and QUIC reach the relays only).
//! - [`turn_fetch`]: TURN credential rounds (sans-IO): which relays to ask, retries,
//!   renewal before expiry. TURN credentials are fetched here.
//!
//! The [runtime](crate::runtime) owns the `Swarm`, feeds [`routing::Routing`] and
//! [`turn_fetch::TurnFetch`] what it reports (with the time) and carries out their
//! decisions.
//!
//! Layers on the wire: libp2p stream (Noise-encrypted, peer-authenticated) → length-prefixed
//! frame ([`crate::proto::framing`]) → versioned CBOR message ([`crate::proto`]).

pub mod behaviour;
pub mod codec;
pub mod handover;
pub mod relay_only;
pub mod routing;
pub mod swarm;
pub mod turn_fetch;
