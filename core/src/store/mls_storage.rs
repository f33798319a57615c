//! Durable MLS state: the openmls key-value map, written one operation at a time.
//!
//! Each [`StorageDelta`] (all the writes of one MLS operation) is applied as one sled
//! batch and flushed before the call returns: after a crash the tree holds either the
//! state before the operation or the state after it, never a mix.

use super::schema::TREE_MLS;
use super::{Store, StoreError};
use crate::group::StorageDelta;

/// One openmls key-value entry.
pub type MlsEntry = (Vec<u8>, Vec<u8>);

impl Store {
    /// Every stored openmls entry, to seed a [`crate::group::Provider`].
    pub fn load_mls(&self) -> Result<Vec<MlsEntry>, StoreError> {
        let tree = self.db.open_tree(TREE_MLS)?;
        tree.iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// Applies one MLS operation's writes atomically.
    pub fn apply_mls_delta(&self, delta: &StorageDelta) -> Result<(), StoreError> {
        if delta.is_empty() {
            return Ok(());
        }
        let tree = self.db.open_tree(TREE_MLS)?;
        let mut batch = sled::Batch::default();
        for (key, value) in &delta.puts {
            batch.insert(key.as_slice(), value.as_slice());
        }
        for key in &delta.deletes {
            batch.remove(key.as_slice());
        }
        tree.apply_batch(batch)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::mls::validate_key_package;
    use crate::group::{MeetingGroup, MlsIdentity, Provider};
    use crate::identity::Identity;
    use crate::invite::MeetingId;

    #[test]
    fn a_group_is_reloaded_from_sled_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate();
        let (code, epoch) = {
            let store = Store::open(dir.path()).unwrap();
            let mut provider = Provider::with_entries(store.load_mls().unwrap());
            let me = MlsIdentity::new(&identity);
            let group = MeetingGroup::create(&provider, &me, MeetingId([5; 16])).unwrap();
            store.apply_mls_delta(&provider.take_delta()).unwrap();
            (group.security_code(), group.epoch())
        };
        let store = Store::open(dir.path()).unwrap();
        let provider = Provider::with_entries(store.load_mls().unwrap());
        let group = MeetingGroup::load(&provider, MeetingId([5; 16]))
            .unwrap()
            .expect("reloaded");
        assert_eq!((group.security_code(), group.epoch()), (code, epoch));
    }

    #[test]
    fn deletes_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let put = StorageDelta {
            puts: vec![(b"k".to_vec(), b"v".to_vec())],
            deletes: vec![],
        };
        store.apply_mls_delta(&put).unwrap();
        assert_eq!(
            store.load_mls().unwrap(),
            vec![(b"k".to_vec(), b"v".to_vec())]
        );
        let delete = StorageDelta {
            puts: vec![],
            deletes: vec![b"k".to_vec()],
        };
        store.apply_mls_delta(&delete).unwrap();
        assert!(store.load_mls().unwrap().is_empty());
    }

    /// A crash in the middle of an MLS operation (its delta never reaches sled) leaves the
    /// group exactly as it was before the operation: it reloads and keeps working.
    /// Commits and merges (in memory) the addition of a fresh identity to `group`.
    fn add_someone(provider: &Provider, me: &MlsIdentity, group: &mut MeetingGroup) {
        let joiner = Identity::generate();
        let kp = MlsIdentity::new(&joiner)
            .key_package(&Provider::default())
            .unwrap();
        let package = validate_key_package(provider, &kp, joiner.peer_id()).unwrap();
        group.commit(provider, me, vec![package], vec![]).unwrap();
        group.merge_pending(provider).unwrap();
    }

    #[test]
    fn a_crash_mid_commit_leaves_the_previous_epoch_intact() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate();
        let me = MlsIdentity::new(&identity);
        let code_before = {
            let store = Store::open(dir.path()).unwrap();
            let mut provider = Provider::with_entries(store.load_mls().unwrap());
            let mut group = MeetingGroup::create(&provider, &me, MeetingId([6; 16])).unwrap();
            store.apply_mls_delta(&provider.take_delta()).unwrap();
            let code = group.security_code();
            // The commit and its merge happen in memory, then the process dies before the
            // delta is written.
            add_someone(&provider, &me, &mut group);
            assert_eq!(group.epoch(), 1);
            code
        };
        let store = Store::open(dir.path()).unwrap();
        let mut provider = Provider::with_entries(store.load_mls().unwrap());
        let mut group = MeetingGroup::load(&provider, MeetingId([6; 16]))
            .unwrap()
            .expect("the group survives");
        assert_eq!((group.epoch(), group.security_code()), (0, code_before));
        // And it still works: a new commit applies and persists.
        add_someone(&provider, &me, &mut group);
        store.apply_mls_delta(&provider.take_delta()).unwrap();
        assert_eq!(group.epoch(), 1);
    }
}
