//! The gate in front of the TURN engine: every datagram and TCP frame is classified
//! (STUN, ChannelData, or dropped and counted), credentials are checked, the per-identity
//! quota answers `486` and the peer policy `403` before the engine sees a request; and the
//! bookkeeping the listeners, the allocator and the relayed sockets share ([`Gate`]: the
//! reloadable settings, allocation counts, bandwidth buckets, live allocations).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, ErrorCode, ErrorCodeAttribute};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, Message, MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use tracing::{debug, warn};

use crate::access::{self, AllocationCounts, Allowlist, CredentialError, TokenBucket};
use crate::config::TurnConfig;
use crate::metrics::{Label, Metrics};
use crate::policy::{Denied, PeerPolicy};

use super::{Secret, Verdict, decode_stun, unix_now};

/// Limits of TURN over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcpLimits {
    pub(super) max: usize,
    pub(super) per_ip: usize,
    pub(super) handshake: Duration,
    pub(super) idle: Duration,
}

/// The settings a reload may change, swapped whole.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) allowlist: Allowlist,
    pub(super) peers: PeerPolicy,
    pub(super) bandwidth: u64,
    pub(super) max_allocations: usize,
    pub(super) max_bandwidth: u64,
    pub(super) allocation_rate: u32,
    pub(super) tcp: TcpLimits,
}

impl Live {
    pub(super) fn new(config: &TurnConfig, allowlist: Allowlist, own: HashSet<IpAddr>) -> Self {
        Self {
            allowlist,
            peers: PeerPolicy::new(config.allow_peers.clone(), config.allow_loopback_peers, own),
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
pub(super) struct Relayed {
    pub(super) peer: PeerId,
    pub(super) username: String,
}

/// Policy and bookkeeping shared by the listeners, the allocator and the relayed sockets.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) secret: Secret,
    pub(super) live: RwLock<Arc<Live>>,
    pub(super) counts: Mutex<AllocationCounts>,
    pub(super) buckets: Mutex<HashMap<PeerId, TokenBucket>>,
    /// Relay-wide bandwidth (absent: unlimited).
    pub(super) total_bucket: Mutex<Option<TokenBucket>>,
    /// New allocations per second, relay-wide (one token per allocation).
    pub(super) allocation_bucket: Mutex<TokenBucket>,
    /// Live allocations by relayed port.
    pub(super) relayed: Mutex<HashMap<u16, Relayed>>,
    pub(super) metrics: Arc<Metrics>,
}

/// The identity and username of the Allocate the gate last let through on one listener.
/// The allocator reads it (and may read it twice: an EVEN-PORT request probes for a port
/// first).
pub(super) type Pending = Arc<Mutex<Option<Relayed>>>;

/// A request whose credentials checked out.
pub(super) struct Authenticated {
    pub(super) peer: PeerId,
    pub(super) username: String,
    pub(super) integrity: MessageIntegrity,
}

pub(super) fn total_bucket(rate: u64, now: Instant) -> Option<TokenBucket> {
    // A burst of a quarter second at the full rate, at least one large datagram.
    (rate > 0).then(|| TokenBucket::new(rate, (rate / 4).max(4096), now))
}

pub(super) fn allocation_bucket(rate: u32, now: Instant) -> TokenBucket {
    TokenBucket::new(u64::from(rate), u64::from(rate), now)
}

impl Gate {
    pub(super) fn new(
        secret: Secret,
        live: Live,
        per_identity: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
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
    pub(super) fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(live) => Arc::clone(&live),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts new settings in effect; returns the live allocations (relayed port, identity,
    /// username) whose identity the new allowlist no longer admits.
    pub(super) fn replace(&self, live: Live, per_identity: usize) -> Vec<(u16, Relayed)> {
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
    pub(super) fn inspect(&self, buf: &[u8], transport: Label, pending: &Pending) -> Verdict {
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

    pub(super) fn check_credentials(
        &self,
        msg: &mut Message,
    ) -> Result<Authenticated, CredentialError> {
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
    pub(super) fn check_peer(&self, peer: SocketAddr) -> Result<(), Denied> {
        self.live().peers.check(peer, |port| {
            self.relayed
                .lock()
                .is_ok_and(|relayed| relayed.contains_key(&port))
        })
    }

    /// Whether `bytes` more may flow for `peer` now: its quota, then the relay-wide cap.
    /// `Err(true)` when the relay-wide cap refused.
    pub(super) fn allow_bandwidth(&self, peer: &PeerId, bytes: usize) -> Result<(), bool> {
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
    pub(super) fn count_dropped(&self, direction: Label, relay_wide: bool) {
        let family = if relay_wide {
            &self.metrics.capped_packets
        } else {
            &self.metrics.dropped_packets
        };
        family.get_or_create(&direction).inc();
    }

    pub(super) fn release(&self, peer: &PeerId, port: Option<u16>) {
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
pub(super) fn xor_peer_addresses(msg: &Message) -> Option<Vec<SocketAddr>> {
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
pub(super) fn error_answer(
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
