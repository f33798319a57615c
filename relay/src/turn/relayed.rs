//! The relayed side: the engine's relay-address generator ([`Allocator`]: relay-wide caps,
//! a port in the configured range, one quota slot) and each relayed UDP socket
//! ([`Metered`]: peer policy, allowlist, bandwidth quotas and counters on every datagram).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use libp2p::PeerId;
use rand::Rng;
use tokio::net::UdpSocket;
use tracing::{debug, trace, warn};
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use crate::config::PortRange;
use crate::metrics::{FROM_PEER, Label, TO_PEER};

use super::gate::{Gate, Pending, Relayed};
use super::{PORT_ATTEMPTS, listener};

/// A relayed UDP socket: policed, counted, rate-limited, and holding one quota slot.
pub(super) struct Metered {
    pub(super) socket: UdpSocket,
    pub(super) peer: PeerId,
    pub(super) port: u16,
    pub(super) gate: Arc<Gate>,
    pub(super) released: AtomicBool,
}

impl Metered {
    pub(super) fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.gate.release(&self.peer, Some(self.port));
        }
    }

    pub(super) fn count(&self, direction: Label, bytes: usize) {
        let metrics = &self.gate.metrics;
        metrics.relayed_packets.get_or_create(&direction).inc();
        metrics
            .relayed_bytes
            .get_or_create(&direction)
            .inc_by(bytes as u64);
    }

    /// Whether a datagram to or from `peer` may pass: the policy, the allowlist, the
    /// bandwidth limits. Counts what it refuses.
    pub(super) fn admit(&self, peer: SocketAddr, bytes: usize, direction: Label) -> bool {
        if let Err(why) = self.gate.check_peer(peer) {
            trace!(%peer, reason = why.label(), "datagram to/from a denied peer dropped");
            self.gate
                .metrics
                .denied_peer_packets
                .get_or_create(&direction)
                .inc();
            return false;
        }
        if !self.gate.live().allowlist.allows(&self.peer) {
            // Revoked by a reload; the engine is deleting the allocation.
            return false;
        }
        if let Err(relay_wide) = self.gate.allow_bandwidth(&self.peer, bytes) {
            self.gate.count_dropped(direction, relay_wide);
            return false;
        }
        true
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.release();
    }
}

#[async_trait]
impl Conn for Metered {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if self.admit(from, n, FROM_PEER) {
                self.count(FROM_PEER, n);
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, _: &[u8]) -> webrtc_util::Result<usize> {
        Err(listener::conn_error("a relayed socket needs send_to"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.admit(target, buf.len(), TO_PEER) {
            // Dropped like a datagram lost on the way: the engine reports no error.
            return Ok(buf.len());
        }
        let n = self.socket.send_to(buf, target).await?;
        self.count(TO_PEER, n);
        Ok(n)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.release();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The engine's relay-address generator: applies the relay-wide caps, binds relayed
/// sockets and takes quota slots.
pub(super) struct Allocator {
    pub(super) bind_ip: IpAddr,
    pub(super) public_ip: IpAddr,
    pub(super) ports: PortRange,
    pub(super) gate: Arc<Gate>,
    pub(super) pending: Pending,
}

impl Allocator {
    /// The relay-wide caps: allocations held at once, new allocations per second.
    pub(super) fn check_caps(&self) -> Result<(), &'static str> {
        let live = self.gate.live();
        let held = self.gate.counts.lock().map(|c| c.total()).unwrap_or(0);
        if held >= live.max_allocations {
            return Err("total");
        }
        let allowed = self
            .gate
            .allocation_bucket
            .lock()
            .is_ok_and(|mut bucket| bucket.allow(Instant::now(), 1));
        if !allowed {
            return Err("rate");
        }
        Ok(())
    }
}

#[async_trait]
impl RelayAddressGenerator for Allocator {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let refuse = |why: &str| turn::Error::Other(why.to_owned());
        let Relayed { peer, username } = self
            .pending
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or_else(|| refuse("no authenticated identity for this allocation"))?;
        if use_ipv4 != self.bind_ip.is_ipv4() {
            return Err(refuse("address family not served"));
        }
        if let Err(reason) = self.check_caps() {
            // The engine answers 508 Insufficient Capacity.
            warn!(%peer, reason, "TURN allocation refused by a relay-wide cap");
            self.gate
                .metrics
                .capped_allocations
                .get_or_create(&[("reason", reason)])
                .inc();
            return Err(refuse("relay-wide allocation cap reached"));
        }
        {
            let mut counts = self
                .gate
                .counts
                .lock()
                .map_err(|_| refuse("quota state poisoned"))?;
            if let Err(exceeded) = counts.acquire(&peer) {
                self.gate.metrics.refused_allocations.inc();
                return Err(refuse(&exceeded.to_string()));
            }
        }
        self.gate.metrics.allocations.inc();
        // From here on, dropping `metered` gives the quota slot back.
        let Some(socket) = bind_relay_socket(self.bind_ip, self.ports, requested_port).await else {
            self.gate.release(&peer, None);
            return Err(refuse("no free relay port"));
        };
        let port = match socket.local_addr() {
            Ok(addr) => addr.port(),
            Err(err) => {
                self.gate.release(&peer, None);
                return Err(err.into());
            }
        };
        if let Ok(mut relayed) = self.gate.relayed.lock() {
            relayed.insert(port, Relayed { peer, username });
        }
        self.gate.metrics.allocations_total.inc();
        debug!(%peer, port, "TURN allocation");
        let metered = Metered {
            socket,
            peer,
            port,
            gate: Arc::clone(&self.gate),
            released: AtomicBool::new(false),
        };
        Ok((Arc::new(metered), SocketAddr::new(self.public_ip, port)))
    }
}

/// Binds a UDP socket on `ip` at `requested` or a random port of `ports`.
pub(super) async fn bind_relay_socket(
    ip: IpAddr,
    ports: PortRange,
    requested: u16,
) -> Option<UdpSocket> {
    if requested != 0 {
        return UdpSocket::bind((ip, requested)).await.ok();
    }
    for _ in 0..PORT_ATTEMPTS {
        let port = rand::thread_rng().gen_range(ports.low..=ports.high);
        if let Ok(socket) = UdpSocket::bind((ip, port)).await {
            return Some(socket);
        }
    }
    None
}
