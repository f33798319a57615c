//! The relay's TOML configuration. Every field has a documented default, so an empty file
//! (or no file) is a valid configuration.
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
//! max_tcp_connections = 1024
//! allow_loopback_peers = false   # relay to 127.0.0.0/8, ::1, 0.0.0.0 (testing only)
//!
//! [access]                       # who gets TURN credentials over libp2p
//! open = true                    # anyone; false: only the identities in `allow`
//! allow = []                     # peer ids (12D3KooW…) or 64-hex ed25519 public keys
//!
//! [metrics]                      # Prometheus /metrics and /healthz over HTTP
//! enabled = true
//! listen = "127.0.0.1:9464"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;

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
    /// Relay to loopback and unspecified addresses of the relay host (default false: a
    /// TURN client must not reach services bound to the relay's loopback).
    #[serde(default)]
    pub allow_loopback_peers: bool,
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
        if !self.access.open && self.access.allow.is_empty() {
            return Err(ConfigError::Invalid(
                "access.open = false needs at least one identity in access.allow".into(),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

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
            "[access]\nopen = false",
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
