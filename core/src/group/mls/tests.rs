//! Real openmls groups in memory: membership, impostors, removal, persistence.

use super::*;
use crate::group::provider::StorageDelta;

struct Member {
    identity: Identity,
    me: MlsIdentity,
    provider: Provider,
    group: Option<MeetingGroup>,
}

fn member() -> Member {
    let identity = Identity::generate();
    Member {
        me: MlsIdentity::new(&identity),
        identity,
        provider: Provider::default(),
        group: None,
    }
}

fn meeting_id() -> MeetingId {
    MeetingId([42; 16])
}

impl Member {
    fn peer(&self) -> PeerId {
        self.identity.peer_id()
    }
    fn group(&mut self) -> &mut MeetingGroup {
        self.group.as_mut().expect("in the group")
    }
    fn commit(
        &mut self,
        adds: Vec<JoinerPackage>,
        removes: Vec<u32>,
    ) -> Result<CommitOut, GroupError> {
        let group = self.group.as_mut().expect("in the group");
        group.commit(&self.provider, &self.me, adds, removes, Vec::new())
    }
    fn merge_pending(&mut self) -> Result<GroupChanges, GroupError> {
        let group = self.group.as_mut().expect("in the group");
        group.merge_pending(&self.provider)
    }
    fn clear_pending(&mut self) -> Result<(), GroupError> {
        let group = self.group.as_mut().expect("in the group");
        group.clear_pending(&self.provider)
    }
    fn encrypt(&mut self, data: &[u8]) -> Result<Vec<u8>, GroupError> {
        let group = self.group.as_mut().expect("in the group");
        group.encrypt(&self.provider, &self.me, data)
    }
    fn receive(&mut self, bytes: &[u8], from: PeerId) -> Result<Received, GroupError> {
        let group = self.group.as_mut().expect("in the group");
        group.receive(&self.provider, bytes, from)
    }
    fn merge_staged(&mut self, staged: StagedCommit) -> Result<GroupChanges, GroupError> {
        let group = self.group.as_mut().expect("in the group");
        group.merge_staged(&self.provider, staged)
    }
    /// Receives `commit` from `from` (it must be one) and merges it.
    fn apply_commit(&mut self, commit: &[u8], from: PeerId) -> GroupChanges {
        let Received::Commit { staged, .. } = self.receive(commit, from).unwrap() else {
            panic!("expected a commit")
        };
        self.merge_staged(*staged).unwrap()
    }
}

/// `host` adds `joiners` in one commit; everybody already in processes the commit.
fn add(host: &mut Member, others: &mut [&mut Member], joiners: &mut [&mut Member]) {
    let packages: Vec<JoinerPackage> = joiners
        .iter()
        .map(|j| {
            let kp = j.me.key_package(&j.provider).unwrap();
            validate_key_package(&host.provider, &kp, j.peer()).unwrap()
        })
        .collect();
    let host_peer = host.peer();
    let out = host.commit(packages, vec![]).unwrap();
    for other in others.iter_mut() {
        other.apply_commit(&out.commit, host_peer);
    }
    host.merge_pending().unwrap();
    for joiner in joiners.iter_mut() {
        joiner.group =
            Some(MeetingGroup::join(&joiner.provider, out.welcome.as_ref().unwrap()).unwrap());
    }
}

fn three() -> (Member, Member, Member) {
    let (mut a, mut b, mut c) = (member(), member(), member());
    a.group = Some(MeetingGroup::create(&a.provider, &a.me, meeting_id()).unwrap());
    add(&mut a, &mut [], &mut [&mut b, &mut c]);
    (a, b, c)
}

#[test]
fn members_agree_on_epoch_security_code_and_media_secret() {
    let (mut a, mut b, mut c) = three();
    let codes: Vec<_> = [&mut a, &mut b, &mut c]
        .into_iter()
        .map(|m| (m.group().epoch(), m.group().security_code()))
        .collect();
    assert!(codes.windows(2).all(|w| w[0] == w[1]), "{codes:?}");
    assert_eq!(codes[0].0, 1);
    let secrets: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|m| {
            m.group
                .as_ref()
                .unwrap()
                .media_epoch_secret(&m.provider)
                .unwrap()
        })
        .collect();
    assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    let peers: Vec<PeerId> = vec![a.peer(), b.peer(), c.peer()];
    let members: Vec<PeerId> = a.group().members().into_iter().map(|(_, p)| p).collect();
    assert_eq!(members, peers);
    assert_eq!(b.group().leaf_of(&c.peer()), Some(2));
}

/// Epoch proofs: members of one epoch share the authenticator hash, and a member's proof
/// verifies at the others under its leaf key — not under anyone else's, and not from a
/// peer outside the tree.
#[test]
fn epoch_proofs_verify_under_the_senders_leaf_key_in_our_tree() {
    let (mut a, mut b, c) = three();
    let outsider = member();
    let (epoch, id) = (a.group().epoch(), meeting_id());
    let (hash, signature) = a.group.as_ref().unwrap().epoch_proof(&a.me, id);
    assert_eq!(hash, b.group().authenticator_hash(id));
    let bg = b.group();
    assert!(bg.verify_epoch_proof(&a.peer(), id, epoch, &hash, &signature));
    assert!(!bg.verify_epoch_proof(&c.peer(), id, epoch, &hash, &signature));
    assert!(!bg.verify_epoch_proof(&a.peer(), id, epoch + 1, &hash, &signature));
    let (o_hash, o_signature) = a.group.as_ref().unwrap().epoch_proof(&outsider.me, id);
    assert!(
        !b.group()
            .verify_epoch_proof(&outsider.peer(), id, epoch, &o_hash, &o_signature)
    );
}

#[test]
fn application_messages_round_trip_and_the_sender_must_be_the_connection_peer() {
    let (mut a, mut b, mut c) = three();
    let sealed = a.encrypt(b"hello").unwrap();
    let a_peer = a.peer();
    let got = b.receive(&sealed, a_peer).unwrap();
    assert!(matches!(got, Received::Application { sender: 0, ref data } if data == b"hello"));
    // The same bytes relayed by someone else are refused: the sender is not the connection.
    let relayed = c.receive(&sealed, b.peer());
    assert!(
        matches!(relayed, Err(GroupError::Impostor { .. })),
        "{relayed:?}"
    );
    // And a second delivery is refused by MLS itself (the key was consumed).
    let replay = b.receive(&sealed, a_peer);
    assert!(replay.is_err(), "replayed message must not decrypt twice");
}

#[test]
fn a_key_package_with_someone_elses_credential_is_refused() {
    let host = member();
    let victim = Identity::generate();
    let impostor = Identity::generate();
    let forged = MlsIdentity::with_credential_of(&impostor, &victim);
    let provider = Provider::default();
    let kp = forged.key_package(&provider);
    // Either openmls refuses to build it (signature key mismatch) or we refuse it on arrival.
    if let Ok(kp) = kp {
        assert!(matches!(
            validate_key_package(&host.provider, &kp, impostor.peer_id()),
            Err(GroupError::Impostor { .. })
        ));
        assert!(validate_key_package(&host.provider, &kp, victim.peer_id()).is_err());
    }
    // An honest package is refused when it arrives from another peer than its owner.
    let honest = member();
    let kp = honest.me.key_package(&honest.provider).unwrap();
    assert!(matches!(
        validate_key_package(&host.provider, &kp, impostor.peer_id()),
        Err(GroupError::Impostor { .. })
    ));
    assert!(validate_key_package(&host.provider, &kp, honest.peer()).is_ok());
    assert!(matches!(
        validate_key_package(&host.provider, b"garbage", honest.peer()),
        Err(GroupError::Malformed(_))
    ));
}

#[test]
fn a_removed_member_cannot_decrypt_what_is_sent_after_its_removal() {
    let (mut a, mut b, mut c) = three();
    let (a_peer, c_peer) = (a.peer(), c.peer());
    let out = a.commit(vec![], vec![2]).unwrap();
    let changes = b.apply_commit(&out.commit, a_peer);
    assert_eq!(changes.removed, vec![(2, c_peer)]);
    a.merge_pending().unwrap();
    // C even applies the commit that removes it.
    if let Ok(Received::Commit { staged, .. }) = c.receive(&out.commit, a_peer) {
        let changes = c.merge_staged(*staged).unwrap();
        assert!(changes.self_removed);
    }
    let secret = a.encrypt(b"after the kick").unwrap();
    assert!(b.receive(&secret, a_peer).is_ok());
    let attempt = c.receive(&secret, a_peer);
    assert!(
        attempt.is_err(),
        "the removed member decrypted: {attempt:?}"
    );
    assert_ne!(a.group().security_code(), c.group().security_code());
    // Nor can it derive the new epoch's media keys.
    let new_media = a
        .group
        .as_ref()
        .unwrap()
        .media_epoch_secret(&a.provider)
        .unwrap();
    // Evicted, openmls may refuse to export at all; if it does export, the secret is stale.
    if let Ok(stale) = c.group.as_ref().unwrap().media_epoch_secret(&c.provider) {
        assert_ne!(stale, new_media);
    }
}

#[test]
fn a_competing_pending_commit_can_be_dropped_for_the_winner() {
    let (mut a, mut b, _c) = three();
    let a_peer = a.peer();
    // B believes it is the committer too and prepares a commit, but A's wins.
    let _losing = b.commit(vec![], vec![2]).unwrap();
    let winning = a.commit(vec![], vec![2]).unwrap();
    a.merge_pending().unwrap();
    b.clear_pending().unwrap();
    b.apply_commit(&winning.commit, a_peer);
    assert_eq!(a.group().security_code(), b.group().security_code());
}

#[test]
fn the_group_survives_a_restart_through_storage_deltas() {
    let (mut a, _b, _c) = three();
    let mut disk: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
    let apply = |disk: &mut std::collections::HashMap<Vec<u8>, Vec<u8>>, delta: StorageDelta| {
        for (k, v) in &delta.puts {
            disk.insert(k.clone(), v.clone());
        }
        for k in &delta.deletes {
            disk.remove(k);
        }
    };
    apply(&mut disk, a.provider.take_delta());
    assert!(
        a.provider.take_delta().is_empty(),
        "nothing new after a flush"
    );
    let code = a.group().security_code();
    let secret = a
        .group
        .as_ref()
        .unwrap()
        .media_epoch_secret(&a.provider)
        .unwrap();
    // Restart: a fresh provider from what was on disk.
    let restarted = Provider::with_entries(disk.clone());
    let group = MeetingGroup::load(&restarted, meeting_id())
        .unwrap()
        .expect("the group was stored");
    assert_eq!(group.security_code(), code);
    assert_eq!(group.media_epoch_secret(&restarted).unwrap(), secret);
    assert!(
        MeetingGroup::load(&restarted, MeetingId([1; 16]))
            .unwrap()
            .is_none()
    );
}
