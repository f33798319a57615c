//! Application messages: chat, media signals, muted state.

use super::*;

#[test]
fn chat_arrives_exactly_once_in_order_at_every_member() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    for i in 0..5 {
        sim.node(a)
            .machine
            .send_chat(now, unix_ms, &format!("line {i}"))
            .unwrap();
    }
    sim.drain(a);
    sim.run_for(Duration::from_secs(1));
    let expected: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    assert_eq!(sim.chats(host), expected);
    assert_eq!(sim.chats(b), expected);
    assert!(sim.chats(a).is_empty(), "no echo to the sender");
}

#[test]
fn a_media_signal_that_cannot_be_delivered_is_retried_and_arrives_once() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    // The path to `a` is down when the offer is sent (the first attempts fail), and back
    // before the retries run out.
    sim.cut.insert((host, a));
    sim.node(host)
        .machine
        .send_signal(a, b"offer".to_vec())
        .unwrap();
    sim.drain(host);
    sim.run_for(Duration::from_millis(700));
    assert!(
        sim.node(a).signals.is_empty(),
        "nothing got through the cut"
    );
    sim.cut.clear();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.node(a).signals, vec![(host, b"offer".to_vec())]);
}

#[test]
fn a_pasted_document_arrives_whole_through_a_partition_and_the_sender_sees_it_delivered() {
    let mut sim = Sim::new();
    let (host, [a, b, c]) = sim.form();
    let lines: Vec<String> = (0..300).map(|i| format!("paragraph {i}")).collect();
    // `a` cannot be reached for two seconds while the paste goes out.
    sim.cut.insert((host, a));
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    for line in &lines {
        sim.node(host)
            .machine
            .send_chat(now, unix_ms, line)
            .unwrap();
    }
    sim.drain(host);
    sim.run_for(Duration::from_secs(2));
    sim.cut.clear();
    let last = lines.last().unwrap().clone();
    sim.run_until(Duration::from_secs(60), |s| {
        [a, b, c].iter().all(|p| s.chats(*p).last() == Some(&last))
    })
    .unwrap_or_else(|| {
        panic!(
            "stats {:?} counts {:?} pending {} events {:?}",
            sim.nodes[&a].machine.stats(),
            [a, b, c].map(|p| sim.chats(p).len()),
            sim.nodes[&host].machine.chat_pending(),
            sim.nodes[&host]
                .events
                .iter()
                .filter(|e| !matches!(
                    e,
                    MeetingEvent::ChatSent { .. } | MeetingEvent::ChatDelivered { .. }
                ))
                .collect::<Vec<_>>()
        )
    });
    for peer in [a, b, c] {
        assert_eq!(sim.chats(peer), lines, "{peer}: lost, doubled or reordered");
    }
    sim.run_for(Duration::from_secs(2)); // the last acknowledgements
    let events = &sim.nodes[&host].events;
    let delivered = events
        .iter()
        .filter(|e| matches!(e, MeetingEvent::ChatDelivered { .. }))
        .count();
    assert_eq!(delivered, lines.len());
    assert_eq!(sim.nodes[&host].machine.chat_pending(), 0);
    // One length limit, in bytes, refused whole at the sender.
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    let err = sim
        .node(host)
        .machine
        .send_chat(now, unix_ms, &"é".repeat(2049))
        .unwrap_err();
    assert!(matches!(
        err,
        GroupError::ChatTooLong {
            len: 4098,
            max: 4096
        }
    ));
}

/// The `MemberMuted` events `peer` reported, in order.
fn muted_events(sim: &Sim, peer: PeerId) -> Vec<(PeerId, bool)> {
    sim.nodes[&peer]
        .events
        .iter()
        .filter_map(|e| match e {
            MeetingEvent::MemberMuted { peer_id, muted } => Some((*peer_id, *muted)),
            _ => None,
        })
        .collect()
}

/// Makes `peer` mute or unmute and returns the MLS messages it sent (not delivered).
fn state_messages(sim: &mut Sim, peer: PeerId, muted: bool) -> Vec<(PeerId, Vec<u8>)> {
    sim.node(peer).machine.set_muted(muted);
    std::iter::from_fn(|| sim.node(peer).machine.poll_output())
        .filter_map(|o| match o {
            Output::Send {
                to,
                request: Request::Group { message, .. },
                ..
            } => Some((to, message)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_members_mute_reaches_everyone_and_late_joiners_learn_it() {
    let mut sim = Sim::new();
    let (host, [a]) = sim.form();
    sim.node(a).machine.set_muted(true);
    sim.drain(a);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(muted_events(&sim, host), vec![(a, true)]);
    assert!(sim.nodes[&host].machine.is_member_muted(&a));
    // Muting twice changes nothing and sends nothing.
    sim.node(a).machine.set_muted(true);
    assert!(sim.node(a).machine.poll_output().is_none());

    // A late joiner learns the state; the others are not told again.
    let b = sim.joiner(1, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b]))
        .expect("b joined");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(muted_events(&sim, b), vec![(a, true)]);
    assert_eq!(muted_events(&sim, host), vec![(a, true)], "no repeat");
    assert!(muted_events(&sim, a).is_empty(), "nobody else muted");

    // Unmuting reaches both.
    sim.node(a).machine.set_muted(false);
    sim.drain(a);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(muted_events(&sim, host), vec![(a, true), (a, false)]);
    assert_eq!(muted_events(&sim, b), vec![(a, true), (a, false)]);

    // Someone muted before entering the group is announced as soon as it is in.
    let identity = Identity::generate();
    let c = identity.peer_id();
    sim.add_joiner(c, MlsIdentity::new(&identity), "c", 1, Some(host));
    sim.node(c).machine.set_muted(true);
    sim.greet(c, host);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, a, b, c]))
        .expect("c joined");
    sim.run_for(Duration::from_secs(1));
    for peer in [host, a, b] {
        assert!(
            muted_events(&sim, peer).contains(&(c, true)),
            "{peer} did not learn that c is muted"
        );
    }
}

#[test]
fn mute_announcements_from_non_members_or_forged_ones_are_ignored() {
    let mut sim = Sim::new();
    let (host, [a, b]) = sim.form();

    // A member passing on another member's announcement as its own: refused (the MLS
    // sender must be the peer on the connection).
    let sent = state_messages(&mut sim, a, true);
    let copy = |to: PeerId| {
        sent.iter()
            .find(|(t, _)| *t == to)
            .map(|(_, m)| m.clone())
            .expect("a told every member")
    };
    let (to_host, to_b) = (copy(host), copy(b));
    let group = |message: Vec<u8>| group_message(message);
    let rejected = sim.nodes[&b].machine.stats().group_messages_rejected;
    sim.request(b, host, group(to_host));
    sim.drain(b);
    assert_eq!(
        sim.nodes[&b].machine.stats().group_messages_rejected,
        rejected + 1
    );
    // Tampered: refused too.
    let mut tampered = to_b.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    sim.request(b, a, group(tampered));
    sim.drain(b);
    assert_eq!(
        sim.nodes[&b].machine.stats().group_messages_rejected,
        rejected + 2
    );
    assert!(muted_events(&sim, b).is_empty(), "nothing forged counted");
    assert!(!sim.nodes[&b].machine.is_member_muted(&a));
    assert!(!sim.nodes[&b].machine.is_member_muted(&host));
    // The genuine one counts, once; a replay of it does not count again.
    for _ in 0..2 {
        sim.request(b, a, group(to_b.clone()));
        sim.drain(b);
    }
    assert_eq!(muted_events(&sim, b), vec![(a, true)]);

    // A member removed from the group is no longer heard, even with an announcement it
    // made while still a member: a unmutes (not delivered yet), is kicked, then its
    // announcement arrives.
    let unmute = state_messages(&mut sim, a, false);
    sim.kick(host, a);
    sim.run_until(Duration::from_secs(5), |s| s.agree(&[host, b]))
        .expect("kick committed");
    for (to, message) in unmute {
        let response = sim.request(to, a, group(message));
        assert_eq!(response, Response::NotMember);
        sim.drain(to);
    }
    assert_eq!(
        muted_events(&sim, b),
        vec![(a, true)],
        "a's unmute came too late"
    );
    // And a stranger's request is answered NotMember, reporting nothing.
    let response = sim.request(b, PeerId::random(), group_message(vec![0; 64]));
    assert_eq!(response, Response::NotMember);
}

#[test]
fn a_line_sent_again_after_its_sender_restarted_is_taken_once() {
    let mut sim = Sim::new();
    let (host, a, identity, b) = sim.form_with_restartable();
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    sim.node(a).machine.send_chat(now, unix_ms, "one").unwrap();
    sim.drain(a);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.chats(host), ["one"]);
    let id = sim.nodes[&a]
        .events
        .iter()
        .find_map(|e| match e {
            MeetingEvent::ChatSent {
                id, resumed: false, ..
            } => Some(*id),
            _ => None,
        })
        .expect("the line was reported sent");
    assert_ne!(id, 0, "every line has an identity");

    // `a` crashes before it learns the line arrived, restarts (same identity, fresh
    // state) and sends the line again under the same identity, then a new one.
    sim.forget(a);
    sim.joiner_with(&identity, 1, host, Some(host));
    sim.run_until(Duration::from_secs(10), |s| s.agree(&[host, a, b]))
        .expect("rejoined");
    let (now, unix_ms) = (sim.now, sim.unix_ms());
    let machine = &mut sim.node(a).machine;
    machine.resume_chat(now, id, unix_ms, "one").unwrap();
    machine.send_chat(now, unix_ms, "two").unwrap();
    sim.drain(a);
    sim.run_for(Duration::from_secs(2));
    for peer in [host, b] {
        assert_eq!(
            sim.chats(peer),
            ["one", "two"],
            "{peer}: taken once, in order"
        );
    }
    let events = &sim.nodes[&a].events;
    assert!(events.iter().any(|e| matches!(
        e,
        MeetingEvent::ChatSent { id: again, resumed: true, .. } if *again == id
    )));
    let delivered = events
        .iter()
        .filter(|e| matches!(e, MeetingEvent::ChatDelivered { .. }))
        .count();
    assert_eq!(
        delivered, 2,
        "the resumed line and the new one both reach everyone"
    );
}
