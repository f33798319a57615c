//! The relay's TOML configuration. Every field has a documented default, so an empty file
//! (or no file) is a valid configuration. [`Config::reloadable_differences`] says which
//! changes a running relay takes on reload ([`crate::node::Relay::reload`]) and which need a
//! restart.
//!
//! ```toml
//! # Addresses to listen on (default: TCP and QUIC on port 4001, every interface).
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! # Where the relay keeps its identity key (default: the platform data directory).
//! # data_dir = "/var/lib/conclave-relay"
//!
//! [circuit]
//! max_reservations = 1024        # clients holding a reservation at once
//! max_reservations_per_peer = 4
//! reservation_duration = "1h"
//! max_circuits = 256             # relayed connections at once
//! max_circuits_per_peer = 16
//! max_circuit_duration = "10m"
//! max_circuit_bytes = 0          # 0 = unlimited (media uses TURN, not circuits)
//!
//! [turn]                         # STUN/TURN server (RFC 5766/8656) for media
//! enabled = true
//! listen = "0.0.0.0:3478"        # UDP, and TCP on the same port
//! tcp = true                     # also serve TURN over TCP (UDP-blocking networks)
//! # public_ip = "198.51.100.7"   # address put in relayed addresses and ICE URLs
//!                                # (default: the listen IP, or this host's outbound IP)
//! # public_host = "turn.example.org"  # host name in ICE URLs (default: public_ip)
//! relay_ports = "49152-65535"    # UDP ports of relayed addresses
//! realm = "conclave"
//! # secret_file = "/etc/conclave-relay/turn.secret"  # default: <data_dir>/turn.secret,
//!                                # created (random, mode 0600) on first start
//! credential_ttl = "12h"         # lifetime of issued credentials
//! max_allocations_per_identity = 8
//! bandwidth_per_identity = 1250000   # bytes/s per identity, both directions; 0 = unlimited
//! max_allocations = 4096         # allocations held at once, everyone together
//! max_bandwidth = 125000000      # bytes/s relayed, everyone together; 0 = unlimited
//! max_allocations_per_second = 200   # new allocations per second, everyone together
//! max_tcp_connections = 1024
//! max_tcp_connections_per_ip = 256
//! tcp_handshake_timeout = "5s"   # first STUN message of a TCP connection within this
//! tcp_idle_timeout = "5m"        # a silent TCP connection is closed after this
//! allow_peers = []               # CIDR ranges opened despite the peer policy
//!                                # (crate::policy: internal ranges are refused by default)
//! allow_loopback_peers = false   # relay to 127.0.0.0/8 and ::1 (testing only)
//!
//! [[turn.external]]              # a TURN server the site runs (coturn, use-auth-secret):
//! urls = ["turn:turn1.example.org:3478?transport=udp"]   # handed out as they are
//! secret_file = "/etc/conclave-relay/coturn.secret"      # its static-auth-secret
//! # tls_pin = "AB:CD:…"          # SHA-256 of the certificate its turns: URLs present
//!
//! [turn.tls]                     # TURN over TLS (turns:), for networks that pass only 443
//! listen = "0.0.0.0:443"         # absent [turn.tls]: no TLS listener
//! # cert_file = "/etc/conclave-relay/tls.crt"  # PEM chain and key; default: a self-signed
//! # key_file = "/etc/conclave-relay/tls.key"   # pair made at first start in <data_dir>
//! libp2p = true                  # libp2p on the same port too (a home that reaches only
//!                                # TCP 443 fetches its credentials there)
//!
//! [access]                       # who gets TURN credentials over libp2p
//! open = true                    # anyone; false: only the identities in `allow`
//!                                # (`conclave-relay allow add|remove|list` edits this)
//! allow = []                     # peer ids (12D3KooW…) or 64-hex ed25519 public keys
//!
//! [metrics]                      # Prometheus /metrics and /healthz over HTTP
//! enabled = true
//! listen = "127.0.0.1:9464"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use libp2p::Multiaddr;
use serde::Deserialize;

use conclave_core::proto::turn::{CertificatePin, MAX_FIELD_LEN, MAX_SERVERS, MAX_URLS};

use crate::access::Allowlist;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid configuration in {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line and column included).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole relay configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen addresses.
    #[serde(default = "defaults::listen")]
    pub listen: Vec<Multiaddr>,
    /// Data directory (identity key). `None`: the platform data directory.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Circuit relay v2 limits.
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// STUN/TURN server.
    #[serde(default)]
    pub turn: TurnConfig,
    /// Who may obtain TURN credentials.
    #[serde(default)]
    pub access: AccessConfig,
    /// Metrics and health endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The STUN/TURN server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// Run it (default true).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// UDP (and TCP) listen address (default `0.0.0.0:3478`). Port 0 picks one.
    #[serde(default = "defaults::turn_listen")]
    pub listen: SocketAddr,
    /// Also serve TURN over TCP on the same port (default true).
    #[serde(default = "defaults::yes")]
    pub tcp: bool,
    /// Address announced in relayed addresses and ICE URLs (default: the listen IP, or
    /// this host's outbound IP when listening on every interface).
    #[serde(default)]
    pub public_ip: Option<IpAddr>,
    /// Host name for ICE URLs (default: `public_ip`).
    #[serde(default)]
    pub public_host: Option<String>,
    /// UDP ports for relayed addresses, `"LOW-HIGH"` (default `49152-65535`).
    #[serde(default = "defaults::relay_ports")]
    pub relay_ports: PortRange,
    /// TURN realm (default `conclave`).
    #[serde(default = "defaults::realm")]
    pub realm: String,
    /// File holding the shared secret (default `<data_dir>/turn.secret`, created with a
    /// random secret on first start).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Lifetime of issued credentials (default 12 h).
    #[serde(default = "defaults::credential_ttl", with = "humantime_serde")]
    pub credential_ttl: Duration,
    /// Allocations one identity may hold at once (default 8).
    #[serde(default = "defaults::max_allocations_per_identity")]
    pub max_allocations_per_identity: usize,
    /// Relayed bytes per second per identity, both directions together, 0 for unlimited
    /// (default 1 250 000 = 10 Mbit/s).
    #[serde(default = "defaults::bandwidth_per_identity")]
    pub bandwidth_per_identity: u64,
    /// TURN-over-TCP connections at once (default 1024).
    #[serde(default = "defaults::max_tcp_connections")]
    pub max_tcp_connections: usize,
    /// Relay to loopback addresses (`127.0.0.0/8`, `::1`) of the relay host (default false:
    /// a TURN client must not reach services bound to the relay's loopback). Tests only.
    #[serde(default)]
    pub allow_loopback_peers: bool,
    /// Peer ranges opened despite the default policy ([`crate::policy`]), as CIDR strings
    /// (`"10.20.0.0/16"`) or single addresses (default none: internal ranges are refused).
    #[serde(default, deserialize_with = "deserialize_ranges")]
    pub allow_peers: Vec<IpNet>,
    /// Allocations held at once by everyone together (default 4096).
    #[serde(default = "defaults::max_allocations")]
    pub max_allocations: usize,
    /// Relayed bytes per second by everyone together, both directions, 0 for unlimited
    /// (default 125 000 000 = 1 Gbit/s).
    #[serde(default = "defaults::max_bandwidth")]
    pub max_bandwidth: u64,
    /// New allocations per second by everyone together (default 200, bursts of as many: a
    /// member joining a meeting of 24 may take 48 at once, one per peer and transport).
    #[serde(default = "defaults::max_allocations_per_second")]
    pub max_allocations_per_second: u32,
    /// TURN-over-TCP connections at once from one IP address (default 256).
    #[serde(default = "defaults::max_tcp_connections_per_ip")]
    pub max_tcp_connections_per_ip: usize,
    /// How long a new TURN-over-TCP connection may take to send its first STUN message
    /// (default 5 s).
    #[serde(default = "defaults::tcp_handshake_timeout", with = "humantime_serde")]
    pub tcp_handshake_timeout: Duration,
    /// How long a TURN-over-TCP connection may stay silent before it is closed (default
    /// 5 min: a client with an allocation refreshes its permissions every few minutes).
    #[serde(default = "defaults::tcp_idle_timeout", with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// TURN over TLS (default none). Its connections have the TCP limits, counted apart
    /// from plain TCP's.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// TURN servers the site already runs, for which the relay issues credentials besides
    /// (or, with `enabled = false`, instead of) its own (default none).
    #[serde(default)]
    pub external: Vec<ExternalTurn>,
}

/// A TURN server the relay issues REST-API credentials for (coturn with `use-auth-secret`
/// and the same secret as `static-auth-secret`). The allowlist and `credential_ttl` apply.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalTurn {
    /// Its URLs (`stun:`, `turn:`, `turns:`), handed to clients as they are (at most 8).
    pub urls: Vec<String>,
    /// The file holding the shared secret (must exist).
    pub secret_file: PathBuf,
    /// The SHA-256 of the certificate its `turns:` URLs present (clients pin it; without
    /// it they skip `turns:` URLs).
    #[serde(default)]
    pub tls_pin: Option<CertificatePin>,
}

/// TURN over TLS (`turns:`), and libp2p on the same port.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// TCP listen address (`0.0.0.0:443` in production). Port 0 picks one.
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first (default: `<data_dir>/tls.crt`, made self-signed
    /// with its key at first start). Clients pin the leaf, so any certificate works: a
    /// site CA's, a public CA's or the self-signed one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate (default: `<data_dir>/tls.key`); required with
    /// `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Also accept libp2p connections on this port (default true): connections that do not
    /// open with a TLS record go to the libp2p node, so a network that passes only this
    /// port still reaches the relay's DHT, circuits and credentials.
    #[serde(default = "defaults::yes")]
    pub libp2p: bool,
}

fn deserialize_ranges<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|entry| crate::policy::parse_range(entry).map_err(serde::de::Error::custom))
        .collect()
}

/// A range of UDP ports, written `"LOW-HIGH"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub low: u16,
    /// Highest port (inclusive).
    pub high: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("port range {text:?} is not LOW-HIGH with 1 <= LOW <= HIGH");
        let (low, high) = text.split_once('-').ok_or_else(bad)?;
        let low: u16 = low.trim().parse().map_err(|_| bad())?;
        let high: u16 = high.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(Self { low, high })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Who may obtain TURN credentials over libp2p.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Anyone (default true). `false`: only the identities in `allow`.
    #[serde(default = "defaults::yes")]
    pub open: bool,
    /// Peer ids or hex ed25519 public keys (used when `open = false`).
    #[serde(default)]
    pub allow: Vec<String>,
}

/// The HTTP endpoint for `/metrics` and `/healthz`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve it (default true).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Listen address (default `127.0.0.1:9464`, local only).
    #[serde(default = "defaults::metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: defaults::turn_listen(),
            tcp: true,
            public_ip: None,
            public_host: None,
            relay_ports: defaults::relay_ports(),
            realm: defaults::realm(),
            secret_file: None,
            credential_ttl: defaults::credential_ttl(),
            max_allocations_per_identity: defaults::max_allocations_per_identity(),
            bandwidth_per_identity: defaults::bandwidth_per_identity(),
            max_tcp_connections: defaults::max_tcp_connections(),
            allow_loopback_peers: false,
            allow_peers: Vec::new(),
            max_allocations: defaults::max_allocations(),
            max_bandwidth: defaults::max_bandwidth(),
            max_allocations_per_second: defaults::max_allocations_per_second(),
            max_tcp_connections_per_ip: defaults::max_tcp_connections_per_ip(),
            tcp_handshake_timeout: defaults::tcp_handshake_timeout(),
            tcp_idle_timeout: defaults::tcp_idle_timeout(),
            tls: None,
            external: Vec::new(),
        }
    }
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            open: true,
            allow: Vec::new(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: defaults::metrics_listen(),
        }
    }
}

impl AccessConfig {
    /// The allowlist these settings describe.
    pub fn allowlist(&self) -> Result<Allowlist, ConfigError> {
        if self.open {
            return Ok(Allowlist::Open);
        }
        Allowlist::parse(&self.allow).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

/// Limits of the circuit relay v2 server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Reservations held at once.
    #[serde(default = "defaults::max_reservations")]
    pub max_reservations: usize,
    /// Reservations per peer.
    #[serde(default = "defaults::max_reservations_per_peer")]
    pub max_reservations_per_peer: usize,
    /// Lifetime of a reservation.
    #[serde(default = "defaults::reservation_duration", with = "humantime_serde")]
    pub reservation_duration: Duration,
    /// Circuits at once.
    #[serde(default = "defaults::max_circuits")]
    pub max_circuits: usize,
    /// Circuits per peer.
    #[serde(default = "defaults::max_circuits_per_peer")]
    pub max_circuits_per_peer: usize,
    /// Longest circuit.
    #[serde(default = "defaults::max_circuit_duration", with = "humantime_serde")]
    pub max_circuit_duration: Duration,
    /// Most bytes per circuit, 0 for unlimited.
    #[serde(default)]
    pub max_circuit_bytes: u64,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            max_reservations: defaults::max_reservations(),
            max_reservations_per_peer: defaults::max_reservations_per_peer(),
            reservation_duration: defaults::reservation_duration(),
            max_circuits: defaults::max_circuits(),
            max_circuits_per_peer: defaults::max_circuits_per_peer(),
            max_circuit_duration: defaults::max_circuit_duration(),
            max_circuit_bytes: 0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            data_dir: None,
            circuit: CircuitConfig::default(),
            turn: TurnConfig::default(),
            access: AccessConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

mod defaults {
    use super::*;

    pub(super) fn listen() -> Vec<Multiaddr> {
        vec![
            "/ip4/0.0.0.0/tcp/4001"
                .parse()
                .expect("valid multiaddr literal"),
            "/ip4/0.0.0.0/udp/4001/quic-v1"
                .parse()
                .expect("valid multiaddr literal"),
        ]
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn turn_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 3478))
    }
    pub(super) fn relay_ports() -> PortRange {
        PortRange {
            low: 49152,
            high: 65535,
        }
    }
    pub(super) fn realm() -> String {
        "conclave".into()
    }
    pub(super) fn credential_ttl() -> Duration {
        Duration::from_secs(12 * 3600)
    }
    pub(super) fn max_allocations_per_identity() -> usize {
        8
    }
    pub(super) fn bandwidth_per_identity() -> u64 {
        1_250_000
    }
    pub(super) fn max_tcp_connections() -> usize {
        1024
    }
    pub(super) fn max_allocations() -> usize {
        4096
    }
    pub(super) fn max_bandwidth() -> u64 {
        125_000_000
    }
    pub(super) fn max_allocations_per_second() -> u32 {
        200
    }
    pub(super) fn max_tcp_connections_per_ip() -> usize {
        256
    }
    pub(super) fn tcp_handshake_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn tcp_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn metrics_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
    pub(super) fn max_reservations() -> usize {
        1024
    }
    pub(super) fn max_reservations_per_peer() -> usize {
        4
    }
    pub(super) fn reservation_duration() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn max_circuits() -> usize {
        256
    }
    pub(super) fn max_circuits_per_peer() -> usize {
        16
    }
    pub(super) fn max_circuit_duration() -> Duration {
        Duration::from_secs(600)
    }
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid(
                "listen must name at least one address".into(),
            ));
        }
        if self.circuit.max_reservations == 0 || self.circuit.max_circuits == 0 {
            return Err(ConfigError::Invalid(
                "max_reservations and max_circuits must be positive".into(),
            ));
        }
        let turn = &self.turn;
        if turn.max_allocations_per_identity == 0 || turn.max_tcp_connections == 0 {
            return Err(ConfigError::Invalid(
                "turn.max_allocations_per_identity and turn.max_tcp_connections must be positive"
                    .into(),
            ));
        }
        if turn.max_allocations == 0
            || turn.max_allocations_per_second == 0
            || turn.max_tcp_connections_per_ip == 0
        {
            return Err(ConfigError::Invalid(
                "turn.max_allocations, turn.max_allocations_per_second and \
                 turn.max_tcp_connections_per_ip must be positive"
                    .into(),
            ));
        }
        if turn.tcp_handshake_timeout < Duration::from_secs(1)
            || turn.tcp_idle_timeout < turn.tcp_handshake_timeout
        {
            return Err(ConfigError::Invalid(
                "turn.tcp_handshake_timeout must be at least 1s and turn.tcp_idle_timeout at \
                 least as long"
                    .into(),
            ));
        }
        if turn.credential_ttl < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "turn.credential_ttl must be at least one minute".into(),
            ));
        }
        if turn.realm.is_empty() || turn.realm.len() > 127 {
            return Err(ConfigError::Invalid(
                "turn.realm must have 1 to 127 bytes".into(),
            ));
        }
        validate_external(&turn.external)?;
        if let Some(tls) = &turn.tls {
            if !turn.enabled {
                return Err(ConfigError::Invalid(
                    "turn.tls needs turn.enabled = true (the TLS port serves the relay's own \
                     TURN)"
                        .into(),
                ));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(ConfigError::Invalid(
                    "turn.tls.cert_file and turn.tls.key_file go together".into(),
                ));
            }
            if tls.listen == turn.listen && tls.listen.port() != 0 && turn.tcp {
                return Err(ConfigError::Invalid(
                    "turn.tls.listen must differ from turn.listen while turn.tcp is on".into(),
                ));
            }
        }
        if self.access.open && !self.access.allow.is_empty() {
            return Err(ConfigError::Invalid(
                "access.allow is only used with access.open = false".into(),
            ));
        }
        self.access.allowlist()?;
        Ok(())
    }
}

/// Checks the external TURN servers: URLs that clients take (scheme, count, length), and
/// room for the relay's own server beside them in one answer.
fn validate_external(external: &[ExternalTurn]) -> Result<(), ConfigError> {
    if external.len() + 1 > MAX_SERVERS {
        return Err(ConfigError::Invalid(format!(
            "turn.external may name at most {} servers",
            MAX_SERVERS - 1
        )));
    }
    for server in external {
        if server.urls.is_empty() || server.urls.len() > MAX_URLS {
            return Err(ConfigError::Invalid(format!(
                "each turn.external entry needs 1 to {MAX_URLS} urls"
            )));
        }
        for url in &server.urls {
            let scheme_ok = ["stun:", "turn:", "turns:"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !scheme_ok || url.len() > MAX_FIELD_LEN || url.chars().any(char::is_control) {
                return Err(ConfigError::Invalid(format!(
                    "turn.external url {url:?} is not a stun:, turn: or turns: URL of at most \
                     {MAX_FIELD_LEN} bytes"
                )));
            }
            if url.starts_with("turns:") && server.tls_pin.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "turn.external url {url:?} needs the server's tls_pin (clients pin it)"
                )));
            }
        }
    }
    Ok(())
}

impl Config {
    /// The keys that differ between `self` (running) and `new` but only take effect after a
    /// restart: listeners, addresses, ports, files, circuit limits, metrics.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.turn, &new.turn);
        [
            ("listen", self.listen != new.listen),
            ("data_dir", self.data_dir != new.data_dir),
            ("circuit", self.circuit != new.circuit),
            ("metrics", self.metrics != new.metrics),
            ("turn.enabled", a.enabled != b.enabled),
            ("turn.listen", a.listen != b.listen),
            ("turn.tcp", a.tcp != b.tcp),
            ("turn.public_ip", a.public_ip != b.public_ip),
            ("turn.public_host", a.public_host != b.public_host),
            ("turn.relay_ports", a.relay_ports != b.relay_ports),
            ("turn.realm", a.realm != b.realm),
            ("turn.secret_file", a.secret_file != b.secret_file),
            ("turn.tls", a.tls != b.tls),
            ("turn.external", a.external != b.external),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// The keys a reload applies that differ between `self` and `new`: `[access]` and the
    /// TURN policy, quotas, caps and TCP limits.
    pub fn reloadable_differences(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.turn, &new.turn);
        [
            ("access", self.access != new.access),
            ("turn.allow_peers", a.allow_peers != b.allow_peers),
            (
                "turn.allow_loopback_peers",
                a.allow_loopback_peers != b.allow_loopback_peers,
            ),
            ("turn.credential_ttl", a.credential_ttl != b.credential_ttl),
            (
                "turn.max_allocations_per_identity",
                a.max_allocations_per_identity != b.max_allocations_per_identity,
            ),
            (
                "turn.bandwidth_per_identity",
                a.bandwidth_per_identity != b.bandwidth_per_identity,
            ),
            (
                "turn.max_allocations",
                a.max_allocations != b.max_allocations,
            ),
            ("turn.max_bandwidth", a.max_bandwidth != b.max_bandwidth),
            (
                "turn.max_allocations_per_second",
                a.max_allocations_per_second != b.max_allocations_per_second,
            ),
            (
                "turn.max_tcp_connections",
                a.max_tcp_connections != b.max_tcp_connections,
            ),
            (
                "turn.max_tcp_connections_per_ip",
                a.max_tcp_connections_per_ip != b.max_tcp_connections_per_ip,
            ),
            (
                "turn.tcp_handshake_timeout",
                a.tcp_handshake_timeout != b.tcp_handshake_timeout,
            ),
            (
                "turn.tcp_idle_timeout",
                a.tcp_idle_timeout != b.tcp_idle_timeout,
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_caps_and_tcp_limits_parse() {
        let text = "[turn]\nallow_peers = [\"10.20.0.0/16\", \"fd00::/8\", \"192.0.2.7\"]\n\
                    max_allocations = 10\nmax_bandwidth = 0\nmax_allocations_per_second = 2\n\
                    max_tcp_connections_per_ip = 3\ntcp_handshake_timeout = \"2s\"\n\
                    tcp_idle_timeout = \"1m\"\n";
        let config = Config::from_toml(text, Path::new("x.toml")).unwrap();
        let ranges: Vec<String> = config
            .turn
            .allow_peers
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ranges, ["10.20.0.0/16", "fd00::/8", "192.0.2.7/32"]);
        assert_eq!(config.turn.max_allocations, 10);
        assert_eq!(config.turn.max_tcp_connections_per_ip, 3);
        assert_eq!(config.turn.tcp_handshake_timeout, Duration::from_secs(2));
        let err = Config::from_toml("[turn]\nallow_peers = [\"intranet\"]", Path::new("r.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("intranet"), "{err}");
        // A closed allowlist may be empty (everyone removed): nobody gets credentials.
        let closed = Config::from_toml("[access]\nopen = false", Path::new("x.toml")).unwrap();
        assert!(
            !closed
                .access
                .allowlist()
                .unwrap()
                .allows(&libp2p::PeerId::random())
        );
        let defaults = Config::default();
        assert_eq!(
            defaults.reloadable_differences(&config),
            [
                "turn.allow_peers",
                "turn.max_allocations",
                "turn.max_bandwidth",
                "turn.max_allocations_per_second",
                "turn.max_tcp_connections_per_ip",
                "turn.tcp_handshake_timeout",
                "turn.tcp_idle_timeout"
            ]
        );
        assert!(defaults.restart_needed(&config).is_empty());
        let mut moved = config.clone();
        moved.turn.listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(config.restart_needed(&moved), ["turn.listen"]);
    }

    #[test]
    fn tls_and_external_servers_parse_and_their_mistakes_are_refused() {
        let pin = "AB:".repeat(31) + "AB";
        let good = format!(
            "[turn]\nlisten = \"127.0.0.1:3478\"\n[turn.tls]\nlisten = \"0.0.0.0:443\"\n\
             [[turn.external]]\nurls = [\"turn:192.0.2.9:3478?transport=udp\", \
             \"turns:192.0.2.9:5349?transport=tcp\"]\nsecret_file = \"/etc/s\"\n\
             tls_pin = \"{pin}\"\n"
        );
        let config = Config::from_toml(&good, Path::new("x.toml")).unwrap();
        let tls = config.turn.tls.as_ref().unwrap();
        assert!(tls.libp2p && tls.cert_file.is_none());
        assert_eq!(config.turn.external.len(), 1);
        assert!(config.turn.external[0].tls_pin.is_some());

        for (bad, says) in [
            (
                good.replace("listen = \"127.0.0.1:3478\"", "enabled = false"),
                "turn.enabled",
            ),
            (
                good.replace(&format!("tls_pin = \"{pin}\"\n"), ""),
                "tls_pin",
            ),
            (
                good.replace("turn:192.0.2.9", "http:192.0.2.9"),
                "stun:, turn: or turns:",
            ),
            (
                good.replace("[turn.tls]\n", "[turn.tls]\ncert_file = \"/c\"\n"),
                "go together",
            ),
            (good.replace(&pin, "AB:CD"), "pin"),
        ] {
            let err = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(
            Config::from_toml("", Path::new("x.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn fields_parse_with_human_durations() {
        let text = "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n[circuit]\nmax_circuits = 3\nmax_circuit_duration = \"90s\"\n";
        let config = Config::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.listen.len(), 1);
        assert_eq!(config.circuit.max_circuits, 3);
        assert_eq!(config.circuit.max_circuit_duration, Duration::from_secs(90));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_the_location() {
        let err = Config::from_toml("lissen = []", Path::new("relay.toml")).unwrap_err();
        assert!(err.to_string().contains("relay.toml"), "{err}");
        assert!(err.to_string().contains("lissen"), "{err}");
        let err = Config::from_toml("listen = []", Path::new("relay.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)));
    }

    #[test]
    fn turn_access_and_metrics_sections_parse() {
        let peer = libp2p::PeerId::random();
        let text = format!(
            "[turn]\nlisten = \"127.0.0.1:0\"\npublic_ip = \"127.0.0.1\"\nrelay_ports = \"40000-40100\"\n\
             credential_ttl = \"10m\"\nbandwidth_per_identity = 0\n\
             [access]\nopen = false\nallow = [\"{peer}\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
        );
        let config = Config::from_toml(&text, Path::new("x.toml")).unwrap();
        assert_eq!(
            config.turn.relay_ports,
            PortRange {
                low: 40000,
                high: 40100
            }
        );
        assert_eq!(config.turn.credential_ttl, Duration::from_secs(600));
        assert!(config.access.allowlist().unwrap().allows(&peer));
        assert!(
            !config
                .access
                .allowlist()
                .unwrap()
                .allows(&libp2p::PeerId::random())
        );
        for bad in [
            "[turn]\nrelay_ports = \"9-3\"",
            "[turn]\nmax_allocations_per_identity = 0",
            "[turn]\nallow_peers = [\"10.0.0.0/33\"]",
            "[turn]\nmax_allocations = 0",
            "[turn]\ntcp_handshake_timeout = \"0s\"",
            "[access]\nallow = [\"x\"]",
            "[access]\nopen = false\nallow = [\"x\"]",
        ] {
            assert!(
                Config::from_toml(bad, Path::new("x.toml")).is_err(),
                "{bad}"
            );
        }
    }
}
