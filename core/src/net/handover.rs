//! A listen-only libp2p transport for TCP connections accepted by someone else.
//!
//! The relay serves TURN over TLS and libp2p on one TCP port (443, the one port a
//! restrictive network passes): its own acceptor reads the first byte of each connection
//! and keeps the TLS ones; the others (libp2p's multistream-select header) are handed over
//! here, through a channel, and the swarm upgrades them like any TCP connection (Noise,
//! yamux). The connection keeps its real remote address, so identify reports the client's
//! observed address as usual.
//!
//! [`HandoverTransport`] listens on exactly one address, the shared port's, reports the
//! addresses it was given, and dials nothing: the swarm's TCP transport dials.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::{Ready, ready};
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::tcp::tokio::TcpStream;
use tokio::sync::mpsc;

/// A TCP connection accepted elsewhere, and its remote address.
pub type HandedOver = (tokio::net::TcpStream, SocketAddr);

/// Where the shared port's acceptor hands libp2p connections over.
pub type Handover = mpsc::Sender<HandedOver>;

/// Connections waiting for the swarm before the acceptor waits in turn.
pub const HANDOVER_QUEUE: usize = 64;

/// The listen-only transport. See the [module docs](self).
#[derive(Debug)]
pub struct HandoverTransport {
    /// The address `listen_on` accepts (the shared port's, as a multiaddr).
    listen: Multiaddr,
    /// The addresses reported once listening (the shared port on each of the host's IPs).
    reported: Vec<Multiaddr>,
    /// The handed-over connections (dropped when the listener is removed or the sending
    /// side is gone).
    incoming: Option<mpsc::Receiver<HandedOver>>,
    /// The listener, once the swarm listens.
    listener: Option<ListenerId>,
    /// Events not yet polled.
    events: VecDeque<TransportEvent<Ready<Result<TcpStream, std::io::Error>>, std::io::Error>>,
}

/// A channel from an acceptor to a [`HandoverTransport`].
pub fn channel() -> (Handover, mpsc::Receiver<HandedOver>) {
    mpsc::channel(HANDOVER_QUEUE)
}

impl HandoverTransport {
    /// A transport taking the connections of `incoming` (see [`channel`]). It listens on
    /// `listen` (a TCP socket address) and reports `reported` as its addresses.
    pub fn new(
        listen: SocketAddr,
        reported: Vec<SocketAddr>,
        incoming: mpsc::Receiver<HandedOver>,
    ) -> Self {
        Self {
            listen: tcp_multiaddr(listen),
            reported: reported.into_iter().map(tcp_multiaddr).collect(),
            incoming: Some(incoming),
            listener: None,
            events: VecDeque::new(),
        }
    }

    /// The address the swarm must listen on to receive the handed-over connections.
    pub fn listen_addr(&self) -> &Multiaddr {
        &self.listen
    }
}

/// `/ip4/…/tcp/…` or `/ip6/…/tcp/…`.
pub fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

impl Transport for HandoverTransport {
    type Output = TcpStream;
    type Error = std::io::Error;
    type ListenerUpgrade = Ready<Result<TcpStream, std::io::Error>>;
    type Dial = Ready<Result<TcpStream, std::io::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        if addr != self.listen || self.incoming.is_none() || self.listener.is_some() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.listener = Some(id);
        for listen_addr in &self.reported {
            self.events.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: listen_addr.clone(),
            });
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listener != Some(id) {
            return false;
        }
        self.listener = None;
        self.incoming = None;
        self.events.push_back(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        let Some(listener_id) = self.listener else {
            return Poll::Pending;
        };
        let local_addr = self.listen.clone();
        let Some(incoming) = self.incoming.as_mut() else {
            return Poll::Pending;
        };
        match incoming.poll_recv(cx) {
            Poll::Ready(Some((stream, remote))) => Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade: ready(Ok(TcpStream(stream))),
                local_addr,
                send_back_addr: tcp_multiaddr(remote),
            }),
            Poll::Ready(None) => {
                self.listener = None;
                self.incoming = None;
                Poll::Ready(TransportEvent::ListenerClosed {
                    listener_id,
                    reason: Ok(()),
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::poll_fn;

    #[tokio::test]
    async fn listens_only_on_its_address_and_yields_what_is_handed_over() {
        let shared: SocketAddr = "127.0.0.1:4443".parse().unwrap();
        let (handover, incoming) = channel();
        let mut transport = HandoverTransport::new(shared, vec![shared], incoming);
        let other = tcp_multiaddr("127.0.0.1:4444".parse().unwrap());
        assert!(matches!(
            transport.listen_on(ListenerId::next(), other),
            Err(TransportError::MultiaddrNotSupported(_))
        ));
        let id = ListenerId::next();
        transport
            .listen_on(id, transport.listen_addr().clone())
            .unwrap();
        let mut transport = Box::pin(transport);
        let event = poll_fn(|cx| transport.as_mut().poll(cx)).await;
        assert!(
            matches!(event, TransportEvent::NewAddress { listener_id, ref listen_addr }
                if listener_id == id && *listen_addr == tcp_multiaddr(shared))
        );

        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(server.local_addr().unwrap());
        let ((accepted, from), _client) =
            futures::join!(async { server.accept().await.unwrap() }, async {
                client.await.unwrap()
            });
        handover.send((accepted, from)).await.unwrap();
        let event = poll_fn(|cx| transport.as_mut().poll(cx)).await;
        let TransportEvent::Incoming {
            upgrade,
            send_back_addr,
            ..
        } = event
        else {
            panic!("expected an incoming connection, got {event:?}");
        };
        assert_eq!(send_back_addr, tcp_multiaddr(from));
        assert!(upgrade.await.is_ok());
    }
}
