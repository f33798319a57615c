//! The relay's STUN/TURN server (RFC 5766/8656) on UDP and TCP, with REST-API credentials,
//! a peer address policy, per-identity quotas, relay-wide caps and counters.
//!
//! The protocol engine is the `turn` crate's [`Server`]; this module gives it sockets and
//! policy:
//!
//! ```text
//! client ──UDP──▶ GatedUdp ─┐                         ┌─▶ Metered (relayed UDP socket) ──▶ peer
//!                           ├─▶ turn::Server ─alloc─▶ Allocator
//! client ──TCP──▶ TcpMux  ──┘   (RestAuth)            └─ quotas and caps
//! ```
//!
//! - **Gate** (on every datagram or TCP frame, before the engine): anything that is neither
//!   STUN nor ChannelData is dropped and counted (`turn_malformed_total`). A request with
//!   USERNAME and MESSAGE-INTEGRITY has its credentials checked ([`crate::access`]: form,
//!   expiry, allowlist, HMAC password, integrity); a failure is counted by reason and the
//!   request still goes to the engine, which answers with the standard error. With valid
//!   credentials:
//!   - an Allocate from an identity already holding its quota of allocations is answered
//!     `486 Allocation Quota Reached` here and never reaches the engine;
//!   - a CreatePermission or ChannelBind naming any peer address the [`PeerPolicy`]
//!     refuses is answered `403 Forbidden` here (with MESSAGE-INTEGRITY) and counted
//!     (`turn_denied_peer_requests_total{method}`), so the engine never installs the
//!     permission. The engine (turn 0.17) has no permission hook: this is where the policy
//!     sits for signalling.
//! - **Allocator** (the engine's relay-address generator): applies the relay-wide caps
//!   (allocations held at once, new allocations per second: refused with `508 Insufficient
//!   Capacity` and counted, `turn_capped_allocations_total{reason}`), binds the relayed UDP
//!   socket in the configured port range and takes one allocation from the identity's quota
//!   (the identity comes from the gate: the engine handles one message at a time per
//!   listener, so the Allocate that triggers the generator is the one the gate just let
//!   through).
//! - **Metered** (each relayed socket, the data path): drops and counts datagrams to or
//!   from peers the policy refuses (`turn_denied_peer_packets_total{direction}`; a second
//!   line of defence, e.g. for permissions installed before a reload narrowed the policy)
//!   and from identities no longer allowed; counts bytes and packets in both directions;
//!   applies the identity's bandwidth quota (a token bucket shared by all its allocations)
//!   and the relay-wide bandwidth cap (over-quota datagrams are dropped and counted).
//!   Closing the allocation gives its quota slot back.
//! - **TCP** (RFC 6062 framing, RFC 5766 §2.1): each connection is read as a stream of STUN
//!   messages and padded ChannelData frames ([`tcp_frame_len`]); all connections are
//!   multiplexed into one engine listener keyed by the client's address. A connection must
//!   send a valid STUN message within `tcp_handshake_timeout` and is closed after
//!   `tcp_idle_timeout` of silence; at most `max_tcp_connections` are open, at most
//!   `max_tcp_connections_per_ip` from one address. Each limit is counted when it fires
//!   (`turn_tcp_limited_total{reason}`). The relayed side is always UDP.
//!
//! **Reload** ([`TurnServer::reload`]): the allowlist, peer policy, quotas, caps and TCP
//! limits are swapped in place; allocations keep running, except those of identities the
//! new allowlist no longer admits, which the engine deletes at once.
//!
//! Credentials: see [`crate::access`]; the [`Issuer`] mints them for the libp2p node.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use conclave_core::proto::turn::{IceServer, TurnRefusal, TurnResponse};
use libp2p::PeerId;
use rand::Rng;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, ErrorCode, ErrorCodeAttribute};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, Message, MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::io::AsyncWriteExt;
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
use crate::policy::{Denied, PeerPolicy};

mod codec;
mod listener;

pub use codec::{FrameError, ReadFrameError, decode_stun, read_tcp_frame, tcp_frame_len};
use listener::{GatedUdp, Listener, TcpMux};

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
            crate::private_file::write_private(path, format!("{text}\n").as_bytes())
                .map_err(io_err)?;
            info!(path = %path.display(), "created TURN shared secret");
            Ok(Secret::new(&text))
        }
        Err(err) => Err(io_err(err)),
    }
}

/// Mints credentials for the libp2p node's `/conclave/turn/1.0.0` protocol, under the
/// allowlist and credential lifetime in effect (they change on reload).
#[derive(Debug, Clone)]
pub struct Issuer {
    gate: Arc<Gate>,
    urls: Vec<String>,
}

impl Issuer {
    /// The answer for `peer` at `now_unix`.
    pub fn issue(&self, peer: &PeerId, now_unix: u64) -> TurnResponse {
        let live = self.gate.live();
        if !live.allowlist.allows(peer) {
            return TurnResponse::Refused(TurnRefusal::NotAllowed);
        }
        let Credentials {
            username,
            password,
            expires_unix,
        } = access::mint(self.gate.secret.bytes(), peer, now_unix, live.ttl);
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

/// Limits of TURN over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpLimits {
    max: usize,
    per_ip: usize,
    handshake: Duration,
    idle: Duration,
}

/// The settings a reload may change, swapped whole.
#[derive(Debug)]
struct Live {
    allowlist: Allowlist,
    peers: PeerPolicy,
    ttl: Duration,
    bandwidth: u64,
    max_allocations: usize,
    max_bandwidth: u64,
    allocation_rate: u32,
    tcp: TcpLimits,
}

impl Live {
    fn new(config: &TurnConfig, allowlist: Allowlist, own: HashSet<IpAddr>) -> Self {
        Self {
            allowlist,
            peers: PeerPolicy::new(config.allow_peers.clone(), config.allow_loopback_peers, own),
            ttl: config.credential_ttl,
            bandwidth: config.bandwidth_per_identity,
            max_allocations: config.max_allocations,
            max_bandwidth: config.max_bandwidth,
            allocation_rate: config.max_allocations_per_second,
            tcp: TcpLimits {
                max: config.max_tcp_connections,
                per_ip: config.max_tcp_connections_per_ip,
                handshake: config.tcp_handshake_timeout,
                idle: config.tcp_idle_timeout,
            },
        }
    }
}

/// A live allocation, by the port of its relayed address.
#[derive(Debug, Clone)]
struct Relayed {
    peer: PeerId,
    username: String,
}

/// Policy and bookkeeping shared by the listeners, the allocator and the relayed sockets.
#[derive(Debug)]
struct Gate {
    secret: Secret,
    live: RwLock<Arc<Live>>,
    counts: Mutex<AllocationCounts>,
    buckets: Mutex<HashMap<PeerId, TokenBucket>>,
    /// Relay-wide bandwidth (absent: unlimited).
    total_bucket: Mutex<Option<TokenBucket>>,
    /// New allocations per second, relay-wide (one token per allocation).
    allocation_bucket: Mutex<TokenBucket>,
    /// Live allocations by relayed port.
    relayed: Mutex<HashMap<u16, Relayed>>,
    metrics: Arc<Metrics>,
}

/// The identity and username of the Allocate the gate last let through on one listener.
/// The allocator reads it (and may read it twice: an EVEN-PORT request probes for a port
/// first).
type Pending = Arc<Mutex<Option<Relayed>>>;

/// A request whose credentials checked out.
struct Authenticated {
    peer: PeerId,
    username: String,
    integrity: MessageIntegrity,
}

fn total_bucket(rate: u64, now: Instant) -> Option<TokenBucket> {
    // A burst of a quarter second at the full rate, at least one large datagram.
    (rate > 0).then(|| TokenBucket::new(rate, (rate / 4).max(4096), now))
}

fn allocation_bucket(rate: u32, now: Instant) -> TokenBucket {
    TokenBucket::new(u64::from(rate), u64::from(rate), now)
}

impl Gate {
    fn new(secret: Secret, live: Live, per_identity: usize, metrics: Arc<Metrics>) -> Self {
        let now = Instant::now();
        Self {
            secret,
            counts: Mutex::new(AllocationCounts::new(per_identity)),
            buckets: Mutex::new(HashMap::new()),
            total_bucket: Mutex::new(total_bucket(live.max_bandwidth, now)),
            allocation_bucket: Mutex::new(allocation_bucket(live.allocation_rate, now)),
            live: RwLock::new(Arc::new(live)),
            relayed: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The settings in effect.
    fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(live) => Arc::clone(&live),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts new settings in effect; returns the live allocations (relayed port, identity,
    /// username) whose identity the new allowlist no longer admits.
    fn replace(&self, live: Live, per_identity: usize) -> Vec<(u16, Relayed)> {
        let now = Instant::now();
        let old = self.live();
        if let Ok(mut counts) = self.counts.lock() {
            counts.set_max(per_identity);
        }
        if old.bandwidth != live.bandwidth
            && let Ok(mut buckets) = self.buckets.lock()
        {
            buckets.clear();
        }
        if old.max_bandwidth != live.max_bandwidth
            && let Ok(mut bucket) = self.total_bucket.lock()
        {
            *bucket = total_bucket(live.max_bandwidth, now);
        }
        if old.allocation_rate != live.allocation_rate
            && let Ok(mut bucket) = self.allocation_bucket.lock()
        {
            *bucket = allocation_bucket(live.allocation_rate, now);
        }
        let revoked = self
            .relayed
            .lock()
            .map(|relayed| {
                relayed
                    .iter()
                    .filter(|(_, r)| !live.allowlist.allows(&r.peer))
                    .map(|(port, r)| (*port, r.clone()))
                    .collect()
            })
            .unwrap_or_default();
        match self.live.write() {
            Ok(mut slot) => *slot = Arc::new(live),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(live),
        }
        revoked
    }

    /// Classifies one datagram or frame from a TURN client.
    fn inspect(&self, buf: &[u8], transport: Label, pending: &Pending) -> Verdict {
        // ChannelData: channel numbers 0x4000..=0x7FFF.
        if buf.first().is_some_and(|b| b >> 6 == 0b01) {
            return Verdict::Pass;
        }
        let Some(mut msg) = decode_stun(buf) else {
            self.metrics.malformed.get_or_create(&transport).inc();
            return Verdict::Drop;
        };
        if msg.typ.class != CLASS_REQUEST
            || !msg.contains(ATTR_MESSAGE_INTEGRITY)
            || !msg.contains(ATTR_USERNAME)
        {
            return Verdict::Pass;
        }
        let auth = match self.check_credentials(&mut msg) {
            Ok(auth) => auth,
            Err(err) => {
                debug!(reason = err.label(), "TURN credentials refused");
                self.metrics.refuse_credential(err.label());
                return Verdict::Pass;
            }
        };
        let method = msg.typ.method;
        if method == METHOD_ALLOCATE {
            let check = self.counts.lock().map(|c| c.check(&auth.peer));
            if let Ok(Err(exceeded)) = check {
                warn!(peer = %auth.peer, held = exceeded.held, "TURN allocation quota reached");
                self.metrics.refused_allocations.inc();
                return error_answer(
                    &msg,
                    CODE_ALLOC_QUOTA_REACHED,
                    "Allocation Quota Reached",
                    None,
                )
                .map_or(Verdict::Drop, Verdict::Reply);
            }
            if let Ok(mut slot) = pending.lock() {
                *slot = Some(Relayed {
                    peer: auth.peer,
                    username: auth.username,
                });
            }
        } else if method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND {
            let label = if method == METHOD_CHANNEL_BIND {
                "channel_bind"
            } else {
                "create_permission"
            };
            // An undecodable address goes to the engine, which answers 400.
            let Some(peers) = xor_peer_addresses(&msg) else {
                return Verdict::Pass;
            };
            for peer in peers {
                if let Err(why) = self.check_peer(peer) {
                    // Debug, not warn: ICE clients routinely try their peers' private host
                    // candidates through TURN; the counter shows the volume.
                    debug!(
                        identity = %auth.peer,
                        %peer,
                        reason = why.label(),
                        "TURN {label} refused: peer address denied by policy"
                    );
                    self.metrics
                        .denied_peer_requests
                        .get_or_create(&[("method", label)])
                        .inc();
                    return error_answer(&msg, CODE_FORBIDDEN, "Forbidden", Some(&auth.integrity))
                        .map_or(Verdict::Drop, Verdict::Reply);
                }
            }
        }
        Verdict::Pass
    }

    fn check_credentials(&self, msg: &mut Message) -> Result<Authenticated, CredentialError> {
        let username = TextAttribute::get_from_as(msg, ATTR_USERNAME)
            .map_err(|_| CredentialError::Malformed)?
            .text;
        let realm = TextAttribute::get_from_as(msg, ATTR_REALM)
            .map_err(|_| CredentialError::Malformed)?
            .text;
        let peer = access::check_username(&username, unix_now(), &self.live().allowlist)?;
        let password = access::password_for(self.secret.bytes(), &username);
        let integrity =
            MessageIntegrity::new_long_term_integrity(username.clone(), realm, password);
        integrity
            .check(msg)
            .map_err(|_| CredentialError::WrongPassword)?;
        Ok(Authenticated {
            peer,
            username,
            integrity,
        })
    }

    /// Whether the policy lets relayed traffic reach `peer`.
    fn check_peer(&self, peer: SocketAddr) -> Result<(), Denied> {
        self.live().peers.check(peer, |port| {
            self.relayed
                .lock()
                .is_ok_and(|relayed| relayed.contains_key(&port))
        })
    }

    /// Whether `bytes` more may flow for `peer` now: its quota, then the relay-wide cap.
    /// `Err(true)` when the relay-wide cap refused.
    fn allow_bandwidth(&self, peer: &PeerId, bytes: usize) -> Result<(), bool> {
        let now = Instant::now();
        let rate = self.live().bandwidth;
        if rate > 0
            && let Ok(mut buckets) = self.buckets.lock()
            && !buckets
                .entry(*peer)
                .or_insert_with(|| TokenBucket::new(rate, (rate / 4).max(4096), now))
                .allow(now, bytes)
        {
            return Err(false);
        }
        if let Ok(mut total) = self.total_bucket.lock()
            && let Some(total) = total.as_mut()
            && !total.allow(now, bytes)
        {
            return Err(true);
        }
        Ok(())
    }

    /// Counts a datagram dropped by a bandwidth limit.
    fn count_dropped(&self, direction: Label, relay_wide: bool) {
        let family = if relay_wide {
            &self.metrics.capped_packets
        } else {
            &self.metrics.dropped_packets
        };
        family.get_or_create(&direction).inc();
    }

    fn release(&self, peer: &PeerId, port: Option<u16>) {
        if let Some(port) = port
            && let Ok(mut relayed) = self.relayed.lock()
        {
            relayed.remove(&port);
        }
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

/// Every XOR-PEER-ADDRESS of `msg` (RFC 8656 §14.3), `None` if one does not decode.
fn xor_peer_addresses(msg: &Message) -> Option<Vec<SocketAddr>> {
    let cookie = stun::message::MAGIC_COOKIE.to_be_bytes();
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&cookie);
    key[4..].copy_from_slice(&msg.transaction_id.0);
    msg.attributes
        .0
        .iter()
        .filter(|attr| attr.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|attr| {
            let value = &attr.value;
            let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ 0x2112;
            let ip = match (value.get(1)?, value.len()) {
                (0x01, 8) => {
                    let mut octets = [0u8; 4];
                    for (i, octet) in octets.iter_mut().enumerate() {
                        *octet = value[4 + i] ^ key[i];
                    }
                    IpAddr::from(octets)
                }
                (0x02, 20) => {
                    let mut octets = [0u8; 16];
                    for (i, octet) in octets.iter_mut().enumerate() {
                        *octet = value[4 + i] ^ key[i];
                    }
                    IpAddr::from(octets)
                }
                _ => return None,
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// An error response `code` to `request`, with MESSAGE-INTEGRITY when `integrity` is given
/// (the request was authenticated).
fn error_answer(
    request: &Message,
    code: ErrorCode,
    reason: &str,
    integrity: Option<&MessageIntegrity>,
) -> Option<Vec<u8>> {
    let method: Method = request.typ.method;
    let mut answer = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(Message {
            transaction_id: request.transaction_id,
            ..Message::default()
        }),
        Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
    ];
    if let Some(integrity) = integrity {
        setters.push(Box::new(integrity.clone()));
    }
    answer.build(&setters).ok()?;
    Some(answer.raw)
}

/// Open TURN-over-TCP connections: the engine's answer queues by client address, and how
/// many come from each IP.
#[derive(Debug, Default)]
struct TcpTable {
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    per_ip: HashMap<IpAddr, usize>,
}

type Writers = Arc<Mutex<TcpTable>>;

async fn accept_tcp(
    listener: TcpListener,
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
    gate: Arc<Gate>,
    cancel: CancellationToken,
) {
    let metrics = Arc::clone(&gate.metrics);
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
        let limits = gate.live().tcp;
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        {
            let Ok(mut table) = writers.lock() else { break };
            let from_ip = table.per_ip.get(&from.ip()).copied().unwrap_or(0);
            let refused = if table.writers.len() >= limits.max {
                Some("total")
            } else if from_ip >= limits.per_ip {
                Some("per_ip")
            } else {
                None
            };
            if let Some(reason) = refused {
                // Dropping the stream closes it. Logged at debug: a flood would flood the log.
                debug!(%from, reason, "TURN-over-TCP connection refused by a limit");
                metrics
                    .tcp_limited
                    .get_or_create(&[("reason", reason)])
                    .inc();
                continue;
            }
            table.writers.insert(from, tx);
            *table.per_ip.entry(from.ip()).or_default() += 1;
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
                () = serve_tcp(stream, from, frames, rx, limits, &metrics) => {}
            }
            if let Ok(mut table) = writers.lock() {
                table.writers.remove(&from);
                if let Some(count) = table.per_ip.get_mut(&from.ip()) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        table.per_ip.remove(&from.ip());
                    }
                }
            }
            metrics.tcp_connections.dec();
            debug!(%from, "TURN-over-TCP connection closed");
        });
    }
}

/// Starts accepting TURN-over-TCP connections on `listener` (until `cancel`); returns the
/// engine listener they are multiplexed into, which reports `local` as its address.
fn serve_tcp_listener(
    listener: TcpListener,
    local: SocketAddr,
    gate: &Arc<Gate>,
    pending: &Pending,
    cancel: &CancellationToken,
) -> TcpMux {
    let (frames_tx, frames_rx) = mpsc::channel(TCP_QUEUE);
    let writers = Writers::default();
    tokio::spawn(accept_tcp(
        listener,
        frames_tx,
        Arc::clone(&writers),
        Arc::clone(gate),
        cancel.clone(),
    ));
    TcpMux {
        local,
        frames: tokio::sync::Mutex::new(frames_rx),
        writers,
        gate: Arc::clone(gate),
        pending: Arc::clone(pending),
    }
}

/// Reads one frame (STUN message or ChannelData) from a TURN-over-TCP stream; `None` when
/// the stream ends or breaks, or its framing is wrong (counted).
async fn read_frame(
    read: &mut tokio::net::tcp::OwnedReadHalf,
    from: SocketAddr,
    metrics: &Metrics,
) -> Option<Vec<u8>> {
    match read_tcp_frame(read).await {
        Ok(frame) => Some(frame),
        Err(ReadFrameError::Closed(_)) => None,
        Err(err) => {
            debug!(%from, error = %err, "malformed TURN-over-TCP stream; closing");
            metrics.malformed.get_or_create(&TCP).inc();
            None
        }
    }
}

async fn serve_tcp(
    stream: TcpStream,
    from: SocketAddr,
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut answers: mpsc::Receiver<Vec<u8>>,
    limits: TcpLimits,
    metrics: &Metrics,
) {
    let (mut read, mut write) = stream.into_split();
    let reader = async {
        let mut first = true;
        loop {
            let (limit, reason) = if first {
                (limits.handshake, "handshake_timeout")
            } else {
                (limits.idle, "idle_timeout")
            };
            let frame =
                match tokio::time::timeout(limit, read_frame(&mut read, from, metrics)).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return,
                    Err(_) => {
                        debug!(%from, reason, "TURN-over-TCP connection timed out");
                        metrics
                            .tcp_limited
                            .get_or_create(&[("reason", reason)])
                            .inc();
                        return;
                    }
                };
            // A connection opens with a STUN message that decodes (an Allocate, a Binding…).
            if first && decode_stun(&frame).is_none() {
                debug!(%from, "TURN-over-TCP stream does not open with STUN; closing");
                metrics.malformed.get_or_create(&TCP).inc();
                return;
            }
            first = false;
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

/// A relayed UDP socket: policed, counted, rate-limited, and holding one quota slot.
struct Metered {
    socket: UdpSocket,
    peer: PeerId,
    port: u16,
    gate: Arc<Gate>,
    released: AtomicBool,
}

impl Metered {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.gate.release(&self.peer, Some(self.port));
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

    /// Whether a datagram to or from `peer` may pass: the policy, the allowlist, the
    /// bandwidth limits. Counts what it refuses.
    fn admit(&self, peer: SocketAddr, bytes: usize, direction: Label) -> bool {
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
struct Allocator {
    bind_ip: IpAddr,
    public_ip: IpAddr,
    ports: PortRange,
    gate: Arc<Gate>,
    pending: Pending,
}

impl Allocator {
    /// The relay-wide caps: allocations held at once, new allocations per second.
    fn check_caps(&self) -> Result<(), &'static str> {
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
    gate: Arc<Gate>,
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        access::check_username(username, unix_now(), &self.gate.live().allowlist)
            .map_err(|e| turn::Error::Other(e.to_string()))?;
        let password = access::password_for(self.gate.secret.bytes(), username);
        Ok(generate_auth_key(username, realm, &password))
    }
}

/// A running STUN/TURN server.
pub struct TurnServer {
    server: Arc<Server>,
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
    public_ip: IpAddr,
    gate: Arc<Gate>,
    issuer: Issuer,
    cancel: CancellationToken,
}

/// The relay's own addresses: `public_ip`, the listen address and every interface's.
fn own_addresses(listen: IpAddr, public_ip: IpAddr) -> HashSet<IpAddr> {
    let mut own: HashSet<IpAddr> = [listen, public_ip]
        .into_iter()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => own.extend(interfaces.iter().map(if_addrs::Interface::ip)),
        Err(err) => warn!(
            error = %err,
            "cannot list this host's addresses; only the TURN listen and public addresses \
             are treated as the relay's own"
        ),
    }
    own
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
/// The address announced to clients: `turn.public_ip`, else the listening address, else
/// this host's outbound address (127.0.0.1, with a warning, when there is none).
fn announced_ip(config: &TurnConfig, udp: SocketAddr) -> IpAddr {
    match config.public_ip {
        Some(ip) => ip,
        None if !udp.ip().is_unspecified() => udp.ip(),
        None => outbound_ip().unwrap_or_else(|| {
            warn!("cannot find this host's address; announcing 127.0.0.1 (set turn.public_ip)");
            IpAddr::from([127, 0, 0, 1])
        }),
    }
}

/// The STUN and TURN URLs clients are given (TURN over TCP too, when it listens).
fn server_urls(config: &TurnConfig, public_ip: IpAddr, port: u16, tcp: bool) -> Vec<String> {
    let host = match &config.public_host {
        Some(host) => host.clone(),
        None if public_ip.is_ipv6() => format!("[{public_ip}]"),
        None => public_ip.to_string(),
    };
    let mut urls = vec![
        format!("stun:{host}:{port}"),
        format!("turn:{host}:{port}?transport=udp"),
    ];
    if tcp {
        urls.push(format!("turn:{host}:{port}?transport=tcp"));
    }
    urls
}

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
        let public_ip = announced_ip(config, udp);
        let live = Live::new(config, allowlist, own_addresses(udp.ip(), public_ip));
        let gate = Arc::new(Gate::new(
            secret,
            live,
            config.max_allocations_per_identity,
            Arc::clone(&metrics),
        ));
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
            conn: Arc::new(Listener(GatedUdp {
                socket: udp_socket,
                gate: Arc::clone(&gate),
                pending: Arc::clone(&udp_pending),
            })),
            relay_addr_generator: Box::new(allocator(&udp_pending)),
        }];
        let mut tcp = None;
        if let Some(tcp_listener) = tcp_listener {
            let tcp_pending = Pending::default();
            let mux = serve_tcp_listener(tcp_listener, udp, &gate, &tcp_pending, &cancel);
            conn_configs.push(ConnConfig {
                conn: Arc::new(Listener(mux)),
                relay_addr_generator: Box::new(allocator(&tcp_pending)),
            });
            tcp = Some(udp);
        }
        let server = Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: Arc::new(RestAuth {
                gate: Arc::clone(&gate),
            }),
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await
        .map_err(|e| TurnError::Engine(e.to_string()))?;
        let urls = server_urls(config, public_ip, udp.port(), tcp.is_some());
        info!(
            %udp,
            tcp = ?tcp,
            %public_ip,
            own = ?gate.live().peers.own_addresses(),
            allow_peers = ?config.allow_peers,
            "TURN server running; relaying to internal and own addresses is refused"
        );
        Ok(Self {
            server: Arc::new(server),
            udp,
            tcp,
            public_ip,
            issuer: Issuer {
                gate: Arc::clone(&gate),
                urls,
            },
            gate,
            cancel,
        })
    }

    /// Puts a new allowlist and the reloadable settings of `config` (peer policy, quotas,
    /// caps, TCP limits for new connections, credential lifetime) in effect without
    /// stopping anything, then deletes at once the allocations of identities `allowlist`
    /// no longer admits. Returns how many allocations it ended.
    pub async fn reload(&self, config: &TurnConfig, allowlist: Allowlist) -> usize {
        let live = Live::new(
            config,
            allowlist,
            own_addresses(self.udp.ip(), self.public_ip),
        );
        let revoked = self.gate.replace(live, config.max_allocations_per_identity);
        let usernames: HashSet<String> = revoked.iter().map(|(_, r)| r.username.clone()).collect();
        for (port, relayed) in &revoked {
            info!(peer = %relayed.peer, port, "identity removed from the allowlist; ending its TURN allocation");
        }
        for username in usernames {
            if let Err(err) = self.server.delete_allocations_by_username(username).await {
                warn!(error = %err, "cannot end a revoked TURN allocation");
            }
        }
        self.gate
            .metrics
            .revoked_allocations
            .inc_by(revoked.len() as u64);
        revoked.len()
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
        let live = Live::new(&TurnConfig::default(), Allowlist::Open, HashSet::new());
        let gate = Gate::new(Secret::new("fuzz"), live, 1, Arc::new(Metrics::new()));
        gate.inspect(bytes, UDP, &Pending::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize) -> Gate {
        let own = HashSet::from(["198.51.100.1".parse().unwrap()]);
        let live = Live::new(&TurnConfig::default(), Allowlist::Open, own);
        Gate::new(Secret::new("s3cret"), live, max, Arc::new(Metrics::new()))
    }

    /// A `method` request naming `peers`, signed with `username` / `password`.
    fn request_to(method: Method, peers: &[SocketAddr], username: &str, password: &str) -> Vec<u8> {
        let mut msg = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(MessageType::new(method, CLASS_REQUEST)),
            Box::new(stun::agent::TransactionId::new()),
        ];
        for peer in peers {
            setters.push(Box::new(turn::proto::peeraddr::PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            }));
        }
        setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, username.into())));
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, "conclave".into())));
        setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
            username.into(),
            "conclave".into(),
            password.into(),
        )));
        msg.build(&setters).unwrap();
        msg.raw
    }

    fn error_code(answer: &[u8]) -> (u16, bool) {
        let mut msg = Message::new();
        msg.raw = answer.to_vec();
        msg.decode().unwrap();
        let mut code = ErrorCodeAttribute::default();
        stun::message::Getter::get_from(&mut code, &msg).unwrap();
        (code.code.0, msg.contains(ATTR_MESSAGE_INTEGRITY))
    }

    #[test]
    fn xor_peer_addresses_decode_every_attribute() {
        let peers: Vec<SocketAddr> = ["203.0.113.5:4000", "[2001:db8::7]:5", "[::ffff:10.0.0.1]:9"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let raw = request_to(METHOD_CREATE_PERMISSION, &peers, "u", "p");
        let msg = decode_stun(&raw).unwrap();
        assert_eq!(xor_peer_addresses(&msg).unwrap(), peers);
    }

    #[test]
    fn permissions_to_denied_peers_are_answered_403_and_counted() {
        let gate = gate(4);
        let pending = Pending::default();
        let creds = access::mint(
            b"s3cret",
            &PeerId::random(),
            unix_now(),
            Duration::from_secs(60),
        );
        let (user, pass) = (creds.username.as_str(), creds.password.as_str());
        let public: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        for method in [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND] {
            assert_eq!(
                gate.inspect(&request_to(method, &[public], user, pass), UDP, &pending),
                Verdict::Pass
            );
            for denied in [
                "10.99.0.1:9",
                "192.168.77.1:9",
                "169.254.169.254:80",
                "127.0.0.1:9464",
                "198.51.100.1:3478",
                "[::ffff:10.99.0.1]:9",
                "[::ffff:198.51.100.1]:4001",
                "[fd00::1]:9",
            ] {
                let denied: SocketAddr = denied.parse().unwrap();
                // Also when an allowed address comes first in the same request.
                let raw = request_to(method, &[public, denied], user, pass);
                let Verdict::Reply(answer) = gate.inspect(&raw, UDP, &pending) else {
                    panic!("{denied} let through");
                };
                assert_eq!(error_code(&answer), (403, true), "{denied}");
            }
        }
        // Wrong credentials: the engine refuses them (no 403 that would reveal the policy).
        let raw = request_to(
            METHOD_CREATE_PERMISSION,
            &["10.0.0.1:1".parse().unwrap()],
            user,
            "x",
        );
        assert_eq!(gate.inspect(&raw, UDP, &pending), Verdict::Pass);
        let text = gate.metrics.encode();
        assert!(
            text.contains("turn_denied_peer_requests_total{method=\"create_permission\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("turn_denied_peer_requests_total{method=\"channel_bind\"} 8"),
            "{text}"
        );
        // Another allocation's relayed address on this relay is a permitted peer.
        gate.relayed.lock().unwrap().insert(
            50000,
            Relayed {
                peer: PeerId::random(),
                username: "x".into(),
            },
        );
        let hairpin = request_to(
            METHOD_CREATE_PERMISSION,
            &["198.51.100.1:50000".parse().unwrap()],
            user,
            pass,
        );
        assert_eq!(gate.inspect(&hairpin, UDP, &pending), Verdict::Pass);
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
        assert!(pending.lock().unwrap().is_none());
        let expired = access::mint(b"s3cret", &peer, 1000, Duration::from_secs(60));
        gate.inspect(
            &allocate(&expired.username, &expired.password),
            UDP,
            &pending,
        );
        assert!(pending.lock().unwrap().is_none());
        // Good credentials: the identity is remembered for the allocator.
        let good = allocate(&creds.username, &creds.password);
        assert_eq!(gate.inspect(&good, UDP, &pending), Verdict::Pass);
        assert_eq!(pending.lock().unwrap().as_ref().map(|r| r.peer), Some(peer));
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
        let config = TurnConfig {
            credential_ttl: Duration::from_secs(600),
            ..TurnConfig::default()
        };
        let allowlist = Allowlist::parse(&[allowed.to_string()]).unwrap();
        let live = Live::new(&config, allowlist, HashSet::new());
        let gate = Arc::new(Gate::new(
            Secret::new("x"),
            live,
            1,
            Arc::new(Metrics::new()),
        ));
        let issuer = Issuer {
            gate: Arc::clone(&gate),
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
        // A reload that removes the identity stops the issuing at once.
        let live = Live::new(&config, Allowlist::Only(HashSet::new()), HashSet::new());
        assert!(gate.replace(live, 1).is_empty());
        assert_eq!(
            issuer.issue(&allowed, 100),
            TurnResponse::Refused(TurnRefusal::NotAllowed)
        );
    }

    /// A `turn` crate client of `server` with fresh credentials for a new identity.
    async fn client_of(server: &TurnServer, dir: &Path) -> turn::client::Client {
        let secret = std::fs::read_to_string(dir.join(SECRET_FILE)).unwrap();
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
        client
    }

    /// The relay-wide caps fire and are counted: allocations held at once, new allocations
    /// per second (both answered 508), and the total bandwidth; a reload moves them.
    #[tokio::test]
    async fn relay_wide_caps_refuse_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = TurnConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_loopback_peers: true,
            max_allocations: 1,
            bandwidth_per_identity: 0,
            max_bandwidth: 20_000,
            ..TurnConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let server = TurnServer::start(&config, dir.path(), Allowlist::Open, Arc::clone(&metrics))
            .await
            .unwrap();
        let first = client_of(&server, dir.path()).await;
        let relayed = first.allocate().await.unwrap();
        let second = client_of(&server, dir.path()).await;
        let err = second.allocate().await.err().expect("over max_allocations");
        assert!(err.to_string().contains("508"), "{err}");
        // Relay-wide bandwidth: 200 kB at once against 20 kB/s, for an identity without a
        // quota of its own.
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..200 {
            relayed
                .send_to(&[7u8; 1000], peer.local_addr().unwrap())
                .await
                .unwrap();
        }
        let mut received = 0;
        let mut buf = [0u8; 2048];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await
        {
            received += 1;
        }
        assert!(
            (1..50).contains(&received),
            "{received} datagrams got through"
        );
        // A reload lifts the total and sets one new allocation per second.
        config.max_allocations = 10;
        config.max_allocations_per_second = 1;
        assert_eq!(server.reload(&config, Allowlist::Open).await, 0);
        let third = client_of(&server, dir.path()).await;
        let fourth = client_of(&server, dir.path()).await;
        let results = [
            third.allocate().await.is_ok(),
            fourth.allocate().await.is_ok(),
        ];
        assert_eq!(
            results,
            [true, false],
            "the second within a second is refused"
        );
        let text = metrics.encode();
        assert!(
            text.contains("conclave_relay_turn_capped_allocations_total{reason=\"total\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("conclave_relay_turn_capped_allocations_total{reason=\"rate\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("conclave_relay_turn_capped_packets_total{direction=\"to_peer\"}"),
            "{text}"
        );
        for client in [first, second, third, fourth] {
            client.close().await.unwrap();
        }
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
        let client = client_of(&server, dir.path()).await;
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
