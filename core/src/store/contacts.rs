//! Verified contacts: the people whose safety number this user compared and confirmed.
//!
//! Tree `verified`, sealed: blinded peer id → sealed (peer id ‖ the safety number (UTF-8)
//! that was verified). Storing the
//! number, not just a flag, keeps the mark tied to the key: a peer id is derived from the
//! key, so a changed key is a different peer id and is never shown as verified.

use libp2p::PeerId;

use super::{Store, StoreError};

impl Store {
    /// Marks `peer` verified (or clears the mark), remembering the safety number compared.
    pub fn set_verified(
        &self,
        peer: PeerId,
        safety_number: Option<&str>,
    ) -> Result<(), StoreError> {
        match safety_number {
            Some(number) => self.verified.insert(&peer.to_bytes(), number.as_bytes())?,
            None => self.verified.remove(&peer.to_bytes())?,
        }
        self.flush()
    }

    /// Every verified peer. Undecodable entries are skipped.
    pub fn verified_peers(&self) -> Result<Vec<PeerId>, StoreError> {
        let mut peers = Vec::new();
        for (key, _) in self.verified.entries()? {
            if let Ok(peer) = PeerId::from_bytes(&key) {
                peers.push(peer);
            }
        }
        Ok(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_marks_persist_and_can_be_cleared() {
        let dir = crate::store::private_tempdir();
        let a = PeerId::random();
        let b = PeerId::random();
        {
            let store = Store::open(dir.path(), &crate::store::KeySource::InsecureKeyFile).unwrap();
            store.set_verified(a, Some("12345 67890")).unwrap();
            store.set_verified(b, Some("1")).unwrap();
            store.set_verified(b, None).unwrap();
        }
        let store = Store::open(dir.path(), &crate::store::KeySource::InsecureKeyFile).unwrap();
        assert_eq!(store.verified_peers().unwrap(), vec![a]);
    }
}
