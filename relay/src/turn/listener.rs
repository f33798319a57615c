//! The TURN engine's listeners: UDP ([`GatedUdp`]) and, per TCP or TLS listener, its
//! connections multiplexed into one ([`TcpMux`]), each with the gate in front of the engine.
//!
//! The engine takes a listener as a `webrtc_util::Conn`, an interface made for connected
//! sockets too. A listener only receives and sends with addresses, and the engine must not
//! close it (it closes the listener whenever one allocation closes). [`Listener`] writes
//! that part of `Conn` once; each listener says only how it receives, sends and where it
//! listens ([`Listen`]).

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::trace;
use webrtc_util::Conn;

use super::{Gate, Pending, UDP, Verdict, Writers};
use crate::metrics::Label;

/// An error for the engine, from a `Conn` method that does not apply.
pub(super) fn conn_error(message: &str) -> webrtc_util::Error {
    webrtc_util::Error::Other(message.to_owned())
}

/// What a listener does: receive (through the gate), send, say where it listens.
#[async_trait]
pub(super) trait Listen: Send + Sync + 'static {
    /// The next datagram or frame the gate lets through, and its sender.
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)>;

    /// Sends `buf` to the client at `target`.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize>;

    /// The listening address.
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr>;
}

/// A [`Listen`] as the engine's `Conn`: no connected-socket methods, never closed.
pub(super) struct Listener<L>(pub(super) L);

#[async_trait]
impl<L: Listen> Conn for Listener<L> {
    async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
        Err(conn_error("a listener does not connect"))
    }

    async fn recv(&self, _: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(conn_error("a listener needs recv_from"))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }

    async fn send(&self, _: &[u8]) -> webrtc_util::Result<usize> {
        Err(conn_error("a listener needs send_to"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.0.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        // The engine closes the listener whenever an allocation closes; it stays open.
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The UDP listener, with the gate in front of the engine.
pub(super) struct GatedUdp {
    pub(super) socket: UdpSocket,
    pub(super) gate: Arc<Gate>,
    pub(super) pending: Pending,
}

#[async_trait]
impl Listen for GatedUdp {
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            match self.gate.inspect(&buf[..n], UDP, &self.pending) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Drop => trace!(%from, "dropped datagram"),
                Verdict::Reply(answer) => {
                    let _ = self.socket.send_to(&answer, from).await;
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

/// Every TURN-over-TCP (or -TLS) connection of a listener, multiplexed into one engine
/// listener.
pub(super) struct TcpMux {
    pub(super) local: SocketAddr,
    /// The listener's metrics label (`transport` = `tcp` / `tls`).
    pub(super) label: Label,
    pub(super) frames: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    pub(super) writers: Writers,
    pub(super) gate: Arc<Gate>,
    pub(super) pending: Pending,
}

#[async_trait]
impl Listen for TcpMux {
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut frames = self.frames.lock().await;
        loop {
            let (frame, from) = frames
                .recv()
                .await
                .ok_or_else(|| conn_error("TCP listener closed"))?;
            if frame.len() > buf.len() {
                self.gate.metrics.malformed.get_or_create(&self.label).inc();
                continue;
            }
            match self.gate.inspect(&frame, self.label, &self.pending) {
                Verdict::Pass => {
                    buf[..frame.len()].copy_from_slice(&frame);
                    return Ok((frame.len(), from));
                }
                Verdict::Drop => trace!(%from, "dropped TCP frame"),
                Verdict::Reply(answer) => self.queue(answer, from),
            }
        }
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.queue(buf.to_vec(), target);
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl TcpMux {
    /// Queues bytes for the connection from `target`; dropped if it is gone or backed up
    /// (like a datagram on a full UDP buffer).
    fn queue(&self, bytes: Vec<u8>, target: SocketAddr) {
        let writer = self
            .writers
            .lock()
            .ok()
            .and_then(|t| t.writers.get(&target).cloned());
        match writer {
            Some(writer) => {
                if writer.try_send(bytes).is_err() {
                    trace!(%target, "TCP connection backed up; frame dropped");
                }
            }
            None => trace!(%target, "no TCP connection for answer"),
        }
    }
}
