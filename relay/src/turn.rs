//! The relay's STUN/TURN server (RFC 5766/8656) on UDP, TCP and TLS, with REST-API
//! credentials, a peer address policy, per-identity quotas, relay-wide caps and counters.
//!
//! The protocol engine is the `turn` crate's [`Server`]; this module gives it sockets and
//! policy:
//!
//! ```text
//! client ──UDP──▶ GatedUdp ─┐                         ┌─▶ Metered (relayed UDP socket) ──▶ peer
//! client ──TCP──▶ TcpMux  ──┼─▶ turn::Server ─alloc─▶ Allocator
//! client ──TLS──▶ TcpMux  ──┘   (RestAuth)            └─ quotas and caps
//!          (not TLS: handed to the libp2p node)
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
//!   - a CreatePermission or ChannelBind naming any peer address the
//!     [`PeerPolicy`](crate::policy::PeerPolicy) refuses is answered `403 Forbidden` here
//!     (with MESSAGE-INTEGRITY) and counted (`turn_denied_peer_requests_total{method}`), so
//!     the engine never installs the permission. The engine (turn 0.17) has no permission
//!     hook: this is where the policy sits for signalling.
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
//! - **TLS** (`[turn.tls]`, `turn/tls.rs`): the same framing inside TLS, with a certificate
//!   from files or made self-signed at first start; the issuer hands out its pin with the
//!   credentials. The port may be shared with libp2p: see `turn/tcp.rs`.
//!
//! Credentials: see [`crate::access`]; the [`crate::issuer::Issuer`] mints them for the
//! libp2p node.
//!
//! Files: `turn.rs` (the server: start, reload, secrets, credentials), `turn/gate.rs` (the
//! gate and the shared bookkeeping), `turn/listener.rs` (the engine's UDP and TCP
//! listeners), `turn/tcp.rs` (TURN-over-TCP and -TLS connections, the shared port),
//! `turn/tls.rs` (the certificate), `turn/relayed.rs` (the allocator
//! and the relayed sockets), `turn/codec.rs` (TCP framing and STUN decoding, public: the
//! system tests' TURN client uses it).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conclave_core::net::handover::{self, HandedOver};
use conclave_core::proto::turn::CertificatePin;
use rand::Rng;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use turn::auth::{AuthHandler, generate_auth_key};
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};

use crate::access::{self, Allowlist};
use crate::config::TurnConfig;
use crate::issuer::IssuedServer;
use crate::metrics::{Label, Metrics};

mod codec;
mod gate;
mod listener;
mod relayed;
mod tcp;
mod tls;

pub use codec::{FrameError, ReadFrameError, decode_stun, read_tcp_frame, tcp_frame_len};
use gate::{Gate, Live, Pending};
use listener::{GatedUdp, Listener, TcpMux};
use relayed::Allocator;
use tcp::{Opening, Writers, serve_tcp_listener};
pub use tls::{CERT_FILE, KEY_FILE};

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
const TLS: Label = [("transport", "tls")];

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
    /// A TLS certificate or key file could not be read or written.
    #[error("cannot use the TLS file {path}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate or key is not usable.
    #[error("the TLS file {path} is not usable: {reason}")]
    TlsInvalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
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

    /// The secret's bytes (the HMAC key).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Reads an existing secret (an external TURN server's): unlike
/// [`load_or_create_secret`], a missing file is an error.
pub fn load_secret(path: &Path) -> Result<Secret, TurnError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(TurnError::EmptySecret {
            path: path.to_owned(),
        }),
        Ok(text) => Ok(Secret::new(&text)),
        Err(source) => Err(TurnError::SecretFile {
            path: path.to_owned(),
            source,
        }),
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
    tls: Option<SocketAddr>,
    /// The libp2p connections arriving on the TLS port, until the node takes them.
    libp2p: std::sync::Mutex<Option<mpsc::Receiver<HandedOver>>>,
    public_ip: IpAddr,
    gate: Arc<Gate>,
    /// What the issuer needs of this server: its secret, URLs and certificate pin.
    issued: IssuedServer,
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
            .field("tls", &self.tls)
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

/// The STUN and TURN URLs clients are given (TURN over TCP and TLS too, when they listen).
fn server_urls(
    config: &TurnConfig,
    public_ip: IpAddr,
    port: u16,
    (tcp, tls): (bool, Option<u16>),
) -> Vec<String> {
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
    if let Some(tls_port) = tls {
        urls.push(format!("turns:{host}:{tls_port}?transport=tcp"));
    }
    urls
}

fn outbound_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    // TEST-NET-2: connect() only consults the routing table.
    socket.connect(("198.51.100.1", 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The bound sockets: UDP, TCP on the same port when TCP is on, and the TLS listener with
/// how its connections open.
struct Bound {
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    tls: Option<(TcpListener, Opening)>,
}

/// The engine's listeners, and the TCP and TLS addresses of those that listen.
type EngineListeners = (Vec<ConnConfig>, Option<SocketAddr>, Option<SocketAddr>);

/// The TURN engine's listeners: the UDP socket, and for TCP and for TLS their connections
/// multiplexed into one packet stream each. Each hands allocations to an [`Allocator`]
/// behind the gate.
fn engine_listeners(
    config: &TurnConfig,
    bound: Bound,
    public_ip: IpAddr,
    gate: &Arc<Gate>,
    cancel: &CancellationToken,
) -> Result<EngineListeners, TurnError> {
    let listen_err = |addr| move |source| TurnError::Listen { addr, source };
    let udp = bound.udp.local_addr().map_err(listen_err(config.listen))?;
    let allocator = |pending: &Pending| Allocator {
        bind_ip: udp.ip(),
        public_ip,
        ports: config.relay_ports,
        gate: Arc::clone(gate),
        pending: Arc::clone(pending),
    };
    let udp_pending = Pending::default();
    let mut conn_configs = vec![ConnConfig {
        conn: Arc::new(Listener(GatedUdp {
            socket: bound.udp,
            gate: Arc::clone(gate),
            pending: Arc::clone(&udp_pending),
        })),
        relay_addr_generator: Box::new(allocator(&udp_pending)),
    }];
    let mut stream_listener = |listener: TcpListener, local, opening, label| {
        let pending = Pending::default();
        let mux = serve_tcp_listener((listener, local), (opening, label), gate, &pending, cancel);
        conn_configs.push(ConnConfig {
            conn: Arc::new(Listener(mux)),
            relay_addr_generator: Box::new(allocator(&pending)),
        });
    };
    let tcp = bound.tcp.map(|listener| {
        stream_listener(listener, udp, Opening::Plain, TCP);
        udp
    });
    let tls = match bound.tls {
        Some((listener, opening)) => {
            let local = listener.local_addr().map_err(listen_err(udp))?;
            stream_listener(listener, local, opening, TLS);
            Some(local)
        }
        None => None,
    };
    Ok((conn_configs, tcp, tls))
}

/// The TLS listener of `config`, if any, with its certificate's pin and, when libp2p shares
/// its port, the receiving end of the connections handed to the node.
type TlsListener = (
    (TcpListener, Opening),
    CertificatePin,
    Option<mpsc::Receiver<HandedOver>>,
);

async fn bind_tls(config: &TurnConfig, data_dir: &Path) -> Result<Option<TlsListener>, TurnError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let mut names = vec!["conclave-relay".to_owned()];
    names.extend(config.public_host.clone());
    let identity = tls::load_or_create(tls, data_dir, names)?;
    let listener = TcpListener::bind(tls.listen)
        .await
        .map_err(|source| TurnError::Listen {
            addr: tls.listen,
            source,
        })?;
    let (libp2p, incoming) = if tls.libp2p {
        let (tx, rx) = handover::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let opening = Opening::Tls {
        acceptor: identity.acceptor,
        libp2p,
    };
    Ok(Some(((listener, opening), identity.pin, incoming)))
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
        let (tls_listener, tls_pin, libp2p) = match bind_tls(config, data_dir).await? {
            Some((listener, pin, libp2p)) => (Some(listener), Some(pin), libp2p),
            None => (None, None, None),
        };
        let public_ip = announced_ip(config, udp);
        let live = Live::new(config, allowlist, own_addresses(udp.ip(), public_ip));
        let gate = Arc::new(Gate::new(
            secret,
            live,
            config.max_allocations_per_identity,
            Arc::clone(&metrics),
        ));
        let cancel = CancellationToken::new();
        let bound = Bound {
            udp: udp_socket,
            tcp: tcp_listener,
            tls: tls_listener,
        };
        let (conn_configs, tcp, tls) = engine_listeners(config, bound, public_ip, &gate, &cancel)?;
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
        let urls = server_urls(
            config,
            public_ip,
            udp.port(),
            (tcp.is_some(), tls.map(|a| a.port())),
        );
        info!(
            %udp,
            tcp = ?tcp,
            tls = ?tls,
            libp2p_on_tls_port = libp2p.is_some(),
            %public_ip,
            own = ?gate.live().peers.own_addresses(),
            allow_peers = ?config.allow_peers,
            "TURN server running; relaying to internal and own addresses is refused"
        );
        Ok(Self {
            server: Arc::new(server),
            udp,
            tcp,
            tls,
            libp2p: std::sync::Mutex::new(libp2p),
            public_ip,
            issued: IssuedServer {
                secret: gate.secret.clone(),
                urls,
                tls_pin,
            },
            gate,
            cancel,
        })
    }

    /// Puts a new allowlist and the reloadable settings of `config` (peer policy, quotas,
    /// caps, TCP limits for new connections) in effect without
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

    /// The TLS listen address, if TURN over TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// The libp2p connections arriving on the TLS port (once; `None` after, or when the
    /// port is not shared with libp2p).
    pub fn take_libp2p_connections(&self) -> Option<mpsc::Receiver<HandedOver>> {
        self.libp2p.lock().ok()?.take()
    }

    /// This server as the credential issuer sees it: secret, URLs, certificate pin.
    pub fn issued(&self) -> IssuedServer {
        self.issued.clone()
    }
}

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests;
