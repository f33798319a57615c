//! The relay's counters, exported in the Prometheus / OpenMetrics text format.
//!
//! One [`Metrics`] is shared (behind an `Arc`) by the TURN server, the libp2p node and the
//! HTTP endpoint of [`crate::health`]. Every counter is an atomic: updating one never
//! blocks the data path. Names (all prefixed `conclave_relay_`):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `turn_allocations` | gauge: allocations open now | |
//! | `turn_allocations_created_total` | counter: allocations created | |
//! | `turn_relayed_bytes_total` | counter: payload bytes relayed | `direction` = `to_peer` / `from_peer` |
//! | `turn_relayed_packets_total` | counter: datagrams relayed | `direction` |
//! | `turn_dropped_packets_total` | counter: datagrams dropped by the bandwidth quota | `direction` |
//! | `turn_denied_peer_packets_total` | counter: datagrams to or from peers the policy refuses, dropped | `direction` |
//! | `turn_denied_peer_requests_total` | counter: CreatePermission / ChannelBind answered 403 (peer policy) | `method` = `create_permission` / `channel_bind` |
//! | `turn_capped_allocations_total` | counter: allocations refused by a relay-wide cap (508) | `reason` = `total` / `rate` |
//! | `turn_capped_packets_total` | counter: datagrams dropped by the relay-wide bandwidth cap | `direction` |
//! | `turn_revoked_allocations_total` | counter: allocations ended because a reload removed their identity | |
//! | `turn_tcp_limited_total` | counter: TURN-over-TCP/TLS connections refused or closed by a limit | `reason` = `total` / `per_ip` / `handshake_timeout` / `idle_timeout`; on the TLS port also `unopened_total` / `unopened_per_ip` (before the first byte) / `libp2p_busy` |
//! | `config_reloads_total` | counter: configuration reloads | `result` = `ok` / `failed` |
//! | `turn_refused_credentials_total` | counter: TURN requests with refused credentials | `reason` = `malformed` / `expired` / `not_allowed` / `wrong_password` |
//! | `turn_refused_allocations_total` | counter: allocations refused by the per-identity quota | |
//! | `turn_malformed_total` | counter: datagrams / TCP frames that are not STUN or ChannelData | `transport` = `udp` / `tcp` / `tls` |
//! | `turn_tcp_connections` | gauge: TURN-over-TCP and TURN-over-TLS connections open now | `transport` = `tcp` / `tls` |
//! | `turn_tls_handshake_failures_total` | counter: TLS handshakes that failed or timed out on the TLS port | |
//! | `shared_port_libp2p_connections_total` | counter: connections to the TLS port handed to the libp2p node | |
//! | `credentials_issued_total` | counter: credentials handed out over libp2p | |
//! | `credentials_refused_total` | counter: credential requests refused (allowlist) | |
//! | `circuits` | gauge: libp2p relay circuits open now | |
//! | `circuits_accepted_total` | counter: circuits accepted | |
//! | `reservations` | gauge: libp2p relay reservations held now | |
//! | `reservation_requests_total` | counter: reservation requests received (new, renewals, refused) | |
//! | `reservations_refused_total` | counter: reservation requests refused (limits, rate limits) | |

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set with one label.
pub type Label = [(&'static str, &'static str); 1];

/// Direction of relayed data: from the TURN client to its peer.
pub const TO_PEER: Label = [("direction", "to_peer")];
/// Direction of relayed data: from a peer to the TURN client.
pub const FROM_PEER: Label = [("direction", "from_peer")];

/// Every counter of the relay.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Allocations open now.
    pub allocations: Gauge,
    /// Allocations created.
    pub allocations_total: Counter,
    /// Payload bytes relayed, by direction.
    pub relayed_bytes: Family<Label, Counter>,
    /// Datagrams relayed, by direction.
    pub relayed_packets: Family<Label, Counter>,
    /// Datagrams dropped by the bandwidth quota, by direction.
    pub dropped_packets: Family<Label, Counter>,
    /// Datagrams to or from peers the policy refuses, by direction.
    pub denied_peer_packets: Family<Label, Counter>,
    /// CreatePermission / ChannelBind requests refused (403) by the peer policy, by method.
    pub denied_peer_requests: Family<Label, Counter>,
    /// Allocations refused by a relay-wide cap, by reason.
    pub capped_allocations: Family<Label, Counter>,
    /// Datagrams dropped by the relay-wide bandwidth cap, by direction.
    pub capped_packets: Family<Label, Counter>,
    /// Allocations ended because a reload removed their identity from the allowlist.
    pub revoked_allocations: Counter,
    /// TURN-over-TCP connections refused or closed by a limit, by reason.
    pub tcp_limited: Family<Label, Counter>,
    /// Configuration reloads, by result.
    pub config_reloads: Family<Label, Counter>,
    /// Requests whose credentials were refused, by reason.
    pub refused_credentials: Family<Label, Counter>,
    /// Allocations refused by the per-identity quota.
    pub refused_allocations: Counter,
    /// Input that is neither STUN nor ChannelData, by transport.
    pub malformed: Family<Label, Counter>,
    /// TURN-over-TCP and -TLS connections open now, by transport.
    pub tcp_connections: Family<Label, Gauge>,
    /// TLS handshakes on the TLS port that failed or timed out.
    pub tls_handshake_failures: Counter,
    /// Connections to the TLS port handed to the libp2p node.
    pub shared_port_handovers: Counter,
    /// Credentials issued over libp2p.
    pub credentials_issued: Counter,
    /// Credential requests refused over libp2p.
    pub credentials_refused: Counter,
    /// Circuits open now.
    pub circuits: Gauge,
    /// Circuits accepted.
    pub circuits_total: Counter,
    /// Reservations held now.
    pub reservations: Gauge,
    /// Reservation requests received, accepted or not.
    pub reservation_requests: Counter,
    /// Reservation requests refused.
    pub reservations_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh counters, registered under `conclave_relay_`.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("conclave_relay");
        let metrics = Self {
            registry: Registry::default(),
            allocations: Gauge::default(),
            allocations_total: Counter::default(),
            relayed_bytes: Family::default(),
            relayed_packets: Family::default(),
            dropped_packets: Family::default(),
            denied_peer_packets: Family::default(),
            denied_peer_requests: Family::default(),
            capped_allocations: Family::default(),
            capped_packets: Family::default(),
            revoked_allocations: Counter::default(),
            tcp_limited: Family::default(),
            config_reloads: Family::default(),
            refused_credentials: Family::default(),
            refused_allocations: Counter::default(),
            malformed: Family::default(),
            tcp_connections: Family::default(),
            tls_handshake_failures: Counter::default(),
            shared_port_handovers: Counter::default(),
            credentials_issued: Counter::default(),
            credentials_refused: Counter::default(),
            circuits: Gauge::default(),
            circuits_total: Counter::default(),
            reservations: Gauge::default(),
            reservation_requests: Counter::default(),
            reservations_refused: Counter::default(),
        };
        metrics.register_turn_traffic(registry);
        metrics.register_turn_access(registry);
        metrics.register_libp2p(registry);
        Self {
            registry: root,
            ..metrics
        }
    }

    /// Registers the TURN allocation and traffic series.
    fn register_turn_traffic(&self, registry: &mut Registry) {
        registry.register(
            "turn_allocations",
            "TURN allocations open now",
            self.allocations.clone(),
        );
        // Counters get the `_total` suffix from the encoder.
        registry.register(
            "turn_allocations_created",
            "TURN allocations created",
            self.allocations_total.clone(),
        );
        registry.register(
            "turn_relayed_bytes",
            "Payload bytes relayed through TURN allocations",
            self.relayed_bytes.clone(),
        );
        registry.register(
            "turn_relayed_packets",
            "Datagrams relayed through TURN allocations",
            self.relayed_packets.clone(),
        );
        registry.register(
            "turn_dropped_packets",
            "Datagrams dropped by the per-identity bandwidth quota",
            self.dropped_packets.clone(),
        );
        registry.register(
            "turn_denied_peer_packets",
            "Datagrams to or from peers the address policy refuses, dropped",
            self.denied_peer_packets.clone(),
        );
        registry.register(
            "turn_denied_peer_requests",
            "CreatePermission / ChannelBind requests answered 403 by the peer address policy",
            self.denied_peer_requests.clone(),
        );
        registry.register(
            "turn_capped_allocations",
            "TURN allocations refused by a relay-wide cap (508)",
            self.capped_allocations.clone(),
        );
        registry.register(
            "turn_capped_packets",
            "Datagrams dropped by the relay-wide bandwidth cap",
            self.capped_packets.clone(),
        );
        registry.register(
            "turn_revoked_allocations",
            "TURN allocations ended because a reload removed their identity",
            self.revoked_allocations.clone(),
        );
    }

    /// Registers the series of TURN access control, TCP limits and reloads.
    fn register_turn_access(&self, registry: &mut Registry) {
        registry.register(
            "turn_tcp_limited",
            "TURN-over-TCP connections refused or closed by a limit",
            self.tcp_limited.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads",
            self.config_reloads.clone(),
        );
        registry.register(
            "turn_refused_credentials",
            "TURN requests whose credentials were refused",
            self.refused_credentials.clone(),
        );
        registry.register(
            "turn_refused_allocations",
            "TURN allocations refused by the per-identity quota",
            self.refused_allocations.clone(),
        );
        registry.register(
            "turn_malformed",
            "Datagrams or TCP frames that are neither STUN nor ChannelData",
            self.malformed.clone(),
        );
        registry.register(
            "turn_tcp_connections",
            "TURN-over-TCP and TURN-over-TLS connections open now",
            self.tcp_connections.clone(),
        );
        registry.register(
            "turn_tls_handshake_failures",
            "TLS handshakes on the TLS port that failed or timed out",
            self.tls_handshake_failures.clone(),
        );
        registry.register(
            "shared_port_libp2p_connections",
            "Connections to the TLS port handed to the libp2p node",
            self.shared_port_handovers.clone(),
        );
    }

    /// Registers the libp2p series: TURN credentials, relay circuits and reservations.
    fn register_libp2p(&self, registry: &mut Registry) {
        registry.register(
            "credentials_issued",
            "TURN credentials issued over libp2p",
            self.credentials_issued.clone(),
        );
        registry.register(
            "credentials_refused",
            "TURN credential requests refused over libp2p (allowlist)",
            self.credentials_refused.clone(),
        );
        registry.register(
            "circuits",
            "libp2p relay circuits open now",
            self.circuits.clone(),
        );
        registry.register(
            "circuits_accepted",
            "libp2p relay circuits accepted",
            self.circuits_total.clone(),
        );
        registry.register(
            "reservations",
            "libp2p relay reservations held now",
            self.reservations.clone(),
        );
        registry.register(
            "reservation_requests",
            "libp2p relay reservation requests received (new, renewals and refused)",
            self.reservation_requests.clone(),
        );
        registry.register(
            "reservations_refused",
            "libp2p relay reservation requests refused (reservation limits, rate limits)",
            self.reservations_refused.clone(),
        );
    }

    /// The OpenMetrics text exposition of every counter.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts a refused credential.
    pub fn refuse_credential(&self, reason: &'static str) {
        self.refused_credentials
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.allocations.inc();
        metrics.relayed_bytes.get_or_create(&TO_PEER).inc_by(1200);
        metrics.refuse_credential("expired");
        metrics.circuits_total.inc();
        metrics.reservation_requests.inc_by(3);
        metrics.reservations_refused.inc_by(2);
        let text = metrics.encode();
        assert!(text.contains("conclave_relay_turn_allocations 1"), "{text}");
        assert!(
            text.contains("conclave_relay_turn_relayed_bytes_total{direction=\"to_peer\"} 1200"),
            "{text}"
        );
        assert!(
            text.contains("conclave_relay_turn_refused_credentials_total{reason=\"expired\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("conclave_relay_circuits_accepted_total 1"),
            "{text}"
        );
        assert!(
            text.contains("conclave_relay_reservation_requests_total 3"),
            "{text}"
        );
        assert!(
            text.contains("conclave_relay_reservations_refused_total 2"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
