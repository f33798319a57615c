//! Client configuration with documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;

use crate::meeting;
use crate::store::KeySource;

/// Everything a [`Client`](crate::Client) needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store lives. Two clients with different data dirs are two people.
    pub data_dir: PathBuf,
    /// Display name shown to other members; `None` keeps the stored one (or "anonymous").
    pub name: Option<String>,
    /// Addresses to listen on. Default: QUIC and TCP on every interface, ephemeral ports.
    pub listen: Vec<Multiaddr>,
    /// Relay / bootstrap multiaddrs, each ending in `/p2p/<peer id>`.
    pub relays: Vec<Multiaddr>,
    /// LAN discovery by mDNS. Default on: a meeting must work on a LAN with no relay.
    pub mdns: bool,
    /// Meeting timers and bounds.
    pub meeting: meeting::Config,
    /// How often a joiner looks the meeting up on the DHT. Default 1 s.
    pub lookup_interval_joining: Duration,
    /// How often a member looks the meeting up (heals partitions). Default 10 s.
    pub lookup_interval_member: Duration,
    /// How often a member re-announces itself on the DHT. Default 30 s.
    pub reprovide_interval: Duration,
    /// Audio: `None` (the default) runs a meeting without media.
    pub media: Option<crate::media::MediaConfig>,
    /// Relay-only: other members never learn our addresses. The control plane listens on
    /// no direct address and reaches everyone but the relays through relay circuits (no
    /// mDNS, no hole punching); media, if any, uses relayed candidates only. Needs a relay.
    pub relay_only: bool,
    /// Most events held for an application that does not read them (default 4096); past
    /// this the oldest are dropped and the application is told how many it missed
    /// ([`crate::Event::Lagged`]). The core never waits for the application.
    pub event_backlog: usize,
    /// Where the store key comes from (default [`KeySource::Auto`]: the OS secret service,
    /// refusing to start without one). See [`crate::store::key_source`].
    pub store_key: KeySource,
}

impl Config {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            name: None,
            listen: vec![
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr literal"),
                "/ip4/0.0.0.0/tcp/0"
                    .parse()
                    .expect("valid multiaddr literal"),
            ],
            relays: Vec::new(),
            mdns: true,
            meeting: meeting::Config::default(),
            lookup_interval_joining: Duration::from_secs(1),
            lookup_interval_member: Duration::from_secs(10),
            reprovide_interval: Duration::from_secs(30),
            media: None,
            relay_only: false,
            event_backlog: 4096,
            store_key: KeySource::Auto,
        }
    }

    /// Relay-only mode (see [`Config::relay_only`]); the media plane follows.
    pub fn with_relay_only(mut self, relay_only: bool) -> Self {
        self.relay_only = relay_only;
        self
    }

    /// Whether relay-only mode is on (asked for, or by the media settings).
    pub fn is_relay_only(&self) -> bool {
        self.relay_only || self.media.as_ref().is_some_and(|m| m.relay_only)
    }

    /// Sets how many unread events are held before the oldest are dropped.
    pub fn with_event_backlog(mut self, events: usize) -> Self {
        self.event_backlog = events;
        self
    }

    /// Sets where the store key comes from.
    pub fn with_store_key(mut self, source: KeySource) -> Self {
        self.store_key = source;
        self
    }

    /// Sets the display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Replaces the listen addresses.
    pub fn with_listen(mut self, listen: Vec<Multiaddr>) -> Self {
        self.listen = listen;
        self
    }

    /// Replaces the relay / bootstrap addresses.
    pub fn with_relays(mut self, relays: Vec<Multiaddr>) -> Self {
        self.relays = relays;
        self
    }

    /// Turns mDNS on or off.
    pub fn with_mdns(mut self, mdns: bool) -> Self {
        self.mdns = mdns;
        self
    }

    /// Turns audio on with these settings.
    pub fn with_media(mut self, media: crate::media::MediaConfig) -> Self {
        self.media = Some(media);
        self
    }

    /// Replaces the meeting timers.
    pub fn with_meeting(mut self, meeting: meeting::Config) -> Self {
        self.meeting = meeting;
        self
    }
}
