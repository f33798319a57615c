//! Remembered peers: the addresses of members seen in earlier meetings, used as extra
//! bootstrap candidates for the DHT next time.
//!
//! Tree `peers`, sealed: blinded peer id → sealed (peer id ‖ CBOR addresses and last-seen
//! time). Who was met, where and when is private.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// At most this many peers are remembered; the least recently seen are evicted.
pub const MAX_KNOWN_PEERS: usize = 256;
/// At most this many addresses are kept per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// A peer seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    /// Who.
    pub peer_id: PeerId,
    /// Where it was reachable.
    pub addrs: Vec<Multiaddr>,
    /// When it was last seen, seconds since the Unix epoch.
    pub last_seen_unix: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredPeer {
    addrs: Vec<Vec<u8>>,
    last_seen_unix: u64,
}

impl Store {
    /// Remembers `peer` at `addrs` (merged with what was known), seen at `now_unix`.
    pub fn remember_peer(
        &self,
        peer: &PeerId,
        addrs: &[Multiaddr],
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let key = peer.to_bytes();
        let mut merged: Vec<Multiaddr> = addrs.iter().take(MAX_ADDRS_PER_PEER).cloned().collect();
        if let Some(existing) = self.peers.get(&key)?
            && let Ok(old) = decode(peer, &existing)
        {
            for addr in old.addrs {
                if merged.len() < MAX_ADDRS_PER_PEER && !merged.contains(&addr) {
                    merged.push(addr);
                }
            }
        }
        let stored = StoredPeer {
            addrs: merged.iter().map(|a| a.to_vec()).collect(),
            last_seen_unix: now_unix,
        };
        let value = crate::proto::to_cbor(&stored);
        self.peers.insert(&key, &value)?;
        self.evict_oldest_peers()?;
        self.flush()
    }

    /// Every remembered peer, most recently seen first. Undecodable entries are skipped.
    pub fn known_peers(&self) -> Result<Vec<KnownPeer>, StoreError> {
        let mut peers = Vec::new();
        for (key, value) in self.peers.entries()? {
            let Ok(peer_id) = PeerId::from_bytes(&key) else {
                tracing::warn!("skipping a remembered peer with an invalid id");
                continue;
            };
            match decode(&peer_id, &value) {
                Ok(peer) => peers.push(peer),
                Err(_) => tracing::warn!(peer = %peer_id, "skipping a corrupt remembered peer"),
            }
        }
        peers.sort_by_key(|p| std::cmp::Reverse(p.last_seen_unix));
        Ok(peers)
    }

    fn evict_oldest_peers(&self) -> Result<(), StoreError> {
        if self.peers.len() <= MAX_KNOWN_PEERS {
            return Ok(());
        }
        let peers = self.known_peers()?;
        for stale in peers.iter().skip(MAX_KNOWN_PEERS) {
            self.peers.remove(&stale.peer_id.to_bytes())?;
        }
        Ok(())
    }
}

fn decode(peer_id: &PeerId, raw: &[u8]) -> Result<KnownPeer, StoreError> {
    let stored: StoredPeer = ciborium::from_reader(raw).map_err(|_| StoreError::Corrupt {
        what: "remembered peer",
    })?;
    let addrs = stored
        .addrs
        .into_iter()
        .filter_map(|bytes| Multiaddr::try_from(bytes).ok())
        .collect();
    Ok(KnownPeer {
        peer_id: *peer_id,
        addrs,
        last_seen_unix: stored.last_seen_unix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn peers_are_remembered_merged_and_bounded() {
        let dir = crate::store::private_tempdir();
        let store = Store::open(dir.path(), &crate::store::KeySource::InsecureKeyFile).unwrap();
        let peer = Identity::generate().peer_id();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let b: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        store
            .remember_peer(&peer, std::slice::from_ref(&a), 10)
            .unwrap();
        store
            .remember_peer(&peer, std::slice::from_ref(&b), 20)
            .unwrap();
        let known = store.known_peers().unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].addrs, vec![b, a]);
        assert_eq!(known[0].last_seen_unix, 20);

        for i in 0..(MAX_KNOWN_PEERS as u64 + 5) {
            store
                .remember_peer(&Identity::generate().peer_id(), &[], 100 + i)
                .unwrap();
        }
        let known = store.known_peers().unwrap();
        assert_eq!(known.len(), MAX_KNOWN_PEERS);
        assert!(
            known.iter().all(|p| p.peer_id != peer),
            "the oldest peer is evicted"
        );
    }
}
