//! Relay-only mode for the control plane: a member that must not reveal its address to the
//! other members reaches everyone through relay circuits only.
//!
//! In relay-only mode the client listens on no direct address (so none is ever handed out:
//! not in hellos or heartbeats, not by identify, not in provider records), runs no mDNS and
//! no hole punching, and its TCP and QUIC transports refuse to dial anyone but a relay
//! ([`GuardedTransport`], fed by [`DirectDials`]). Every other connection — to members, to
//! other DHT nodes — goes through a relay circuit, which the relay client transport opens
//! over the connection to the relay. A dial refused here sends no packet at all.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Transport};
use tracing::debug;

/// The peers a relay-only client may dial directly: its relays.
#[derive(Debug, Default)]
pub struct DirectDials {
    relays: Mutex<HashSet<PeerId>>,
}

impl DirectDials {
    /// An empty list (nobody may be dialled directly yet).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// `relay` may be dialled directly from now on.
    pub fn allow(&self, relay: PeerId) {
        if let Ok(mut relays) = self.relays.lock() {
            relays.insert(relay);
        }
    }

    /// Whether a direct dial of `addr` is allowed: it names (`/p2p/…`, last) a relay and
    /// goes through no circuit.
    pub fn allows(&self, addr: &Multiaddr) -> bool {
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return false;
        }
        let Some(peer) = addr.iter().fold(None, |last, p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => last,
        }) else {
            return false;
        };
        self.relays.lock().is_ok_and(|r| r.contains(&peer))
    }
}

/// The direct transports (TCP and QUIC), dialling only what [`DirectDials`] allows.
pub struct GuardedTransport {
    inner: Boxed<(PeerId, StreamMuxerBox)>,
    allowed: Arc<DirectDials>,
}

impl std::fmt::Debug for GuardedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedTransport").finish_non_exhaustive()
    }
}

impl GuardedTransport {
    /// Guards `inner` with `allowed`.
    pub fn new(inner: Boxed<(PeerId, StreamMuxerBox)>, allowed: Arc<DirectDials>) -> Self {
        Self { inner, allowed }
    }
}

type Inner = Boxed<(PeerId, StreamMuxerBox)>;

impl Transport for GuardedTransport {
    type Output = (PeerId, StreamMuxerBox);
    type Error = <Inner as Transport>::Error;
    type ListenerUpgrade = <Inner as Transport>::ListenerUpgrade;
    type Dial = <Inner as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if !self.allowed.allows(&addr) {
            debug!(%addr, "relay-only: direct dial refused");
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relays_may_be_dialled_directly_and_never_a_circuit() {
        let (relay, member) = (PeerId::random(), PeerId::random());
        let allowed = DirectDials::new();
        allowed.allow(relay);
        let direct = |peer: PeerId| -> Multiaddr {
            format!("/ip4/198.51.100.1/tcp/4001/p2p/{peer}")
                .parse()
                .unwrap()
        };
        assert!(allowed.allows(&direct(relay)));
        assert!(
            allowed.allows(
                &format!("/ip4/198.51.100.1/udp/4001/quic-v1/p2p/{relay}")
                    .parse()
                    .unwrap()
            )
        );
        assert!(!allowed.allows(&direct(member)), "a member's own address");
        assert!(
            !allowed.allows(&"/ip4/203.0.113.9/tcp/4001".parse().unwrap()),
            "an address that names nobody"
        );
        let circuit: Multiaddr = format!("{}/p2p-circuit/p2p/{member}", direct(relay))
            .parse()
            .unwrap();
        assert!(
            !allowed.allows(&circuit),
            "circuits are the relay transport's, not a direct dial"
        );
    }
}
