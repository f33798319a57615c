//! A malicious member (issue 14): a test node that holds a real leaf and signs whatever it
//! likes. It forks the group by sending different commits to two halves, and claims later
//! epochs it is not at — in heartbeats (validly signed or not), commits and `Nack`s.
//! Honest members raise a fork alert, and nobody drops its group on its word.

use super::*;
use crate::group::epoch_proof;
use crate::proto::control::EpochProof;

/// A host and `N` joiners whose identities the test keeps (to sign as them).
fn form_known<const N: usize>(sim: &mut Sim) -> (PeerId, [(PeerId, Identity); N]) {
    let host = sim.host();
    let joiners: [(PeerId, Identity); N] = std::array::from_fn(|_| {
        let identity = Identity::generate();
        (sim.joiner_with(&identity, 1, host, Some(host)), identity)
    });
    let everyone: Vec<PeerId> = std::iter::once(host)
        .chain(joiners.iter().map(|(p, _)| *p))
        .collect();
    sim.run_until(Duration::from_secs(5), |s| s.agree(&everyone))
        .expect("group formed");
    (host, joiners)
}

/// A heartbeat from `signer` claiming `epoch` with authenticator hash `hash`, signed with
/// `signer`'s leaf key.
fn signed_heartbeat(signer: &Identity, epoch: u64, hash: [u8; 32]) -> Request {
    let key = ed25519_dalek::SigningKey::from_bytes(&signer.secret_bytes());
    let meeting_id = keys(1).meeting_id();
    Request::Heartbeat {
        meeting_id,
        members: vec![],
        epoch: Some(epoch),
        proof: Some(EpochProof {
            authenticator_hash: hash,
            signature: epoch_proof::sign(&key, meeting_id, epoch, &hash),
        }),
    }
}

fn fork_alerts(sim: &Sim, peer: PeerId) -> Vec<(PeerId, u64)> {
    sim.nodes[&peer]
        .events
        .iter()
        .filter_map(|e| match e {
            MeetingEvent::Alert {
                kind: AlertKind::Fork,
                peer_id,
                epoch,
            } => Some((*peer_id, *epoch)),
            _ => None,
        })
        .collect()
}

/// `mal` makes two different commits of its current epoch (its own group stays put).
fn two_commits(sim: &mut Sim, mal: PeerId) -> (u64, Vec<u8>, Vec<u8>) {
    let mls = &mut sim.node(mal).machine.mls;
    let group = mls.group.as_mut().expect("in the group");
    let first = group
        .commit(&mls.provider, &mls.me, vec![], vec![])
        .expect("commit");
    group.clear_pending(&mls.provider).expect("clear");
    let second = group
        .commit(&mls.provider, &mls.me, vec![], vec![])
        .expect("commit");
    group.clear_pending(&mls.provider).expect("clear");
    assert_eq!(first.from_epoch, second.from_epoch);
    (first.from_epoch, first.commit, second.commit)
}

/// `mal` delivers `commit` of `epoch` to `to` and confirms it.
fn commit_and_confirm(sim: &mut Sim, mal: PeerId, to: PeerId, epoch: u64, commit: &[u8]) {
    let meeting_id = keys(1).meeting_id();
    let staged = Request::Commit {
        meeting_id,
        epoch,
        commit: commit.to_vec(),
        removals: vec![],
    };
    assert_eq!(sim.request(to, mal, staged), Response::Ack);
    let confirm = Request::Confirm { meeting_id, epoch };
    assert_eq!(sim.request(to, mal, confirm), Response::Ack);
    sim.drain(to);
}

#[test]
fn different_commits_to_two_halves_raise_a_fork_alert_on_both_sides_within_one_heartbeat() {
    let mut sim = Sim::new();
    let (host, joiners) = form_known::<4>(&mut sim);
    let mal = joiners[0].0;
    let left = [host, joiners[1].0];
    let right = [joiners[2].0, joiners[3].0];
    let (epoch, first, second) = two_commits(&mut sim, mal);
    // The malicious member splits the meeting and goes quiet.
    sim.node(mal).alive = false;
    for peer in left {
        commit_and_confirm(&mut sim, mal, peer, epoch, &first);
    }
    for peer in right {
        commit_and_confirm(&mut sim, mal, peer, epoch, &second);
    }
    let (l, r) = (sim.epoch(left[0]).unwrap(), sim.epoch(right[0]).unwrap());
    assert_eq!(l.0, epoch + 1);
    assert_eq!(r.0, epoch + 1, "both halves are at the same epoch number");
    assert_ne!(l.1, r.1, "with different keys");

    let everyone = [left, right].concat();
    let alerted_by_the_other_half = |s: &Sim| {
        left.iter().all(|p| {
            fork_alerts(s, *p)
                .iter()
                .any(|(who, e)| right.contains(who) && *e == epoch + 1)
        }) && right.iter().all(|p| {
            fork_alerts(s, *p)
                .iter()
                .any(|(who, e)| left.contains(who) && *e == epoch + 1)
        })
    };
    let took = sim
        .run_until(Duration::from_secs(5), alerted_by_the_other_half)
        .expect("both halves raise a fork alert");
    // One heartbeat interval, plus the one-way latency of that heartbeat.
    assert!(
        took <= Config::default().heartbeat_interval + LATENCY,
        "alerts took {took:?}"
    );
    // At most once per (peer, epoch), however many heartbeats follow.
    sim.run_for(Duration::from_secs(2));
    for peer in everyone {
        let alerts = fork_alerts(&sim, peer);
        let distinct: BTreeSet<_> = alerts.iter().copied().collect();
        assert_eq!(alerts.len(), distinct.len(), "repeated alert at {peer}");
        assert_eq!(sim.nodes[&peer].machine.phase(), Phase::Member);
        assert!(sim.nodes[&peer].machine.stats().forks_detected >= 2);
    }
}

#[test]
fn a_forged_later_epoch_in_heartbeats_makes_nobody_drop_its_group() {
    let mut sim = Sim::new();
    let (host, [(a, _), (b, _), (mal, mal_id)]) = form_known(&mut sim);
    let honest = [host, a, b];
    let (epoch, code) = sim.epoch(host).unwrap();
    for round in 0..10u64 {
        for peer in honest {
            // Validly signed by its own leaf key, at a made-up later epoch...
            let forged = signed_heartbeat(&mal_id, epoch + 1 + round, [round as u8; 32]);
            assert_eq!(sim.request(peer, mal, forged), Response::Ack);
            // ... and a badly signed one at our epoch, with another authenticator.
            let Request::Heartbeat {
                meeting_id,
                members,
                proof: Some(mut proof),
                ..
            } = signed_heartbeat(&mal_id, epoch, [9; 32])
            else {
                unreachable!()
            };
            proof.signature[0] ^= 1;
            let bad = Request::Heartbeat {
                meeting_id,
                members,
                epoch: Some(epoch),
                proof: Some(proof),
            };
            assert_eq!(sim.request(peer, mal, bad), Response::Ack);
            // And a heartbeat with a later epoch number but no proof at all.
            let bare = Request::Heartbeat {
                meeting_id: keys(1).meeting_id(),
                members: vec![],
                epoch: Some(epoch + 50),
                proof: None,
            };
            assert_eq!(sim.request(peer, mal, bare), Response::Ack);
            sim.drain(peer);
        }
        sim.run_for(Duration::from_millis(500));
        for peer in honest {
            assert_eq!(sim.nodes[&peer].machine.phase(), Phase::Member);
        }
    }
    assert!(sim.agree(&[host, a, b, mal]));
    assert_eq!(sim.epoch(host), Some((epoch, code)), "nobody rejoined");
    for peer in honest {
        let stats = sim.nodes[&peer].machine.stats();
        assert!(stats.epoch_claims_unproven >= 10, "{stats:?}");
        assert!(stats.epoch_proofs_invalid >= 10, "{stats:?}");
        assert!(stats.epoch_proofs_missing >= 10, "{stats:?}");
        assert!(
            fork_alerts(&sim, peer).is_empty(),
            "a bad signature is no fork"
        );
    }
}

#[test]
fn a_forged_later_epoch_in_a_commit_or_a_nack_makes_nobody_drop_its_group() {
    let mut sim = Sim::new();
    let (host, [(a, _), (mal, _)]) = form_known(&mut sim);
    let (epoch, code) = sim.epoch(host).unwrap();
    let meeting_id = keys(1).meeting_id();
    for peer in [host, a] {
        let forged = Request::Commit {
            meeting_id,
            epoch: epoch + 7,
            commit: vec![1, 2, 3],
            removals: vec![],
        };
        assert_eq!(
            sim.request(peer, mal, forged),
            Response::Nack { epoch },
            "refused, not obeyed"
        );
        sim.drain(peer);
        assert_eq!(sim.nodes[&peer].machine.phase(), Phase::Member);
    }
    // A newcomer makes the host commit; the malicious member answers `Nack` with a made-up
    // later epoch instead of taking it.
    let c = sim.joiner(1, host);
    let mut nacked = false;
    for _ in 0..20_000 {
        if let Some(at) = sim.queue.iter().position(|(_, p)| {
            matches!(p, Packet::Request { to, from, request: Request::Commit { .. }, .. }
                if *to == mal && *from == host)
        }) && !nacked
        {
            let (when, packet) = sim.queue.remove(at);
            let Packet::Request { tag, .. } = packet else {
                unreachable!()
            };
            let response = Response::Nack { epoch: epoch + 40 };
            sim.queue.push((
                when + LATENCY,
                Packet::Response {
                    from: mal,
                    to: host,
                    response,
                    tag,
                },
            ));
            nacked = true;
        }
        sim.step();
        assert_eq!(sim.nodes[&host].machine.phase(), Phase::Member);
        if nacked && sim.agree(&[host, a, mal, c]) {
            break;
        }
    }
    assert!(nacked, "the host committed to the malicious member");
    assert!(
        sim.agree(&[host, a, mal, c]),
        "the join went through after all"
    );
    assert!(sim.epoch(host).unwrap().0 > epoch);
    assert_ne!(sim.epoch(host).map(|e| e.1), Some(code));
    assert_eq!(sim.nodes[&host].machine.stats().commits_aborted, 1);
}

/// With only one other member, that member is the majority: a proven later epoch makes us
/// join again (as a real missed confirmation must), but at most once per rejoin interval.
#[test]
fn alone_with_one_member_a_proven_later_epoch_rejoins_at_most_once_per_interval() {
    let mut sim = Sim::new();
    let (host, [(mal, mal_id)]) = form_known(&mut sim);
    let (epoch, _) = sim.epoch(host).unwrap();
    let forged = signed_heartbeat(&mal_id, epoch + 3, [1; 32]);
    sim.request(host, mal, forged.clone());
    sim.drain(host);
    assert!(matches!(
        sim.nodes[&host].machine.phase(),
        Phase::Joining { .. }
    ));
    sim.run_until(Duration::from_secs(10), |s| {
        s.nodes[&host].machine.phase() == Phase::Member
    })
    .expect("back in the group");
    assert!(sim.now < sim.start + Config::default().rejoin_interval + Duration::from_secs(5));
    let (now_epoch, _) = sim.epoch(host).unwrap();
    let again = signed_heartbeat(&mal_id, now_epoch + 3, [1; 32]);
    sim.request(host, mal, again);
    sim.drain(host);
    assert_eq!(sim.nodes[&host].machine.phase(), Phase::Member);
    assert_eq!(sim.nodes[&host].machine.stats().rejoins_deferred, 1);
}
