//! A malicious member (issue 14): a test node that holds a real leaf and signs whatever it
//! likes. It forks the group by sending different commits to two halves, and claims later
//! epochs it is not at — in heartbeats (validly signed or not), commits and `Nack`s.
//! Honest members raise a fork alert, and nobody drops its group on its word. It commits
//! what the commit rules forbid (removing the host, hidden or unadmitted members, out of
//! turn) and is refused everywhere with an alert; as committer it withholds a change and is
//! taken over; kicked as committer, it is removed by the next one.

use super::*;
use crate::admission::MeetingKeys;
use crate::group::epoch_proof;
use crate::group::mls::{JoinerPackage, validate_key_package};
use crate::group::statements::{self, Statement};
use crate::meeting::CommitViolation;
use crate::proto::control::{
    CommitReasons, EpochProof, Evidence, Removal, RemovalReason, StatementSignature,
};

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
    let (epoch, first) = forge_commit(sim, mal, vec![], vec![], &CommitReasons::default());
    let (again, second) = forge_commit(sim, mal, vec![], vec![], &CommitReasons::default());
    assert_eq!(epoch, again);
    (epoch, first, second)
}

/// `mal` makes a commit of its current epoch that adds `adds`, removes the leaves of
/// `removes` and states `reasons` (its own group stays put).
fn forge_commit(
    sim: &mut Sim,
    mal: PeerId,
    adds: Vec<JoinerPackage>,
    removes: Vec<PeerId>,
    reasons: &CommitReasons,
) -> (u64, Vec<u8>) {
    let mls = &mut sim.node(mal).machine.mls;
    let group = mls.group.as_mut().expect("in the group");
    let leaves = removes.iter().map(|p| group.leaf_of(p).unwrap()).collect();
    let out = group
        .commit(&mls.provider, &mls.me, adds, leaves, reasons.to_aad())
        .expect("commit");
    group.clear_pending(&mls.provider).expect("clear");
    (out.from_epoch, out.commit)
}

/// The commit alerts `peer` raised: (rule, member, epoch).
fn commit_alerts(sim: &Sim, peer: PeerId) -> Vec<(CommitViolation, PeerId, u64)> {
    sim.nodes[&peer]
        .events
        .iter()
        .filter_map(|e| match e {
            MeetingEvent::Alert {
                kind: AlertKind::Commit(rule),
                peer_id,
                epoch,
            } => Some((*rule, *peer_id, *epoch)),
            _ => None,
        })
        .collect()
}

/// `mal` sends `commit` of `epoch` to each of `honest`: every one refuses it, alerts about
/// `mal` for breaking `rule`, and stays a member.
fn refused_everywhere(
    sim: &mut Sim,
    mal: PeerId,
    honest: &[PeerId],
    epoch: u64,
    commit: &[u8],
    rule: CommitViolation,
) {
    let meeting_id = keys(1).meeting_id();
    for peer in honest {
        let before = sim.nodes[peer].machine.stats().commits_rejected;
        let request = Request::Commit {
            meeting_id,
            epoch,
            commit: commit.to_vec(),
        };
        assert_eq!(
            sim.request(*peer, mal, request),
            Response::Nack { epoch },
            "{peer} refuses it"
        );
        sim.drain(*peer);
        // Its confirmation changes nothing: nothing was staged.
        let confirm = Request::Confirm { meeting_id, epoch };
        sim.request(*peer, mal, confirm);
        sim.drain(*peer);
        assert!(
            commit_alerts(sim, *peer).contains(&(rule, mal, epoch)),
            "{peer} alerts: {:?}",
            commit_alerts(sim, *peer)
        );
        let machine = &sim.nodes[peer].machine;
        assert_eq!(machine.stats().commits_rejected, before + 1);
        assert_eq!(machine.phase(), Phase::Member);
        assert_eq!(
            machine.epoch().map(|e| e.0),
            Some(epoch),
            "{peer} kept its epoch"
        );
    }
}

/// `mal` forges a commit of `epoch` with `(adds, removes, reasons)` and sends it to each of
/// `honest`, who refuse it for breaking `rule`.
fn forged_and_refused(
    sim: &mut Sim,
    mal: PeerId,
    honest: &[PeerId],
    epoch: u64,
    (adds, removes, reasons): (Vec<JoinerPackage>, Vec<PeerId>, &CommitReasons),
    rule: CommitViolation,
) {
    let (at, commit) = forge_commit(sim, mal, adds, removes, reasons);
    assert_eq!(at, epoch);
    refused_everywhere(sim, mal, honest, epoch, &commit, rule);
}

/// A fresh person's valid key package (nobody admitted it).
fn stranger_package() -> (PeerId, JoinerPackage) {
    let identity = Identity::generate();
    let provider = Provider::default();
    let bytes = MlsIdentity::new(&identity).key_package(&provider).unwrap();
    let peer = identity.peer_id();
    (peer, validate_key_package(&provider, &bytes, peer).unwrap())
}

#[test]
fn a_member_that_removes_the_host_is_refused_everywhere_and_the_host_stays() {
    let mut sim = Sim::new();
    // `mal` has leaf 1: removing the host (leaf 0) would make it the committer.
    let (host, [(mal, mal_id), (a, _), (b, _)]) = form_known(&mut sim);
    let honest = [host, a, b];
    let (epoch, code) = sim.epoch(host).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&mal_id.secret_bytes());
    let binding = sim.nodes[&host]
        .machine
        .mls
        .group
        .as_ref()
        .unwrap()
        .leaf_binding(&host)
        .unwrap();
    let meeting_id = keys(1).meeting_id();
    let own_kick = statements::sign(&key, Statement::Kick, meeting_id, &host, &binding);
    let forged_leave = statements::sign(&key, Statement::Leave, meeting_id, &host, &binding);
    let attempts = [
        // "The host kicked itself", signed by `mal`.
        (RemovalReason::Kicked, Some((mal, own_kick))),
        // "The host kicked itself", with no statement.
        (RemovalReason::Kicked, None),
        // "The host left", signed by `mal` instead of the host.
        (RemovalReason::Left, Some((host, forged_leave))),
        // "The host timed out", although everyone heard it just now.
        (RemovalReason::TimedOut, None),
        // "The host withheld a change", although nothing is due.
        (RemovalReason::Withheld, None),
    ];
    for (reason, evidence) in attempts {
        let reasons = CommitReasons {
            removals: vec![Removal {
                peer_id: host,
                reason,
                evidence: evidence.map(|(signer, signature)| Evidence {
                    signer,
                    signature: StatementSignature(signature),
                }),
            }],
            approvals: vec![],
        };
        forged_and_refused(
            &mut sim,
            mal,
            &honest,
            epoch,
            (vec![], vec![host], &reasons),
            CommitViolation::UnjustifiedRemoval,
        );
        sim.run_for(Duration::from_millis(300));
    }
    // Reasons that do not match the commit: it removes the host but says it removes `a`.
    let reasons = CommitReasons {
        removals: vec![Removal {
            peer_id: a,
            reason: RemovalReason::Kicked,
            evidence: None,
        }],
        approvals: vec![],
    };
    forged_and_refused(
        &mut sim,
        mal,
        &honest,
        epoch,
        (vec![], vec![host], &reasons),
        CommitViolation::ReasonsMismatch,
    );
    // The meeting goes on: the host is still in, and a newcomer still gets in.
    sim.run_for(Duration::from_secs(2));
    assert!(sim.agree(&[host, mal, a, b]));
    assert_eq!(sim.epoch(host), Some((epoch, code)));
    let c = sim.joiner(1, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, mal, a, b, c]))
        .expect("the honest committer still commits");
}

#[test]
fn a_member_that_adds_a_hidden_or_unadmitted_leaf_is_refused_and_nobody_gains_a_member() {
    let mut sim = Sim::new();
    let host = sim.lobby_host();
    let identities: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let mut peers = Vec::new();
    for identity in &identities {
        let peer = sim.joiner_with(identity, 1, host, Some(host));
        sim.set_lobby(peer);
        sim.run_until(Duration::from_secs(3), |s| {
            s.nodes[&host]
                .events
                .iter()
                .any(|e| matches!(e, MeetingEvent::Knocking { peer_id, .. } if *peer_id == peer))
        })
        .expect("knocking");
        sim.approve(host, peer);
        peers.push(peer);
    }
    let everyone: Vec<PeerId> = std::iter::once(host).chain(peers.iter().copied()).collect();
    sim.run_until(Duration::from_secs(10), |s| s.agree(&everyone))
        .expect("group formed");
    let (mal, honest) = (peers[0], [host, peers[1], peers[2]]);
    let (epoch, code) = sim.epoch(host).unwrap();

    // A leaf whose credential names someone else's key: nobody could see it in a roster.
    let (owner, claimed) = (Identity::generate(), Identity::generate());
    let provider = Provider::default();
    let bytes = MlsIdentity::with_credential_of(&owner, &claimed)
        .key_package(&provider)
        .unwrap();
    let hidden = JoinerPackage::unchecked(&provider, &bytes, owner.peer_id());
    forged_and_refused(
        &mut sim,
        mal,
        &honest,
        epoch,
        (vec![hidden], vec![], &CommitReasons::default()),
        CommitViolation::MalformedCredential,
    );
    // A real person whom the host never approved.
    let (stranger, package) = stranger_package();
    forged_and_refused(
        &mut sim,
        mal,
        &honest,
        epoch,
        (vec![package], vec![], &CommitReasons::default()),
        CommitViolation::UnjustifiedAdd,
    );
    sim.run_for(Duration::from_secs(2));
    assert!(sim.agree(&everyone), "no member was added");
    assert_eq!(sim.epoch(host), Some((epoch, code)));
    assert!(!sim.members(host).contains(&stranger));
}

#[test]
fn a_commit_out_of_turn_is_refused() {
    let mut sim = Sim::new();
    let (host, [(a, _), (mal, _)]) = form_known(&mut sim);
    let (epoch, _) = sim.epoch(host).unwrap();
    // An empty commit (a key rotation) is harmless, but only the committer may make it.
    forged_and_refused(
        &mut sim,
        mal,
        &[host, a],
        epoch,
        (vec![], vec![], &CommitReasons::default()),
        CommitViolation::NotCommitter,
    );
}

#[test]
fn a_committer_that_withholds_a_change_is_taken_over() {
    let mut sim = Sim::new();
    // The host (leaf 0) is the committer, and it stops committing.
    let (mal, [(a, _), (b, _), (c, _)]) = form_known(&mut sim);
    let far = sim.now + Duration::from_secs(3600);
    sim.node(mal).machine.mls.backoff_until = Some(far);
    let (epoch, _) = sim.epoch(a).unwrap();
    // `c` leaves: its removal is due, and the committer sits on it.
    sim.node(c).machine.leave();
    sim.drain(c);
    let took = sim
        .run_until(Duration::from_secs(30), |s| {
            [a, b].iter().all(|p| {
                let members = s.members(*p);
                !members.contains(&c) && s.epoch(*p).is_some_and(|e| e.0 > epoch)
            })
        })
        .expect("the next member took over");
    let window = Config::default().takeover_after_for(Duration::ZERO);
    assert!(
        took >= window / 2,
        "not before the change was overdue: {took:?}"
    );
    assert!(took <= window + Duration::from_secs(3), "took {took:?}");
    for peer in [a, b] {
        let removed = |who: PeerId, why: LeaveReason| {
            sim.nodes[&peer].events.iter().any(|e| {
                matches!(e, MeetingEvent::MemberLeft { peer_id, reason, .. } if *peer_id == who && *reason == why)
            })
        };
        assert!(removed(c, LeaveReason::Left));
        assert!(
            removed(mal, LeaveReason::TimedOut),
            "the withholding committer is out"
        );
        assert_eq!(sim.nodes[&peer].machine.stats().commits_rejected, 0);
    }
}

#[test]
fn a_kicked_committer_is_removed_by_the_next_member() {
    let mut sim = Sim::new();
    let (host, [a, b, c]) = sim.form();
    // The host leaves: `a` (leaf 1) commits from now on, and any member may kick.
    sim.node(host).machine.leave();
    sim.drain(host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[a, b, c]))
        .expect("the host's goodbye committed");
    // The committer misbehaves and ignores every kick: it never commits again.
    let far = sim.now + Duration::from_secs(3600);
    sim.node(a).machine.mls.backoff_until = Some(far);
    sim.kick(b, a);
    sim.run_until(Duration::from_secs(5), |s| {
        s.agree(&[b, c]) && !s.members(c).contains(&a)
    })
    .expect("the next member committed the kick");
    for peer in [b, c] {
        assert!(sim.nodes[&peer].events.iter().any(|e| matches!(e, MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::Kicked, .. } if *peer_id == a)));
        assert_eq!(sim.nodes[&peer].machine.stats().commits_rejected, 0);
    }
}

/// `mal` delivers `commit` of `epoch` to `to` and confirms it.
fn commit_and_confirm(sim: &mut Sim, mal: PeerId, to: PeerId, epoch: u64, commit: &[u8]) {
    let meeting_id = keys(1).meeting_id();
    let staged = Request::Commit {
        meeting_id,
        epoch,
        commit: commit.to_vec(),
    };
    assert_eq!(sim.request(to, mal, staged), Response::Ack);
    let confirm = Request::Confirm { meeting_id, epoch };
    assert_eq!(sim.request(to, mal, confirm), Response::Ack);
    sim.drain(to);
}

#[test]
fn different_commits_to_two_halves_raise_a_fork_alert_on_both_sides_within_one_heartbeat() {
    let mut sim = Sim::new();
    // The committer (the host, leaf 0) is the malicious one: only its commits are staged.
    let (mal, joiners) = form_known::<4>(&mut sim);
    let left = [joiners[0].0, joiners[1].0];
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

#[test]
fn a_kick_locks_the_door_the_old_secret_stops_working_and_the_new_one_lets_a_newcomer_in() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let old_dht_key = keys(1).dht_key();
    sim.kick(host, b);
    sim.run_until(Duration::from_secs(5), |s| {
        s.agree(&[host, a]) && !s.members(a).contains(&b)
    })
    .expect("kicked");
    // Every remaining member rotated to the same secret, learnt through MLS; the kicked
    // member has none of it.
    let secret = sim.nodes[&host].rekeyed.clone();
    assert_eq!(secret.len(), 1, "one rotation per kick");
    assert_eq!(sim.nodes[&a].rekeyed, secret);
    assert!(sim.nodes[&b].rekeyed.is_empty());
    assert_ne!(secret[0], MeetingSecret::from_bytes([1; 32]));
    let new_keys = MeetingKeys::derive(keys(1).meeting_id(), &secret[0]);
    for peer in [host, a] {
        assert_eq!(sim.nodes[&peer].machine.dht_key(), new_keys.dht_key());
        assert_ne!(sim.nodes[&peer].machine.dht_key(), old_dht_key);
    }
    // The old invite no longer proves the secret: a newcomer holding it is refused.
    let stranger = PeerId::random();
    let unix_ms = sim.unix_ms();
    let hello = forged_hello(1, stranger, host, 1, unix_ms);
    assert_eq!(sim.request(host, stranger, hello), Response::Refused);
    // The kicked member is banned, whatever it holds.
    assert!(sim.nodes[&host].machine.banned.contains(&b));
    // The new invite lets a newcomer in, and it learns the ban with its welcome.
    let identity = Identity::generate();
    let newcomer = identity.peer_id();
    let rng = sim.rng();
    let machine = Machine::joiner(
        Config::default(),
        MlsIdentity::new(&identity),
        Provider::default(),
        "newcomer".into(),
        new_keys,
        Some(host),
        sim.now,
        rng,
    );
    sim.add(machine, newcomer);
    sim.greet(newcomer, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, newcomer]))
        .expect("the new invite works");
    assert!(sim.nodes[&newcomer].machine.banned.contains(&b));
}
