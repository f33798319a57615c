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
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;

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
}
