//! Liveness and reconnection: dropped networks, who is cut off, round-trip times.

use super::*;

/// Whether `peer` reported `event`.
fn reported(sim: &Sim, peer: PeerId, event: &MeetingEvent) -> bool {
    sim.nodes[&peer].events.contains(event)
}

#[test]
fn a_member_whose_network_drops_is_removed_and_rejoins_by_itself() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let (before, _) = sim.epoch(b).unwrap();
    sim.offline.insert(b);
    sim.run_until(Duration::from_secs(15), |s| s.agree(&[host, a]))
        .expect("the others removed the member that dropped");
    sim.run_for(Duration::from_secs(10));
    // Cut off, `b` removed nobody (no group of one) and says it is reconnecting.
    assert!(reported(&sim, b, &MeetingEvent::Reconnecting));
    assert_eq!(
        sim.epoch(b).unwrap().0,
        before,
        "the cut-off member committed"
    );
    assert!(
        !sim.nodes[&b]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::MemberLeft { .. })),
        "the cut-off member reported the others gone"
    );
    assert!(sim.nodes[&b].machine.is_reconnecting());
    // The network is back: `b` joins again by itself, same identity, within 5 s.
    sim.offline.remove(&b);
    let took = sim
        .run_until(Duration::from_secs(10), |s| s.agree(&[host, a, b]))
        .expect("rejoined");
    assert!(took <= Duration::from_secs(5), "rejoin took {took:?}");
    assert!(reported(&sim, b, &MeetingEvent::Reconnected));
    assert!(!sim.nodes[&b].machine.is_reconnecting());
}

#[test]
fn in_a_meeting_of_two_the_one_still_online_removes_the_one_that_dropped() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    sim.offline.insert(host);
    sim.run_until(Duration::from_secs(15), |s| s.members(a).is_empty())
        .expect("the member still online removed the host that dropped");
    assert!(sim.nodes[&a].events.iter().any(|e| matches!(
        e,
        MeetingEvent::MemberLeft { peer_id, reason: LeaveReason::TimedOut, .. } if *peer_id == host
    )));
    sim.run_for(Duration::from_secs(5));
    assert!(reported(&sim, host, &MeetingEvent::Reconnecting));
    assert_eq!(sim.members(host), vec![a], "the host forked a group of one");
    sim.offline.remove(&host);
    let took = sim
        .run_until(Duration::from_secs(10), |s| s.agree(&[host, a]))
        .expect("the host is back in");
    assert!(took <= Duration::from_secs(5), "rejoin took {took:?}");
}

#[test]
fn a_drop_shorter_than_the_liveness_window_removes_nobody() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let before = sim.epoch(host).unwrap();
    sim.offline.insert(b);
    sim.run_for(Duration::from_millis(2500));
    sim.offline.remove(&b);
    sim.run_for(Duration::from_secs(10));
    for peer in [host, a, b] {
        assert_eq!(sim.epoch(peer), Some(before), "epoch changed at {peer}");
        assert!(!reported(&sim, peer, &MeetingEvent::Reconnecting));
    }
}

#[test]
fn a_cut_off_member_gives_up_reconnecting_once_the_network_is_back_without_them() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    sim.offline.insert(a);
    sim.run_for(Duration::from_secs(8));
    assert!(sim.nodes[&a].machine.is_reconnecting());
    // The host is gone for good by the time the network returns.
    sim.node(host).alive = false;
    sim.offline.remove(&a);
    sim.run_until(Duration::from_secs(10), |s| s.members(a).is_empty())
        .expect("the vanished host is removed once the network is back");
    assert!(reported(&sim, a, &MeetingEvent::Reconnected));
}

#[test]
fn round_trip_times_are_forgotten_when_a_member_leaves_or_is_removed() {
    let mut sim = Sim::new();
    let (host, [a, b, c]) = sim.form();
    let rtt = Duration::from_millis(80);
    for (at, of) in [(host, a), (host, b), (host, c), (c, a), (c, b)] {
        sim.node(at).machine.set_rtt(of, rtt);
    }
    // `a` says goodbye, the host removes `b`.
    sim.node(a).machine.leave();
    sim.drain(a);
    sim.kick(host, b);
    sim.run_until(Duration::from_secs(10), |s| s.agree(&[host, c]))
        .expect("a and b are out");
    for at in [host, c] {
        let rtts = &sim.nodes[&at].machine.rtts;
        assert!(
            !rtts.contains_key(&a) && !rtts.contains_key(&b),
            "{at}: a departed member's round-trip time is kept"
        );
    }
    assert_eq!(
        sim.nodes[&host].machine.rtt_of(&c),
        rtt,
        "a member's is kept"
    );
}

/// A member whose control path stalls longer than the liveness window while its media keeps
/// arriving (a transport backing off after a blackout, a circuit down) is reachable over
/// another path: nobody is removed, nobody counts itself cut off. Once its frames stop too,
/// it is removed as usual.
#[test]
fn a_member_whose_control_path_stalls_but_whose_media_flows_is_not_removed() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let before = sim.epoch(host).unwrap();
    sim.cut.insert((b, host));
    sim.cut.insert((b, a));
    for _ in 0..16 {
        sim.run_for(Duration::from_millis(500));
        let now = sim.now;
        for (at, of) in [(host, b), (a, b), (b, host), (b, a)] {
            sim.node(at).machine.heard_over_media(now, of);
        }
    }
    for peer in [host, a, b] {
        assert_eq!(sim.epoch(peer), Some(before), "epoch changed at {peer}");
        assert!(!reported(&sim, peer, &MeetingEvent::Reconnecting));
    }
    // Its media stops as well: the others remove it.
    sim.run_until(Duration::from_secs(15), |s| s.agree(&[host, a]))
        .expect("the member heard over no path was removed");
}

/// A member the group timed out (nobody heard it) learns of it from the commit that removed
/// it: it did not leave and nobody kicked it, so it joins again instead of stopping, and is
/// back once it can be heard.
#[test]
fn a_member_the_group_timed_out_joins_again_when_the_commit_reaches_it() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    sim.silenced.insert((b, host));
    sim.silenced.insert((b, a));
    sim.run_until(Duration::from_secs(15), |s| {
        s.agree(&[host, a]) && !matches!(s.nodes[&b].machine.phase(), Phase::Member)
    })
    .expect("the others timed the silent member out, and it heard of it");
    assert!(
        !sim.nodes[&b]
            .events
            .iter()
            .any(|e| matches!(e, MeetingEvent::Removed { .. })),
        "it stopped as if kicked"
    );
    assert!(matches!(
        sim.nodes[&b].machine.phase(),
        Phase::Joining { .. }
    ));
    sim.silenced.clear();
    sim.run_until(Duration::from_secs(10), |s| s.agree(&[host, a, b]))
        .expect("back in once it can be heard");
}
