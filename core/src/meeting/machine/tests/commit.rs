//! The group: forming it, commits and their races, removals, kicks, rejoining with a new leaf.

use super::*;

#[test]
fn host_and_four_simultaneous_joiners_agree_on_one_epoch() {
    for seed in 0..3 {
        let mut sim = Sim::new();
        sim.seed = seed * 100;
        let host = sim.host();
        // Joiners arrive at the same moment and each only knows the host.
        let joiners: Vec<PeerId> = (0..4).map(|_| sim.joiner(1, host)).collect();
        let everyone: Vec<PeerId> = std::iter::once(host)
            .chain(joiners.iter().copied())
            .collect();
        let took = sim
            .run_until(Duration::from_secs(10), |s| s.agree(&everyone))
            .expect("everyone agrees");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        for peer in &everyone {
            assert_eq!(sim.nodes[peer].machine.phase(), Phase::Member);
            let joined: BTreeSet<PeerId> = sim.nodes[peer]
                .events
                .iter()
                .filter_map(|e| match e {
                    MeetingEvent::MemberJoined { peer_id, .. } => Some(*peer_id),
                    _ => None,
                })
                .collect();
            assert_eq!(joined.len(), 4, "each member announced once at {peer}");
        }
        assert_eq!(
            sim.providers.len(),
            5,
            "every member provides the rendezvous key"
        );
    }
}

#[test]
fn a_vanished_member_is_removed_by_a_commit_everyone_agrees_on() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    sim.node(b).alive = false;
    let took = sim
        .run_until(Duration::from_secs(10), |s| s.agree(&[host, a]))
        .expect("the survivors agree");
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    let left = sim.nodes[&a].events.iter().any(|e| matches!(e, MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::TimedOut, .. } if *peer_id == b));
    assert!(left, "{:?}", sim.nodes[&a].events);
}

#[test]
fn when_the_committer_vanishes_the_next_leaf_takes_over_within_five_seconds() {
    for seed in 0..3 {
        let mut sim = Sim::new();
        sim.seed = seed * 50;
        let (host, others) = sim.form::<3>();
        let before = sim.epoch(others[0]).unwrap().0;
        sim.node(host).alive = false;
        let took = sim
            .run_until(Duration::from_secs(10), |s| s.agree(&others))
            .expect("the rest agree");
        assert!(took <= Duration::from_secs(5), "seed {seed}: took {took:?}");
        assert!(sim.epoch(others[0]).unwrap().0 > before);
        // Chat keeps working after the takeover.
        let (now, unix_ms) = (sim.now, sim.unix_ms());
        sim.node(others[2])
            .machine
            .send_chat(now, unix_ms, "still here")
            .unwrap();
        sim.drain(others[2]);
        sim.run_for(Duration::from_millis(500));
        assert_eq!(sim.chats(others[0]), vec!["still here".to_owned()]);
    }
}

#[test]
fn the_committer_vanishing_mid_commit_does_not_split_the_group() {
    let mut sim = Sim::new();
    let (host, others) = sim.form::<3>();
    // A new joiner makes the host commit; the host dies right after sending phase 1.
    let late = sim.joiner(1, host);
    for _ in 0..1000 {
        sim.step();
        if sim.nodes[&host]
            .sent
            .iter()
            .any(|r| matches!(r, Request::Commit { .. }))
        {
            break;
        }
    }
    sim.node(host).alive = false;
    let survivors: Vec<PeerId> = others.iter().copied().chain([late]).collect();
    sim.run_until(Duration::from_secs(20), |s| s.agree(&survivors))
        .expect("the survivors (with the late joiner) agree");
}

#[test]
fn two_members_who_both_believe_they_commit_converge() {
    for seed in 0..3 {
        let mut sim = Sim::new();
        sim.seed = seed * 10;
        let (host, [a, b, c]) = sim.form();
        let everyone = [host, a, b, c];
        // Partition: `a` can no longer hear the host, so `a` believes it commits (leaf 1),
        // while the host still commits for the others. Then the partition heals.
        sim.cut.insert((host, a));
        sim.run_for(Duration::from_secs(4));
        sim.cut.clear();
        // Whoever lost is removed and joins again: in the end all four agree.
        let converged = sim.run_until(Duration::from_secs(30), |s| s.agree(&everyone));
        assert!(
            converged.is_some(),
            "seed {seed}: no convergence; epochs {:?}",
            everyone.map(|p| sim.epoch(p))
        );
    }
}

#[test]
fn a_kicked_member_cannot_read_what_follows() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    sim.kick(host, b);
    let took = sim
        .run_until(Duration::from_secs(5), |s| s.agree(&[host, a]))
        .expect("kick committed");
    assert!(
        took < Duration::from_secs(1),
        "kick to new epoch took {took:?}"
    );
    sim.run_for(Duration::from_millis(200));
    assert!(sim.nodes[&b].events.contains(&MeetingEvent::Removed {
        reason: LeaveReason::Kicked
    }));
    assert_eq!(sim.nodes[&b].machine.phase(), Phase::Removed);
    // Messages sent after the kick, fed to the kicked member, do not decrypt.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    let message = sim.chat_message(host, "after the kick");
    let kicked = sim.node(b);
    kicked.machine.phase = Phase::Member; // even a modified client that ignores its removal
    let response = kicked
        .machine
        .handle_request(now, unix_ms, host, group_message(message));
    assert!(!matches!(response, Response::Nack { .. }));
    assert!(
        sim.chats(b).is_empty(),
        "the kicked member read a message sent after its removal"
    );
    // A non-host member's kick is refused by policy while the host is present.
    let now = sim.now;
    assert!(
        sim.node(a).machine.kick(now, host).is_err(),
        "only the host may remove members"
    );
    sim.drain(a);
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.agree(&[host, a]),
        "the host was not removed by a non-host"
    );
}

#[test]
fn a_goodbye_removes_the_member_with_reason_left() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    sim.node(b).machine.leave();
    sim.drain(b);
    sim.run_until(Duration::from_secs(3), |s| s.agree(&[host, a]))
        .expect("removed");
    assert!(sim.nodes[&a].events.iter().any(|e| matches!(e, MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::Left, .. } if *peer_id == b)));
    assert!(!sim.providers.contains(&b));
}

#[test]
fn a_restarted_member_rejoins_with_a_new_leaf() {
    let mut sim = Sim::new();
    let (host, a, identity, b) = sim.form_with_restartable();
    // A line before the restart: the host's stream to `a` is under way.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    sim.node(host)
        .machine
        .send_chat(now, unix_ms, "before")
        .unwrap();
    sim.drain(host);
    sim.run_for(Duration::from_secs(1));
    // `a` restarts: same identity, fresh state, joins again before anyone timed it out.
    sim.forget(a);
    sim.joiner_with(&identity, 1, host, Some(host));
    sim.run_until(Duration::from_secs(10), |s| s.agree(&[host, a, b]))
        .expect("rejoined");
    // The host's stream to the new `a` starts over: its next line arrives at once.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    sim.node(host)
        .machine
        .send_chat(now, unix_ms, "after")
        .unwrap();
    sim.drain(host);
    sim.run_until(Duration::from_secs(2), |s| s.chats(a) == ["after"])
        .expect("the restarted member reads the host's next line at once");
    // The replacement is committed once: no commit storm afterwards (regression: the new
    // leaf can reuse the old leaf index).
    let settled = sim.epoch(host).unwrap().0;
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.epoch(host).unwrap().0,
        settled,
        "epochs kept changing after the rejoin"
    );
    assert!(sim.agree(&[host, a, b]));
}

#[test]
fn a_tampered_group_message_is_rejected_counted_and_harmless() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    let message = sim.chat_message(host, "original");
    let mut tampered = message.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let response = sim.request(a, host, group_message(tampered));
    assert_eq!(response, Response::Ack, "dropped, not retried");
    assert_eq!(sim.nodes[&a].machine.stats().group_messages_rejected, 1);
    assert!(sim.chats(a).is_empty());
    // Garbage is rejected the same way, and the member carries on.
    let response = sim.request(a, host, group_message(vec![0xff; 40]));
    assert_eq!(response, Response::Ack);
    assert_eq!(sim.nodes[&a].machine.stats().group_messages_rejected, 2);
    sim.request(a, host, group_message(message));
    sim.drain(a);
    assert_eq!(sim.chats(a), vec!["original".to_owned()]);
}

#[test]
fn a_member_that_missed_a_confirmation_catches_up_by_joining_again() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    // A newcomer makes the host commit; the confirmation to `b` is lost on the way.
    let c = sim.joiner(1, host);
    let mut diverged = false;
    for _ in 0..5000 {
        sim.queue.retain(|(_, p)| !matches!(p, Packet::Request { to, request: Request::Confirm { .. }, .. } if *to == b));
        sim.step();
        let (theirs, ours) = (sim.epoch(host).map(|e| e.0), sim.epoch(b).map(|e| e.0));
        if theirs > ours && ours.is_some() {
            diverged = true;
            break;
        }
    }
    assert!(diverged, "b fell behind the host");
    sim.run_until(Duration::from_secs(20), |s| s.agree(&[host, a, b, c]))
        .expect("b caught up");
}

/// The committer (the host, leaf 0) is killed and comes back at once with a new leaf, while
/// the others still count its old leaf alive: whoever commits its replacement, everybody
/// ends in one group. (A system run once ended with one member on another branch after a
/// committer's SIGKILL and rejoin; not reproduced here, over 20 timings.)
#[test]
fn a_committer_that_restarts_at_once_rejoins_without_splitting_the_group() {
    for seed in 0..20u64 {
        let mut sim = Sim::new();
        sim.seed = seed * 100;
        let identity = Identity::generate();
        let host = sim.host_with(&identity);
        let a = sim.joiner(1, host);
        let b = sim.joiner(1, host);
        sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b]))
            .expect("group formed");
        sim.run_for(Duration::from_millis(seed * 37 % 1000));
        sim.forget(host);
        sim.joiner_with(&identity, 1, a, Some(host));
        let greet_b = seed % 2 == 0;
        if greet_b {
            sim.greet(host, b);
        }
        sim.run_until(Duration::from_secs(20), |s| s.agree(&[host, a, b]))
            .unwrap_or_else(|| {
                let epochs: Vec<_> = [host, a, b].iter().map(|p| sim.epoch(*p)).collect();
                panic!("seed {seed}: no agreement: {epochs:?}")
            });
    }
}

/// A joiner's second hello (a fresh key package, sent before the first one's welcome came)
/// reaches the committer after the joiner is in: the committer replaces the joiner's leaf
/// with that package's. The joiner is not removed: it takes the new leaf's welcome.
#[test]
fn a_late_hello_of_a_joiner_that_is_in_replaces_its_leaf_without_removing_it() {
    let mut sim = Sim::new();
    let host = sim.host();
    let member = sim.joiner(1, host);
    let joiner = sim.joiner(1, host);
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    {
        let machine = &mut sim.node(joiner).machine;
        machine.mls.key_package = None;
        machine.send_hello(now, unix_ms, host, vec![]);
    }
    sim.drain(joiner);
    let late = sim.hold_hello(joiner, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, member, joiner]))
        .expect("the joiner is in with its first key package");
    let (epoch, _) = sim.epoch(joiner).expect("an epoch");
    sim.release(joiner, host, late);
    sim.run_until(Duration::from_secs(5), |s| {
        s.epoch(host).is_some_and(|(e, _)| e > epoch) && s.agree(&[host, member, joiner])
    })
    .expect("the joiner is in again with its later key package");
    assert_eq!(sim.nodes[&joiner].machine.phase(), Phase::Member);
    assert!(
        !sim.nodes[&joiner]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::Removed { .. })),
        "the joiner was never told it is removed"
    );
    assert_eq!(
        sim.members(host).len(),
        2,
        "the host lists two others, once each"
    );
}
