//! Which peer addresses a TURN allocation may reach: pure rules, no I/O.
//!
//! A TURN relay sends UDP wherever its clients ask, from the relay's own host. On a site's
//! DMZ that host can reach internal networks the clients cannot, so by default the relay
//! refuses every peer address that is not a public unicast address ([`PeerPolicy`]):
//!
//! | range | why |
//! |---|---|
//! | `0.0.0.0/8`, `::/128` | unspecified, "this host" |
//! | `127.0.0.0/8`, `::1/128` | loopback: services on the relay host |
//! | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` | RFC 1918 private networks |
//! | `100.64.0.0/10` | carrier-grade NAT (RFC 6598), often internal |
//! | `169.254.0.0/16`, `fe80::/10` | link-local, incl. cloud metadata `169.254.169.254` |
//! | `224.0.0.0/4`, `ff00::/8` | multicast |
//! | `240.0.0.0/4` | reserved, incl. broadcast `255.255.255.255` |
//! | `fc00::/7`, `fec0::/10` | IPv6 unique-local and (deprecated) site-local |
//! | the relay's own addresses | its other services and its own listener |
//!
//! IPv6 addresses that embed an IPv4 address and reach it (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are judged by the IPv4 address
//! inside ([`canonical`]).
//!
//! Exceptions, in this order:
//! 1. a **relayed address of this relay** (one of its own addresses at a port that holds a
//!    live allocation) is always allowed: two clients relayed through the same relay talk
//!    through their two allocations;
//! 2. the relay's **own addresses** are refused even inside `allow_peers` (only loopback
//!    ones are let through by `allow_loopback_peers`, for tests on one host);
//! 3. `allow_peers` (CIDR ranges) opens ranges, e.g. a site's internal network when the
//!    relay serves an on-premise deployment whose members sit in it;
//! 4. `allow_loopback_peers` opens `127.0.0.0/8` and `::1` (tests and benches on one host);
//! 5. everything else in the table is refused; all other addresses are allowed.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why a peer address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// Unspecified or "this network" (`0.0.0.0/8`, `::`).
    #[error("unspecified address")]
    Unspecified,
    /// Loopback (`127.0.0.0/8`, `::1`).
    #[error("loopback address")]
    Loopback,
    /// RFC 1918 private network.
    #[error("private (RFC 1918) address")]
    Private,
    /// Carrier-grade NAT shared space (`100.64.0.0/10`).
    #[error("carrier-grade NAT (100.64.0.0/10) address")]
    SharedCgnat,
    /// Link-local (`169.254.0.0/16`, `fe80::/10`).
    #[error("link-local address")]
    LinkLocal,
    /// Multicast.
    #[error("multicast address")]
    Multicast,
    /// Reserved `240.0.0.0/4`, broadcast included.
    #[error("reserved or broadcast address")]
    Reserved,
    /// IPv6 unique-local or site-local.
    #[error("IPv6 unique-local or site-local address")]
    UniqueLocal,
    /// One of the relay's own addresses.
    #[error("the relay's own address")]
    OwnAddress,
}

impl Denied {
    /// Short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Denied::Unspecified => "unspecified",
            Denied::Loopback => "loopback",
            Denied::Private => "private",
            Denied::SharedCgnat => "cgnat",
            Denied::LinkLocal => "link_local",
            Denied::Multicast => "multicast",
            Denied::Reserved => "reserved",
            Denied::UniqueLocal => "unique_local",
            Denied::OwnAddress => "own_address",
        }
    }
}

/// Why an `allow_peers` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("turn.allow_peers entry {entry:?} is not an IP address or CIDR range (e.g. 10.20.0.0/16)")]
pub struct RangeError {
    /// The offending entry.
    pub entry: String,
}

/// Parses `"10.20.0.0/16"`, `"fd00::/8"` or a single address (`"10.20.0.7"` = `/32`).
pub fn parse_range(entry: &str) -> Result<IpNet, RangeError> {
    let text = entry.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| RangeError {
            entry: entry.to_owned(),
        })
}

/// The IPv4 address an IPv6 address reaches, if it embeds one (IPv4-mapped, IPv4-compatible
/// or NAT64 well-known prefix); the address itself otherwise.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    // `::` and `::1` are IPv6's own unspecified and loopback addresses.
    if v6.is_unspecified() || v6.is_loopback() {
        return ip;
    }
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-compatible (deprecated) ::a.b.c.d, and NAT64 64:ff9b::/96 (RFC 6052).
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(embedded);
    }
    ip
}

/// The built-in verdict on `ip` (already [`canonical`]), before any exception.
pub fn classify(ip: IpAddr) -> Result<(), Denied> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Result<(), Denied> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Err(Denied::Unspecified)
    } else if ip.is_loopback() {
        Err(Denied::Loopback)
    } else if ip.is_private() {
        Err(Denied::Private)
    } else if a == 100 && (64..128).contains(&b) {
        Err(Denied::SharedCgnat)
    } else if ip.is_link_local() {
        Err(Denied::LinkLocal)
    } else if ip.is_multicast() {
        Err(Denied::Multicast)
    } else if a >= 240 {
        Err(Denied::Reserved)
    } else {
        Ok(())
    }
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), Denied> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Err(Denied::Unspecified)
    } else if ip.is_loopback() {
        Err(Denied::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Err(Denied::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Err(Denied::UniqueLocal)
    } else if ip.is_multicast() {
        Err(Denied::Multicast)
    } else {
        Ok(())
    }
}

/// The peer address policy of one relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    allow_loopback: bool,
    own: HashSet<IpAddr>,
}

impl PeerPolicy {
    /// The default policy opened by `allow` ranges (and loopback with `allow_loopback`), for
    /// a relay whose own addresses are `own`.
    pub fn new(
        allow: Vec<IpNet>,
        allow_loopback: bool,
        own: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        Self {
            allow,
            allow_loopback,
            own: own.into_iter().map(canonical).collect(),
        }
    }

    /// The relay's own addresses this policy knows.
    pub fn own_addresses(&self) -> &HashSet<IpAddr> {
        &self.own
    }

    /// Whether the relay may exchange datagrams with `peer`. `is_relayed_port(p)` says
    /// whether port `p` of the relay's own addresses holds a live allocation.
    pub fn check(
        &self,
        peer: SocketAddr,
        is_relayed_port: impl Fn(u16) -> bool,
    ) -> Result<(), Denied> {
        let ip = canonical(peer.ip());
        if self.own.contains(&ip) {
            if is_relayed_port(peer.port()) || (self.allow_loopback && ip.is_loopback()) {
                return Ok(());
            }
            return Err(Denied::OwnAddress);
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            Err(Denied::Loopback) if self.allow_loopback => Ok(()),
            verdict => verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        SocketAddr::new(text.parse().unwrap(), 5000)
    }

    fn default_policy() -> PeerPolicy {
        PeerPolicy::new(Vec::new(), false, ["198.51.100.1".parse().unwrap()])
    }

    #[test]
    fn internal_ranges_and_their_mapped_forms_are_refused() {
        let policy = default_policy();
        for (ip, why) in [
            ("0.0.0.0", Denied::Unspecified),
            ("0.1.2.3", Denied::Unspecified),
            ("127.0.0.1", Denied::Loopback),
            ("127.200.1.1", Denied::Loopback),
            ("10.99.0.1", Denied::Private),
            ("172.16.0.1", Denied::Private),
            ("172.31.255.254", Denied::Private),
            ("192.168.77.1", Denied::Private),
            ("100.64.0.1", Denied::SharedCgnat),
            ("100.127.255.255", Denied::SharedCgnat),
            ("169.254.169.254", Denied::LinkLocal),
            ("224.0.0.251", Denied::Multicast),
            ("239.255.255.250", Denied::Multicast),
            ("255.255.255.255", Denied::Reserved),
            ("240.0.0.1", Denied::Reserved),
            ("198.51.100.1", Denied::OwnAddress),
            ("::", Denied::Unspecified),
            ("::1", Denied::Loopback),
            ("fe80::1", Denied::LinkLocal),
            ("fd00::1", Denied::UniqueLocal),
            ("fc12::1", Denied::UniqueLocal),
            ("fec0::1", Denied::UniqueLocal),
            ("ff02::1", Denied::Multicast),
        ] {
            assert_eq!(policy.check(addr(ip), |_| false), Err(why), "{ip}");
            let ip: IpAddr = ip.parse().unwrap();
            if let IpAddr::V4(v4) = ip {
                // Every IPv6 form that reaches the same IPv4 address.
                let s = v4.octets();
                let low = [
                    u16::from_be_bytes([s[0], s[1]]),
                    u16::from_be_bytes([s[2], s[3]]),
                ];
                for prefix in [
                    [0, 0, 0, 0, 0, 0xffff],
                    [0, 0, 0, 0, 0, 0],
                    [0x64, 0xff9b, 0, 0, 0, 0],
                ] {
                    let v6 = Ipv6Addr::new(
                        prefix[0], prefix[1], prefix[2], prefix[3], prefix[4], prefix[5], low[0],
                        low[1],
                    );
                    let result = policy.check(SocketAddr::new(IpAddr::V6(v6), 5000), |_| false);
                    assert!(result.is_err(), "{v6} is let through");
                }
            }
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = default_policy();
        for ip in [
            "198.51.100.2",
            "203.0.113.9",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "::ffff:203.0.113.9",
            "64:ff9b::203.0.113.9",
            "2001:db8::1",
        ] {
            assert_eq!(policy.check(addr(ip), |_| false), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allow_peers_opens_ranges_but_not_the_relay_itself() {
        let policy = PeerPolicy::new(
            vec![
                parse_range("10.99.0.0/24").unwrap(),
                parse_range("fd00::/8").unwrap(),
            ],
            false,
            ["10.99.0.254".parse().unwrap()],
        );
        assert_eq!(policy.check(addr("10.99.0.1"), |_| false), Ok(()));
        assert_eq!(policy.check(addr("::ffff:10.99.0.1"), |_| false), Ok(()));
        assert_eq!(policy.check(addr("fd00::5"), |_| false), Ok(()));
        assert_eq!(
            policy.check(addr("10.99.1.1"), |_| false),
            Err(Denied::Private)
        );
        assert_eq!(
            policy.check(addr("10.99.0.254"), |_| false),
            Err(Denied::OwnAddress)
        );
        // ... unless it is another allocation's relayed address.
        assert_eq!(policy.check(addr("10.99.0.254"), |p| p == 5000), Ok(()));
    }

    #[test]
    fn loopback_only_with_the_test_switch() {
        let own = ["127.0.0.1".parse().unwrap()];
        let closed = PeerPolicy::new(Vec::new(), false, own);
        let open = PeerPolicy::new(Vec::new(), true, own);
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(closed.check(addr(ip), |_| false).is_err(), "{ip}");
            assert_eq!(open.check(addr(ip), |_| false), Ok(()), "{ip}");
        }
        assert_eq!(
            open.check(addr("10.0.0.1"), |_| false),
            Err(Denied::Private)
        );
    }

    #[test]
    fn ranges_parse_with_and_without_a_prefix() {
        assert_eq!(parse_range("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_range(" 10.1.2.3 ").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(parse_range("fd00::/8").unwrap().to_string(), "fd00::/8");
        for bad in ["", "10.0.0.0/33", "ten", "10.0.0/8"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }
}
