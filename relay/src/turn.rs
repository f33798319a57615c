//! The relay's STUN/TURN server (RFC 5766/8656) on UDP and TCP, with REST-API credentials,
//! per-identity quotas and counters.
//!
//! The protocol engine is the `turn` crate's [`Server`]; this module gives it sockets and
//! policy:
//!
//! ```text
//! client ──UDP──▶ GatedUdp ─┐                         ┌─▶ Metered (relayed UDP socket) ──▶ peer
//!                           ├─▶ turn::Server ─alloc─▶ Allocator
//! client ──TCP──▶ TcpMux  ──┘   (RestAuth)            └─ quota: allocations per identity
//! ```
//!
//! - **Gate** (on every datagram or TCP frame, before the engine): anything that is neither
//!   STUN nor ChannelData is dropped and counted (`turn_malformed_total`). A request with
//!   USERNAME and MESSAGE-INTEGRITY has its credentials checked ([`crate::access`]: form,
//!   expiry, allowlist, HMAC password, integrity); a failure is counted by reason and the
//!   request still goes to the engine, which answers with the standard error. A valid
//!   Allocate from an identity already holding its quota of allocations is answered
//!   `486 Allocation Quota Reached` here and never reaches the engine.
//! - **Allocator** (the engine's relay-address generator): binds the relayed UDP socket in
//!   the configured port range and takes one allocation from the identity's quota (the
//!   identity comes from the gate: the engine handles one message at a time per listener,
//!   so the Allocate that triggers the generator is the one the gate just let through).
//! - **Metered** (each relayed socket): counts bytes and packets in both directions and
//!   applies the identity's bandwidth quota (a token bucket shared by all its allocations;
//!   over-quota datagrams are dropped and counted). Closing the allocation gives its quota
//!   slot back.
//!   Datagrams to the relay host's loopback or unspecified addresses are dropped and
//!   counted unless `allow_loopback_peers` is set.
//! - **TCP** (RFC 6062 framing, RFC 5766 §2.1): each connection is read as a stream of STUN
//!   messages and padded ChannelData frames ([`tcp_frame_len`]); all connections are
//!   multiplexed into one engine listener keyed by the client's address. The relayed side
//!   is always UDP.
//!
//! Credentials: see [`crate::access`]; the [`Issuer`] mints them for the libp2p node.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use conclave_core::net::turn::{IceServer, TurnRefusal, TurnResponse};
use libp2p::PeerId;
use rand::Rng;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, ErrorCodeAttribute};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::RelayAddressGenerator;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use webrtc_util::Conn;

use crate::access::{self, AllocationCounts, Allowlist, CredentialError, Credentials, TokenBucket};
use crate::config::{PortRange, TurnConfig};
use crate::metrics::{FROM_PEER, Label, Metrics, TO_PEER};

/// File name of the generated shared secret inside the data directory.
pub const SECRET_FILE: &str = "turn.secret";
/// Queue of TCP frames waiting for the engine, and of answers per TCP connection.
const TCP_QUEUE: usize = 256;
/// Socket buffer size asked for the UDP listener (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`).
const LISTENER_BUFFER: usize = 4 * 1024 * 1024;
/// Attempts to find a free relay port before giving up.
const PORT_ATTEMPTS: usize = 64;
const UDP: Label = [("transport", "udp")];
const TCP: Label = [("transport", "tcp")];

/// Why the TURN server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The shared secret file could not be read or created.
    #[error("cannot use the TURN secret file {path}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret file is empty.
    #[error("the TURN secret file {path} is empty")]
    EmptySecret {
        /// The file.
        path: PathBuf,
    },
    /// A listener could not be bound.
    #[error("cannot listen for TURN on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TURN engine refused its configuration.
    #[error("TURN server: {0}")]
    Engine(String),
}

/// Why a TCP frame header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Neither a STUN message nor ChannelData.
    #[error("not a STUN message or ChannelData frame")]
    Unknown,
    /// A STUN length that is not a multiple of four.
    #[error("STUN length {0} is not a multiple of 4")]
    Unaligned(usize),
}

/// Total length on a TCP stream of the frame whose first four bytes are `header`: a STUN
/// message (20-byte header + length) or ChannelData (4-byte header + length padded to 4).
pub fn tcp_frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    match header[0] >> 6 {
        0b00 if len % 4 == 0 => Ok(20 + len),
        0b00 => Err(FrameError::Unaligned(len)),
        0b01 => Ok(4 + len.div_ceil(4) * 4),
        _ => Err(FrameError::Unknown),
    }
}

/// What the gate does with one datagram or frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the engine.
    Pass,
    /// Drop it silently.
    Drop,
    /// Answer this instead (and do not hand it on).
    Reply(Vec<u8>),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The shared secret, never printed.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its text (as in coturn's `static-auth-secret`).
    pub fn new(text: &str) -> Self {
        Self(Arc::from(text.trim().as_bytes()))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Reads the secret from `path`, creating it (random, mode 0600) if it does not exist.
pub fn load_or_create_secret(path: &Path) -> Result<Secret, TurnError> {
    let io_err = |source| TurnError::SecretFile {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(TurnError::EmptySecret {
            path: path.to_owned(),
        }),
        Ok(text) => Ok(Secret::new(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err)?;
            }
            let bytes: [u8; 32] = rand::thread_rng().r#gen();
            let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            crate::node::write_private(path, format!("{text}\n").as_bytes()).map_err(io_err)?;
            info!(path = %path.display(), "created TURN shared secret");
            Ok(Secret::new(&text))
        }
        Err(err) => Err(io_err(err)),
    }
}

/// Mints credentials for the libp2p node's `/conclave/turn/1.0.0` protocol.
#[derive(Debug, Clone)]
pub struct Issuer {
    secret: Secret,
    allowlist: Allowlist,
    ttl: Duration,
    urls: Vec<String>,
}

impl Issuer {
    /// The answer for `peer` at `now_unix`.
    pub fn issue(&self, peer: &PeerId, now_unix: u64) -> TurnResponse {
        if !self.allowlist.allows(peer) {
            return TurnResponse::Refused(TurnRefusal::NotAllowed);
        }
        let Credentials {
            username,
            password,
            expires_unix,
        } = access::mint(self.secret.bytes(), peer, now_unix, self.ttl);
        TurnResponse::Credentials(IceServer {
            urls: self.urls.clone(),
            username,
            credential: password,
            expires_unix,
        })
    }

    /// The ICE URLs handed out.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }
}

/// Policy and bookkeeping shared by the listeners, the allocator and the relayed sockets.
#[derive(Debug)]
struct Gate {
    secret: Secret,
    allowlist: Allowlist,
    counts: Mutex<AllocationCounts>,
    buckets: Mutex<HashMap<PeerId, TokenBucket>>,
    bandwidth: u64,
    allow_loopback_peers: bool,
    metrics: Arc<Metrics>,
}

/// The identity of the Allocate the gate last let through on one listener. The allocator
/// reads it (and may read it twice: an EVEN-PORT request probes for a port first).
type Pending = Arc<Mutex<Option<PeerId>>>;

impl Gate {
    /// Classifies one datagram or frame from a TURN client.
    fn inspect(&self, buf: &[u8], transport: Label, pending: &Pending) -> Verdict {
        // ChannelData: channel numbers 0x4000..=0x7FFF.
        if buf.first().is_some_and(|b| b >> 6 == 0b01) {
            return Verdict::Pass;
        }
        if !stun::message::is_message(buf) {
            self.metrics.malformed.get_or_create(&transport).inc();
            return Verdict::Drop;
        }
        let mut msg = Message::new();
        msg.raw = buf.to_vec();
        if msg.decode().is_err() {
            self.metrics.malformed.get_or_create(&transport).inc();
            return Verdict::Drop;
        }
        if msg.typ.class != CLASS_REQUEST
            || !msg.contains(ATTR_MESSAGE_INTEGRITY)
            || !msg.contains(ATTR_USERNAME)
        {
            return Verdict::Pass;
        }
        let peer = match self.check_credentials(&mut msg) {
            Ok(peer) => peer,
            Err(err) => {
                debug!(reason = err.label(), "TURN credentials refused");
                self.metrics.refuse_credential(err.label());
                return Verdict::Pass;
            }
        };
        if msg.typ.method == METHOD_ALLOCATE {
            let check = self.counts.lock().map(|c| c.check(&peer));
            if let Ok(Err(exceeded)) = check {
                warn!(%peer, held = exceeded.held, "TURN allocation quota reached");
                self.metrics.refused_allocations.inc();
                return quota_reached(&msg).map_or(Verdict::Drop, Verdict::Reply);
            }
            if let Ok(mut slot) = pending.lock() {
                *slot = Some(peer);
            }
        }
        Verdict::Pass
    }

    fn check_credentials(&self, msg: &mut Message) -> Result<PeerId, CredentialError> {
        let username = TextAttribute::get_from_as(msg, ATTR_USERNAME)
            .map_err(|_| CredentialError::Malformed)?
            .text;
        let realm = TextAttribute::get_from_as(msg, ATTR_REALM)
            .map_err(|_| CredentialError::Malformed)?
            .text;
        let peer = access::check_username(&username, unix_now(), &self.allowlist)?;
        let password = access::password_for(self.secret.bytes(), &username);
        MessageIntegrity::new_long_term_integrity(username, realm, password)
            .check(msg)
            .map_err(|_| CredentialError::WrongPassword)?;
        Ok(peer)
    }

    /// Whether `bytes` more may flow for `peer` now.
    fn allow_bandwidth(&self, peer: &PeerId, bytes: usize) -> bool {
        if self.bandwidth == 0 {
            return true;
        }
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        buckets
            .entry(*peer)
            // A burst of a quarter second at the full rate, at least one large datagram.
            .or_insert_with(|| {
                TokenBucket::new(self.bandwidth, (self.bandwidth / 4).max(4096), now)
            })
            .allow(now, bytes)
    }

    fn release(&self, peer: &PeerId) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.release(peer);
            if counts.held(peer) == 0
                && let Ok(mut buckets) = self.buckets.lock()
            {
                buckets.remove(peer);
            }
        }
        self.metrics.allocations.dec();
    }
}

/// A `486 Allocation Quota Reached` answer to `request`.
fn quota_reached(request: &Message) -> Option<Vec<u8>> {
    let mut answer = Message::new();
    let setters: [Box<dyn Setter>; 3] = [
        Box::new(Message {
            transaction_id: request.transaction_id,
            ..Message::default()
        }),
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code: CODE_ALLOC_QUOTA_REACHED,
            reason: b"Allocation Quota Reached".to_vec(),
        }),
    ];
    answer.build(&setters).ok()?;
    Some(answer.raw)
}

fn conn_error(message: &str) -> webrtc_util::Error {
    webrtc_util::Error::Other(message.to_owned())
}

/// The UDP listener, with the gate in front of the engine.
struct GatedUdp {
    socket: UdpSocket,
    gate: Arc<Gate>,
    pending: Pending,
}

#[async_trait]
impl Conn for GatedUdp {
    async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
        Err(conn_error("a listener does not connect"))
    }

    async fn recv(&self, _: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(conn_error("a listener needs recv_from"))
    }

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

    async fn send(&self, _: &[u8]) -> webrtc_util::Result<usize> {
        Err(conn_error("a listener needs send_to"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
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

/// Every TURN-over-TCP connection, multiplexed into one engine listener.
struct TcpMux {
    local: SocketAddr,
    frames: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    gate: Arc<Gate>,
    pending: Pending,
}

#[async_trait]
impl Conn for TcpMux {
    async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
        Err(conn_error("a listener does not connect"))
    }

    async fn recv(&self, _: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(conn_error("a listener needs recv_from"))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut frames = self.frames.lock().await;
        loop {
            let (frame, from) = frames
                .recv()
                .await
                .ok_or_else(|| conn_error("TCP listener closed"))?;
            if frame.len() > buf.len() {
                self.gate.metrics.malformed.get_or_create(&TCP).inc();
                continue;
            }
            match self.gate.inspect(&frame, TCP, &self.pending) {
                Verdict::Pass => {
                    buf[..frame.len()].copy_from_slice(&frame);
                    return Ok((frame.len(), from));
                }
                Verdict::Drop => trace!(%from, "dropped TCP frame"),
                Verdict::Reply(answer) => self.queue(answer, from),
            }
        }
    }

    async fn send(&self, _: &[u8]) -> webrtc_util::Result<usize> {
        Err(conn_error("a listener needs send_to"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.queue(buf.to_vec(), target);
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
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
            .and_then(|w| w.get(&target).cloned());
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

async fn accept_tcp(
    listener: TcpListener,
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    max: usize,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, from) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    debug!(error = %err, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        {
            let Ok(mut map) = writers.lock() else { break };
            if map.len() >= max {
                warn!(%from, max, "too many TURN-over-TCP connections; refused");
                continue;
            }
            map.insert(from, tx);
        }
        metrics.tcp_connections.inc();
        let _ = stream.set_nodelay(true);
        let (frames, writers, metrics, cancel) = (
            frames.clone(),
            Arc::clone(&writers),
            Arc::clone(&metrics),
            cancel.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_tcp(stream, from, frames, rx, &metrics) => {}
            }
            if let Ok(mut map) = writers.lock() {
                map.remove(&from);
            }
            metrics.tcp_connections.dec();
            debug!(%from, "TURN-over-TCP connection closed");
        });
    }
}

async fn serve_tcp(
    stream: TcpStream,
    from: SocketAddr,
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut answers: mpsc::Receiver<Vec<u8>>,
    metrics: &Metrics,
) {
    let (mut read, mut write) = stream.into_split();
    let reader = async {
        loop {
            let mut header = [0u8; 4];
            if read.read_exact(&mut header).await.is_err() {
                return;
            }
            let len = match tcp_frame_len(header) {
                Ok(len) => len,
                Err(err) => {
                    debug!(%from, error = %err, "malformed TURN-over-TCP stream; closing");
                    metrics.malformed.get_or_create(&TCP).inc();
                    return;
                }
            };
            let mut frame = vec![0u8; len];
            frame[..4].copy_from_slice(&header);
            if read.read_exact(&mut frame[4..]).await.is_err() {
                return;
            }
            if frames.send((frame, from)).await.is_err() {
                return;
            }
        }
    };
    let writer = async {
        while let Some(bytes) = answers.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}

/// A relayed UDP socket: counted, rate-limited, and holding one quota slot.
struct Metered {
    socket: UdpSocket,
    peer: PeerId,
    gate: Arc<Gate>,
    released: AtomicBool,
}

impl Metered {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.gate.release(&self.peer);
        }
    }

    fn count(&self, direction: Label, bytes: usize) {
        let metrics = &self.gate.metrics;
        metrics.relayed_packets.get_or_create(&direction).inc();
        metrics
            .relayed_bytes
            .get_or_create(&direction)
            .inc_by(bytes as u64);
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
            if self.gate.allow_bandwidth(&self.peer, n) {
                self.count(FROM_PEER, n);
                return Ok((n, from));
            }
            self.gate
                .metrics
                .dropped_packets
                .get_or_create(&FROM_PEER)
                .inc();
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let ip = target.ip();
        if !self.gate.allow_loopback_peers && (ip.is_loopback() || ip.is_unspecified()) {
            self.gate.metrics.denied_peer_packets.inc();
            return Ok(buf.len());
        }
        if !self.gate.allow_bandwidth(&self.peer, buf.len()) {
            self.gate
                .metrics
                .dropped_packets
                .get_or_create(&TO_PEER)
                .inc();
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

/// The engine's relay-address generator: binds relayed sockets and takes quota slots.
struct Allocator {
    bind_ip: IpAddr,
    public_ip: IpAddr,
    ports: PortRange,
    gate: Arc<Gate>,
    pending: Pending,
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
        let peer = self
            .pending
            .lock()
            .ok()
            .and_then(|p| *p)
            .ok_or_else(|| refuse("no authenticated identity for this allocation"))?;
        if use_ipv4 != self.bind_ip.is_ipv4() {
            return Err(refuse("address family not served"));
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
            self.gate.release(&peer);
            return Err(refuse("no free relay port"));
        };
        let port = socket.local_addr()?.port();
        self.gate.metrics.allocations_total.inc();
        debug!(%peer, port, "TURN allocation");
        let metered = Metered {
            socket,
            peer,
            gate: Arc::clone(&self.gate),
            released: AtomicBool::new(false),
        };
        Ok((Arc::new(metered), SocketAddr::new(self.public_ip, port)))
    }
}

/// Binds a UDP socket on `ip` at `requested` or a random port of `ports`.
async fn bind_relay_socket(ip: IpAddr, ports: PortRange, requested: u16) -> Option<UdpSocket> {
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

/// Checks REST-API usernames for the engine and derives their long-term key.
struct RestAuth {
    secret: Secret,
    allowlist: Allowlist,
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        access::check_username(username, unix_now(), &self.allowlist)
            .map_err(|e| turn::Error::Other(e.to_string()))?;
        let password = access::password_for(self.secret.bytes(), username);
        Ok(generate_auth_key(username, realm, &password))
    }
}

/// A running STUN/TURN server.
pub struct TurnServer {
    server: Arc<Server>,
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
    issuer: Issuer,
    cancel: CancellationToken,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        let server = Arc::clone(&self.server);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = server.close().await;
            });
        }
    }
}

/// Binds the UDP listener and, with `tcp`, a TCP listener on the same port. With port 0
/// the system picks a UDP port that may be taken for TCP: then it tries another.
async fn bind_pair(
    addr: SocketAddr,
    tcp: bool,
) -> std::io::Result<(UdpSocket, Option<TcpListener>)> {
    let mut attempts = if addr.port() == 0 { 8 } else { 1 };
    loop {
        let udp = bind_listener(addr)?;
        if !tcp {
            return Ok((udp, None));
        }
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse && attempts > 1 => {
                attempts -= 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Binds the UDP listener with [`LISTENER_BUFFER`]-byte socket buffers: the engine reads
/// one datagram at a time, so bursts wait in the kernel.
fn bind_listener(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(LISTENER_BUFFER)),
        ("send", socket.set_send_buffer_size(LISTENER_BUFFER)),
    ] {
        if let Err(err) = result {
            warn!(error = %err, "cannot enlarge the TURN listener's {what} buffer");
        }
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Where the relay's outbound traffic leaves from (no packet is sent).
fn outbound_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    // TEST-NET-2: connect() only consults the routing table.
    socket.connect(("198.51.100.1", 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

impl TurnServer {
    /// Binds the listeners and starts the engine. The secret comes from
    /// `config.secret_file` or `<data_dir>/turn.secret`.
    pub async fn start(
        config: &TurnConfig,
        data_dir: &Path,
        allowlist: Allowlist,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TurnError> {
        let secret_path = config
            .secret_file
            .clone()
            .unwrap_or_else(|| data_dir.join(SECRET_FILE));
        let secret = load_or_create_secret(&secret_path)?;
        let listen_err = |addr| move |source| TurnError::Listen { addr, source };
        let (udp_socket, tcp_listener) = bind_pair(config.listen, config.tcp)
            .await
            .map_err(listen_err(config.listen))?;
        let udp = udp_socket.local_addr().map_err(listen_err(config.listen))?;
        let public_ip = match config.public_ip {
            Some(ip) => ip,
            None if !udp.ip().is_unspecified() => udp.ip(),
            None => outbound_ip().unwrap_or_else(|| {
                warn!("cannot find this host's address; announcing 127.0.0.1 (set turn.public_ip)");
                IpAddr::from([127, 0, 0, 1])
            }),
        };
        let gate = Arc::new(Gate {
            secret: secret.clone(),
            allowlist: allowlist.clone(),
            counts: Mutex::new(AllocationCounts::new(config.max_allocations_per_identity)),
            buckets: Mutex::new(HashMap::new()),
            bandwidth: config.bandwidth_per_identity,
            allow_loopback_peers: config.allow_loopback_peers,
            metrics: Arc::clone(&metrics),
        });
        let cancel = CancellationToken::new();
        let allocator = |pending: &Pending| Allocator {
            bind_ip: udp.ip(),
            public_ip,
            ports: config.relay_ports,
            gate: Arc::clone(&gate),
            pending: Arc::clone(pending),
        };
        let udp_pending = Pending::default();
        let mut conn_configs = vec![ConnConfig {
            conn: Arc::new(GatedUdp {
                socket: udp_socket,
                gate: Arc::clone(&gate),
                pending: Arc::clone(&udp_pending),
            }),
            relay_addr_generator: Box::new(allocator(&udp_pending)),
        }];
        let mut tcp = None;
        if let Some(tcp_listener) = tcp_listener {
            let (frames_tx, frames_rx) = mpsc::channel(TCP_QUEUE);
            let writers = Arc::new(Mutex::new(HashMap::new()));
            let tcp_pending = Pending::default();
            conn_configs.push(ConnConfig {
                conn: Arc::new(TcpMux {
                    local: udp,
                    frames: tokio::sync::Mutex::new(frames_rx),
                    writers: Arc::clone(&writers),
                    gate: Arc::clone(&gate),
                    pending: Arc::clone(&tcp_pending),
                }),
                relay_addr_generator: Box::new(allocator(&tcp_pending)),
            });
            tokio::spawn(accept_tcp(
                tcp_listener,
                frames_tx,
                writers,
                config.max_tcp_connections,
                Arc::clone(&metrics),
                cancel.clone(),
            ));
            tcp = Some(udp);
        }
        let server = Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: Arc::new(RestAuth {
                secret: secret.clone(),
                allowlist: allowlist.clone(),
            }),
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await
        .map_err(|e| TurnError::Engine(e.to_string()))?;
        let host = match &config.public_host {
            Some(host) => host.clone(),
            None if public_ip.is_ipv6() => format!("[{public_ip}]"),
            None => public_ip.to_string(),
        };
        let port = udp.port();
        let mut urls = vec![
            format!("stun:{host}:{port}"),
            format!("turn:{host}:{port}?transport=udp"),
        ];
        if tcp.is_some() {
            urls.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        info!(%udp, tcp = ?tcp, %public_ip, "TURN server running");
        Ok(Self {
            server: Arc::new(server),
            udp,
            tcp,
            issuer: Issuer {
                secret,
                allowlist,
                ttl: config.credential_ttl,
                urls,
            },
            cancel,
        })
    }

    /// The UDP listen address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The TCP listen address, if TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The credential issuer for the libp2p node.
    pub fn issuer(&self) -> Issuer {
        self.issuer.clone()
    }
}

/// Internals reached by the fuzz targets (`relay/fuzz`), never public API.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// Runs the gate on `bytes` as a UDP datagram (open allowlist, quota of one).
    pub fn inspect(bytes: &[u8]) -> Verdict {
        let gate = Gate {
            secret: Secret::new("fuzz"),
            allowlist: Allowlist::Open,
            counts: Mutex::new(AllocationCounts::new(1)),
            buckets: Mutex::new(HashMap::new()),
            bandwidth: 0,
            allow_loopback_peers: false,
            metrics: Arc::new(Metrics::new()),
        };
        gate.inspect(bytes, UDP, &Pending::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_frames_have_their_length() {
        // STUN binding request header with 8 bytes of attributes.
        assert_eq!(tcp_frame_len([0x00, 0x01, 0x00, 0x08]), Ok(28));
        assert_eq!(
            tcp_frame_len([0x00, 0x01, 0x00, 0x07]),
            Err(FrameError::Unaligned(7))
        );
        // ChannelData 0x4000 with 5 bytes: padded to 8.
        assert_eq!(tcp_frame_len([0x40, 0x00, 0x00, 0x05]), Ok(12));
        assert_eq!(tcp_frame_len([0x7f, 0xff, 0x00, 0x00]), Ok(4));
        assert_eq!(tcp_frame_len([0x80, 0, 0, 0]), Err(FrameError::Unknown));
        assert_eq!(tcp_frame_len([0x00, 0x01, 0xff, 0xfc]), Ok(20 + 0xfffc));
    }

    fn gate(max: usize) -> Gate {
        Gate {
            secret: Secret::new("s3cret"),
            allowlist: Allowlist::Open,
            counts: Mutex::new(AllocationCounts::new(max)),
            buckets: Mutex::new(HashMap::new()),
            bandwidth: 0,
            allow_loopback_peers: false,
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn allocate(username: &str, password: &str) -> Vec<u8> {
        let mut msg = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(stun::agent::TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
            Box::new(TextAttribute::new(ATTR_REALM, "conclave".into())),
            Box::new(MessageIntegrity::new_long_term_integrity(
                username.into(),
                "conclave".into(),
                password.into(),
            )),
        ];
        msg.build(&setters).unwrap();
        msg.raw
    }

    #[test]
    fn gate_checks_credentials_and_quota() {
        let gate = gate(1);
        let pending = Pending::default();
        assert_eq!(
            gate.inspect(b"\xffhello world, not stun", UDP, &pending),
            Verdict::Drop
        );
        assert_eq!(gate.inspect(&[], UDP, &pending), Verdict::Drop);
        assert_eq!(gate.inspect(&[0x40, 0, 0, 0], UDP, &pending), Verdict::Pass);
        let peer = PeerId::random();
        let creds = access::mint(b"s3cret", &peer, unix_now(), Duration::from_secs(60));
        // Wrong password: counted, still handed on (the engine answers with its error).
        assert_eq!(
            gate.inspect(&allocate(&creds.username, "nope"), UDP, &pending),
            Verdict::Pass
        );
        assert_eq!(*pending.lock().unwrap(), None);
        let expired = access::mint(b"s3cret", &peer, 1000, Duration::from_secs(60));
        gate.inspect(
            &allocate(&expired.username, &expired.password),
            UDP,
            &pending,
        );
        assert_eq!(*pending.lock().unwrap(), None);
        // Good credentials: the identity is remembered for the allocator.
        let good = allocate(&creds.username, &creds.password);
        assert_eq!(gate.inspect(&good, UDP, &pending), Verdict::Pass);
        assert_eq!(*pending.lock().unwrap(), Some(peer));
        gate.counts.lock().unwrap().acquire(&peer).unwrap();
        // Over quota: answered 486 here.
        let Verdict::Reply(answer) = gate.inspect(&good, UDP, &pending) else {
            panic!("expected a 486 answer");
        };
        let mut msg = Message::new();
        msg.raw = answer;
        msg.decode().unwrap();
        let mut code = ErrorCodeAttribute::default();
        stun::message::Getter::get_from(&mut code, &msg).unwrap();
        assert!(code.code == CODE_ALLOC_QUOTA_REACHED);
        let text = gate.metrics.encode();
        assert!(text.contains("reason=\"wrong_password\"} 1"), "{text}");
        assert!(text.contains("reason=\"expired\"} 1"), "{text}");
        assert!(text.contains("turn_refused_allocations_total 1"), "{text}");
        assert!(text.contains("transport=\"udp\"} 2"), "{text}");
    }

    #[test]
    fn issuer_refuses_identities_off_the_allowlist() {
        let allowed = PeerId::random();
        let issuer = Issuer {
            secret: Secret::new("x"),
            allowlist: Allowlist::parse(&[allowed.to_string()]).unwrap(),
            ttl: Duration::from_secs(600),
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        };
        let TurnResponse::Credentials(server) = issuer.issue(&allowed, 100) else {
            panic!("allowed identity refused");
        };
        assert_eq!(server.expires_unix, 700);
        assert_eq!(
            server.credential,
            access::password_for(b"x", &server.username)
        );
        assert_eq!(
            issuer.issue(&PeerId::random(), 100),
            TurnResponse::Refused(TurnRefusal::NotAllowed)
        );
    }

    /// A standard TURN client (the `turn` crate's) through a real server on loopback: the
    /// identity's bandwidth quota drops what exceeds it, counted, and the allocation's
    /// quota slot comes back when the client deletes it.
    #[tokio::test]
    async fn bandwidth_quota_drops_the_excess() {
        let dir = tempfile::tempdir().unwrap();
        let config = TurnConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bandwidth_per_identity: 20_000,
            allow_loopback_peers: true,
            ..TurnConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let server = TurnServer::start(&config, dir.path(), Allowlist::Open, Arc::clone(&metrics))
            .await
            .unwrap();
        let secret = std::fs::read_to_string(dir.path().join(SECRET_FILE)).unwrap();
        let creds = access::mint(
            secret.trim().as_bytes(),
            &PeerId::random(),
            unix_now(),
            Duration::from_secs(600),
        );
        let addr = server.udp_addr().to_string();
        let client = turn::client::Client::new(turn::client::ClientConfig {
            stun_serv_addr: addr.clone(),
            turn_serv_addr: addr,
            username: creds.username,
            password: creds.password,
            realm: "conclave".into(),
            software: String::new(),
            rto_in_ms: 0,
            conn: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            vnet: None,
        })
        .await
        .unwrap();
        client.listen().await.unwrap();
        let relayed = client.allocate().await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = peer.local_addr().unwrap();
        // 200 kB at once against 20 kB/s with a 5 kB burst.
        for _ in 0..200 {
            relayed.send_to(&[7u8; 1000], target).await.unwrap();
        }
        let mut received = 0;
        let mut buf = [0u8; 2048];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf)).await
        {
            received += 1;
        }
        assert!(
            (1..50).contains(&received),
            "{received} datagrams got through"
        );
        let text = metrics.encode();
        assert!(
            text.contains("conclave_relay_turn_dropped_packets_total{direction=\"to_peer\"} 1"),
            "{text}"
        );
        assert!(text.contains("conclave_relay_turn_allocations 1"), "{text}");
        relayed.close().await.unwrap();
        client.close().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !metrics
            .encode()
            .contains("conclave_relay_turn_allocations 0")
        {
            assert!(tokio::time::Instant::now() < deadline, "slot not released");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn secret_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(SECRET_FILE);
        let first = load_or_create_secret(&path).unwrap();
        let again = load_or_create_secret(&path).unwrap();
        assert_eq!(first.bytes(), again.bytes());
        assert_eq!(first.bytes().len(), 64);
        assert_eq!(format!("{first:?}"), "Secret(..)");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
