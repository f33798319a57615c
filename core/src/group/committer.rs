//! Who commits: the ordering rule that replaces a server.
//!
//! Rule (see `docs/protocol.md` §6): the committer of an epoch is the member with the
//! lowest leaf index among the members the local member considers online (itself always
//! counts as online). Every member evaluates the rule on its own view; when views differ,
//! the two-phase commit of the meeting machine makes the lower leaf win.

use libp2p::PeerId;

/// The committer among `members` (leaf index, peer), given which peers are online.
pub fn committer(
    members: &[(u32, PeerId)],
    local: PeerId,
    is_online: impl Fn(&PeerId) -> bool,
) -> Option<PeerId> {
    members
        .iter()
        .filter(|(_, peer)| *peer == local || is_online(peer))
        .min_by_key(|(leaf, _)| *leaf)
        .map(|(_, peer)| *peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_online_leaf_commits_and_the_next_takes_over() {
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let members: Vec<(u32, PeerId)> =
            vec![(0, peers[0]), (1, peers[1]), (3, peers[3]), (2, peers[2])];
        assert_eq!(committer(&members, peers[2], |_| true), Some(peers[0]));
        // Leaf 0 vanished: leaf 1 takes over.
        assert_eq!(
            committer(&members, peers[2], |p| *p != peers[0]),
            Some(peers[1])
        );
        // Everybody else vanished: we commit (we always count ourselves).
        assert_eq!(committer(&members, peers[3], |_| false), Some(peers[3]));
        assert_eq!(committer(&[], peers[3], |_| true), None);
    }
}
