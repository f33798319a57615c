//! The MLS group across real processes: equal epochs and security codes, chat delivered
//! exactly once, committer takeover after SIGKILL, kicks, and rejoining after a restart.

use std::time::{Duration, Instant};

use conclave_tests::{Proc, peer_id_of, start_host, start_relay};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// The last `epoch`/`joined` event's (epoch, security code) a process reported.
fn last_epoch(proc: &Proc) -> Option<(u64, String)> {
    proc.seen
        .iter()
        .rev()
        .find(|v| v["event"] == "epoch" || v["event"] == "joined")
        .map(|v| {
            (
                v["epoch"].as_u64().unwrap_or(0),
                v["security_code"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// Waits until every process reports the same epoch with `members` members in it.
fn wait_agreement(procs: &mut [&mut Proc], members: usize, limit: Duration) -> (u64, String) {
    let deadline = Instant::now() + limit;
    loop {
        for proc in procs.iter_mut() {
            proc.drain_for(Duration::from_millis(50));
        }
        let epochs: Vec<Option<(u64, String)>> = procs.iter().map(|p| last_epoch(p)).collect();
        let sizes_ok = procs.iter().all(|p| p.members().len() == members - 1);
        if sizes_ok && epochs[0].is_some() && epochs.iter().all(|e| *e == epochs[0]) {
            return epochs[0].clone().expect("checked");
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {} ---\n{}", p.label, p.stderr_tail()))
                .collect();
            panic!(
                "no agreement within {limit:?}: {epochs:?}\n{}",
                logs.join("\n")
            );
        }
    }
}

fn chats(proc: &Proc) -> Vec<(String, String)> {
    proc.seen
        .iter()
        .filter(|v| v["event"] == "chat" && v["history"] != true)
        .map(|v| {
            (
                v["from"].as_str().unwrap_or_default().to_owned(),
                v["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn join(dir: &std::path::Path, label: &str, invite: &str) -> Proc {
    Proc::conclave(label, &dir.join(label), &["join", invite]).unwrap()
}

#[test]
fn five_members_share_one_epoch_and_chat_arrives_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let mut joiners: Vec<Proc> = ["B", "C", "D", "E"]
        .iter()
        .map(|l| join(dir.path(), l, &invite))
        .collect();
    let b_id = peer_id_of(&mut joiners[0]).unwrap();
    {
        let mut all: Vec<&mut Proc> = std::iter::once(&mut host)
            .chain(joiners.iter_mut())
            .collect();
        let (epoch, code) = wait_agreement(&mut all, 5, LIMIT);
        assert!(epoch >= 1 && code.len() == 23, "epoch {epoch} code {code}");
    }
    joiners[0].send_line("hello from B").unwrap();
    joiners[0].send_line("second line").unwrap();
    let expected = vec![
        (b_id.clone(), "hello from B".to_owned()),
        (b_id.clone(), "second line".to_owned()),
    ];
    for proc in std::iter::once(&mut host).chain(joiners.iter_mut().skip(1)) {
        proc.wait_chat("second line", LIMIT).unwrap();
        proc.drain_for(Duration::from_millis(300));
        assert_eq!(
            chats(proc),
            expected,
            "{} got each line once, in order",
            proc.label
        );
    }
    assert!(chats(&joiners[0]).is_empty(), "no echo to the sender");
}

/// Someone pastes a document: 500 lines written at once by one member of a four-person
/// meeting arrive exactly once and in order at every other member, and the writer sees each
/// delivered; a line of 4,096 bytes of two-byte characters arrives whole; a longer line is
/// refused at the writer with a clear error, not cut.
#[test]
fn five_hundred_lines_at_once_arrive_exactly_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let mut joiners: Vec<Proc> = ["B", "C", "D"]
        .iter()
        .map(|l| join(dir.path(), l, &invite))
        .collect();
    {
        let mut all: Vec<&mut Proc> = std::iter::once(&mut host)
            .chain(joiners.iter_mut())
            .collect();
        wait_agreement(&mut all, 4, LIMIT);
    }
    let lines: Vec<String> = (0..500)
        .map(|i| format!("line {i:03} of the paste"))
        .collect();
    let long = "é".repeat(2048); // 4,096 bytes
    let too_long = "é".repeat(2500); // 5,000 bytes
    let mut paste = lines.join("\n");
    paste.push('\n');
    paste.push_str(&long);
    paste.push('\n');
    paste.push_str(&too_long);
    host.send_line(&paste).unwrap();
    let error = host
        .wait_for(LIMIT, "the over-long line refused", |v| {
            v["event"] == "error" && v["kind"] == "chat"
        })
        .unwrap();
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("5000 bytes") && m.contains("4096")),
        "{error}"
    );
    let last = lines.len() as u64 + 1; // the 4,096-byte line is number 501
    host.wait_for(Duration::from_secs(60), "every line delivered", |v| {
        v["event"] == "chat_delivered" && v["id"] == last
    })
    .unwrap();
    for joiner in &mut joiners {
        joiner.wait_chat(&long, Duration::from_secs(60)).unwrap();
        joiner.drain_for(Duration::from_millis(500));
        let got: Vec<String> = chats(joiner).into_iter().map(|(_, t)| t).collect();
        let mut want = lines.clone();
        want.push(long.clone());
        assert_eq!(
            got.len(),
            want.len(),
            "{}: {} lines; lagged: {:?}; first lines {:?}; {}",
            joiner.label,
            got.len(),
            joiner
                .seen
                .iter()
                .filter(|v| v["event"] == "lagged")
                .collect::<Vec<_>>(),
            &got[..got.len().min(3)],
            joiner.stderr_tail()
        );
        assert!(
            got == want,
            "{}: lines out of order or altered",
            joiner.label
        );
    }
    // Lines settle in any order: wait until every one has.
    let count = |host: &Proc, name: &str| host.seen.iter().filter(|v| v["event"] == name).count();
    let deadline = Instant::now() + LIMIT;
    while count(&host, "chat_delivered") + count(&host, "chat_failed") < 501
        && Instant::now() < deadline
    {
        host.drain_for(Duration::from_millis(200));
    }
    assert_eq!(
        (count(&host, "chat_delivered"), count(&host, "chat_failed")),
        (501, 0)
    );
}

#[test]
fn killing_the_committer_leaves_an_agreeing_group_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let mut rest: Vec<Proc> = ["B", "C", "D"]
        .iter()
        .map(|l| join(dir.path(), l, &invite))
        .collect();
    {
        let mut all: Vec<&mut Proc> = std::iter::once(&mut host).chain(rest.iter_mut()).collect();
        wait_agreement(&mut all, 4, LIMIT);
    }
    let before = last_epoch(&rest[0]).unwrap().0;
    host.kill9(); // the host holds leaf 0: it is the committer
    let killed = Instant::now();
    let mut survivors: Vec<&mut Proc> = rest.iter_mut().collect();
    let (epoch, _) = wait_agreement(&mut survivors, 3, Duration::from_secs(5));
    eprintln!(
        "committer takeover: new epoch agreed {} ms after SIGKILL",
        killed.elapsed().as_millis()
    );
    assert!(epoch > before);
    rest[1].send_line("after the takeover").unwrap();
    for index in [0, 2] {
        rest[index].wait_chat("after the takeover", LIMIT).unwrap();
    }
    // The takeover commit (the host timed out) passed every member's commit rules.
    for m in &rest {
        let alerts: Vec<&Value> = m.seen.iter().filter(|v| v["event"] == "alert").collect();
        assert!(alerts.is_empty(), "{}: {alerts:?}", m.label);
    }
}

#[test]
fn a_kicked_member_is_out_and_hears_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let Trio {
        _relay,
        invite: _,
        mut host,
        mut b,
        mut c,
        c_id,
    } = trio(dir.path());
    // A non-host cannot kick while the host is present: refused at once, in one sentence.
    b.send_line(&format!("/kick {c_id}")).unwrap();
    let refused = b.wait_event("error", LIMIT).unwrap();
    assert_eq!(refused["kind"], "kick");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("only the host may remove members")),
        "{refused}"
    );
    b.drain_for(Duration::from_secs(1));
    assert_eq!(host.members().len(), 2, "a non-host's kick is not honoured");
    let kicked_at = Instant::now();
    host.send_line(&format!("/kick {c_id}")).unwrap();
    let left = c.wait_event("left", LIMIT).unwrap();
    assert_eq!(left["reason"], "kicked");
    assert_eq!(c.wait_exit(LIMIT).unwrap().code(), Some(0));
    let gone = b
        .wait_for(LIMIT, "member_left C", |v: &Value| {
            v["event"] == "member_left" && v["peer_id"] == c_id.as_str()
        })
        .unwrap();
    assert_eq!(gone["reason"], "kicked");
    wait_agreement(&mut [&mut host, &mut b], 2, LIMIT);
    eprintln!(
        "kick to new epoch at every member: {} ms",
        kicked_at.elapsed().as_millis()
    );
    host.send_line("after the kick").unwrap();
    b.wait_chat("after the kick", LIMIT).unwrap();
    assert!(c.seen.iter().all(|v| v["text"] != "after the kick"));
}

/// A relay, a host (A) and members B and C that agree on the group.
struct Trio {
    _relay: Proc,
    invite: String,
    host: Proc,
    b: Proc,
    c: Proc,
    c_id: String,
}

fn trio(dir: &std::path::Path) -> Trio {
    let (relay, relay_addr) = start_relay(dir).unwrap();
    let (mut host, invite, _) = start_host(dir, "A", &["--relay", &relay_addr]).unwrap();
    let mut b = join(dir, "B", &invite);
    let mut c = join(dir, "C", &invite);
    let c_id = peer_id_of(&mut c).unwrap();
    wait_agreement(&mut [&mut host, &mut b, &mut c], 3, LIMIT);
    Trio {
        _relay: relay,
        invite,
        host,
        b,
        c,
        c_id,
    }
}

/// `proc` quits (it leaves, as a user closing the app) and starts again, joining with
/// `invite` (same identity and data directory).
fn restart(proc: &mut Proc, dir: &std::path::Path, invite: &str) {
    proc.close_stdin();
    assert_eq!(proc.wait_exit(LIMIT).unwrap().code(), Some(0));
    *proc = join(dir, &proc.label.clone(), invite);
}

/// A kick locks the door: the kicked member's invite (and every invite sent before) is
/// refused, the others get a new invite that works, and the ban survives a restart of every
/// remaining member — a remaining member may restart with the old invite (its store knows
/// the meeting moved on), the kicked one may not even with the new one.
#[test]
fn after_a_kick_the_old_invite_is_refused_the_new_one_works_and_the_ban_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let Trio {
        _relay,
        invite,
        mut host,
        mut b,
        mut c,
        c_id,
    } = trio(dir.path());
    host.send_line(&format!("/kick {c_id}")).unwrap();
    assert_eq!(c.wait_event("left", LIMIT).unwrap()["reason"], "kicked");
    assert_eq!(c.wait_exit(LIMIT).unwrap().code(), Some(0));
    // The host and the bystander are given the new invite.
    let rotated = |v: &Value| v["event"] == "invite" && v["rotated"] == true;
    let new_invite = host.wait_for(LIMIT, "the new invite", rotated).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_invite, invite);
    b.wait_for(LIMIT, "the new invite at the bystander", rotated)
        .unwrap();
    wait_agreement(&mut [&mut host, &mut b], 2, LIMIT);

    // The kicked member's invite no longer gets anyone in: not it, not a newcomer.
    for label in ["C", "D"] {
        let mut refused = join(dir.path(), label, &invite);
        assert_eq!(
            refused.wait_exit(LIMIT).unwrap().code(),
            Some(3),
            "{label} with the old invite"
        );
    }
    // The new one does.
    let mut e = join(dir.path(), "E", &new_invite);
    wait_agreement(&mut [&mut host, &mut b, &mut e], 3, LIMIT);

    // Every remaining member quits and starts again in turn (the two who saw the kick with
    // the old invite); the meeting stays together.
    restart(&mut b, dir.path(), &invite);
    wait_agreement(&mut [&mut host, &mut b, &mut e], 3, LIMIT);
    restart(&mut e, dir.path(), &new_invite);
    wait_agreement(&mut [&mut host, &mut b, &mut e], 3, LIMIT);
    restart(&mut host, dir.path(), &invite);
    wait_agreement(&mut [&mut host, &mut b, &mut e], 3, LIMIT);
    // The kicked member, even holding the new invite, is refused by every one of them.
    let mut banned = join(dir.path(), "C", &new_invite);
    assert_eq!(
        banned.wait_exit(LIMIT).unwrap().code(),
        Some(3),
        "the kicked member with the new invite"
    );
    assert_eq!(host.members().len(), 2, "nobody let the kicked member in");
}

#[test]
fn a_restarted_member_rejoins_and_sees_the_chat_history() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let mut b = join(dir.path(), "B", &invite);
    wait_agreement(&mut [&mut host, &mut b], 2, LIMIT);
    host.send_line("remember this").unwrap();
    b.wait_chat("remember this", LIMIT).unwrap();
    b.kill9();
    drop(b);
    let mut again = join(dir.path(), "B", &invite);
    // The host may still hold the killed process's QUIC connection (no reset on SIGKILL)
    // until QUIC's 10 s idle timeout, and a request sent on it waits that long: allow it.
    let history = again
        .wait_for(LIMIT * 2, "history", |v| {
            v["event"] == "chat" && v["history"] == true && v["text"] == "remember this"
        })
        .unwrap();
    assert_eq!(history["name"], "A");
    wait_agreement(&mut [&mut host, &mut again], 2, LIMIT);
    host.send_line("welcome back").unwrap();
    again.wait_chat("welcome back", LIMIT).unwrap();
}

#[test]
fn a_lobby_joiner_waits_until_the_host_approves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) =
        start_host(dir.path(), "A", &["--lobby", "--relay", &relay_addr]).unwrap();
    assert!(invite.contains("lobby=1"));
    let mut guest = join(dir.path(), "B", &invite);
    let guest_id = peer_id_of(&mut guest).unwrap();
    guest.wait_event("waiting", LIMIT).unwrap();
    let knock = host.wait_event("lobby", LIMIT).unwrap();
    assert_eq!(knock["peer_id"], guest_id.as_str());
    guest.drain_for(Duration::from_secs(2));
    assert!(
        guest
            .seen
            .iter()
            .all(|v| v["event"] != "joined" && v["event"] != "member_joined"),
        "nothing before approval"
    );
    host.send_line(&format!("/approve {guest_id}")).unwrap();
    guest.wait_event("joined", LIMIT).unwrap();
    wait_agreement(&mut [&mut host, &mut guest], 2, LIMIT);
}

#[test]
fn a_lobby_joiner_that_vanishes_leaves_the_hosts_lobby() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) =
        start_host(dir.path(), "A", &["--lobby", "--relay", &relay_addr]).unwrap();
    let mut guest = join(dir.path(), "B", &invite);
    let guest_id = peer_id_of(&mut guest).unwrap();
    guest.wait_event("waiting", LIMIT).unwrap();
    let knock = host.wait_event("lobby", LIMIT).unwrap();
    assert_eq!(knock["peer_id"], guest_id.as_str());
    // The joiner's process dies without a word: after the lobby expiry (30 s since its last
    // greeting, which it repeats every 5 s) the host is told it is gone.
    guest.kill9();
    let killed = Instant::now();
    let gone = host
        .wait_for(Duration::from_secs(45), "lobby_left B", |v: &Value| {
            v["event"] == "lobby_left" && v["peer_id"] == guest_id.as_str()
        })
        .unwrap();
    let took = killed.elapsed();
    eprintln!("lobby entry expired {} ms after SIGKILL", took.as_millis());
    assert!(
        took > Duration::from_secs(20),
        "expired too early: {took:?}"
    );
    assert_eq!(gone["name"], "B");
    // It can no longer be let in.
    host.send_line(&format!("/approve {guest_id}")).unwrap();
    let refused = host
        .wait_for(LIMIT, "approve error", |v: &Value| {
            v["event"] == "error" && v["kind"] == "approve"
        })
        .unwrap();
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("not waiting in the lobby")),
        "{refused}"
    );
}

/// `member_muted` events of `proc` about `peer`, as the muted flags in order.
fn mutes_of(proc: &Proc, peer: &str) -> Vec<bool> {
    proc.seen
        .iter()
        .filter(|v| v["event"] == "member_muted" && v["peer_id"] == peer)
        .filter_map(|v| v["muted"].as_bool())
        .collect()
}

#[test]
fn a_mute_reaches_every_member_and_a_late_joiner() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, host_id) =
        start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let mut b = join(dir.path(), "B", &invite);
    let b_id = peer_id_of(&mut b).unwrap();
    wait_agreement(&mut [&mut host, &mut b], 2, LIMIT);
    let muted = |id: &str, flag: bool| {
        let id = id.to_owned();
        move |v: &Value| {
            v["event"] == "member_muted" && v["peer_id"] == id.as_str() && v["muted"] == flag
        }
    };

    b.send_line("/mute").unwrap();
    assert_eq!(b.wait_event("muted", LIMIT).unwrap()["muted"], true);
    host.wait_for(LIMIT, "B muted", muted(&b_id, true)).unwrap();

    // A late joiner learns that B is muted.
    let mut c = join(dir.path(), "C", &invite);
    let c_id = peer_id_of(&mut c).unwrap();
    c.wait_for(LIMIT, "B muted, at the joiner", muted(&b_id, true))
        .unwrap();
    wait_agreement(&mut [&mut host, &mut b, &mut c], 3, LIMIT);

    b.send_line("/unmute").unwrap();
    host.wait_for(LIMIT, "B unmuted", muted(&b_id, false))
        .unwrap();
    c.wait_for(LIMIT, "B unmuted, at the joiner", muted(&b_id, false))
        .unwrap();
    for proc in [&mut host, &mut b, &mut c] {
        proc.drain_for(Duration::from_millis(300));
    }
    // Each change once, in order; nobody else reported muted.
    assert_eq!(mutes_of(&host, &b_id), vec![true, false]);
    assert_eq!(mutes_of(&c, &b_id), vec![true, false]);
    for proc in [&host, &b, &c] {
        assert!(mutes_of(proc, &host_id).is_empty() && mutes_of(proc, &c_id).is_empty());
    }
}
