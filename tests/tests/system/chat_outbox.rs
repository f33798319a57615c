//! Chat lines a member wrote that not every member acknowledged survive its crash: after a
//! restart they go out again, and every member has each line exactly once.
//!
//! Three members on a LAN (network namespaces). C's host drops everything for a moment while
//! B writes: A gets the lines, C does not; B is killed (SIGKILL) before C is back, so only
//! B's store still holds them. B restarts on the same data directory and joins again: the
//! lines go out again, C gets each once, and A (which had them already) shows none twice.

use std::time::{Duration, Instant};

use conclave_tests::Proc;
use conclave_tests::netns::{Lan, available};

const LIMIT: Duration = Duration::from_secs(30);
/// Shorter than the liveness window (a 1.5 s drop removes nobody): C stays a member.
const CUT: Duration = Duration::from_millis(1500);

/// Waits until every process lists `others` other members.
fn wait_members(procs: &mut [&mut Proc], others: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !procs.iter().all(|p| p.members().len() == others) {
        assert!(Instant::now() < deadline, "the meeting did not form");
        for proc in procs.iter_mut() {
            proc.drain_for(Duration::from_millis(50));
        }
    }
}

/// The live (not history) chat lines `proc` showed from `name`, in order.
fn lines_from(proc: &Proc, name: &str) -> Vec<String> {
    proc.seen
        .iter()
        .filter(|v| v["event"] == "chat" && v["name"] == name && v["history"] != true)
        .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_crashed_members_unacknowledged_lines_arrive_exactly_once_after_its_restart() {
    assert!(
        available(),
        "this test needs root and iproute2 (ip netns); CI runs as root"
    );
    let lan = Lan::new("co", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = lan.relay(0, dir.path()).unwrap();
    let mut a = lan
        .member(1, dir.path(), "A", &["new", "--relay", &relay_addr])
        .unwrap();
    let invite = a.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut b = lan.member(2, dir.path(), "B", &["join", &invite]).unwrap();
    let mut c = lan.member(3, dir.path(), "C", &["join", &invite]).unwrap();
    wait_members(&mut [&mut a, &mut b, &mut c], 2, LIMIT);

    // C's host falls silent; B writes five lines; A gets them.
    lan.nft(3, "add table inet cut").unwrap();
    for (hook, field) in [("input", "saddr"), ("output", "daddr")] {
        lan.nft(
            3,
            &format!("add chain inet cut {hook} {{ type filter hook {hook} priority 0 ; }}"),
        )
        .unwrap();
        lan.nft(
            3,
            &format!("add rule inet cut {hook} ip {field} 10.77.0.0/24 drop"),
        )
        .unwrap();
    }
    let cut = Instant::now();
    let lines: Vec<String> = (1..=5).map(|i| format!("line {i} of the paste")).collect();
    for line in &lines {
        b.send_line(line).unwrap();
    }
    a.wait_chat(&lines[4], Duration::from_secs(5)).unwrap();
    b.drain_for(Duration::from_millis(200));
    let delivered = b
        .seen
        .iter()
        .filter(|v| v["event"] == "chat_delivered")
        .count();
    assert_eq!(delivered, 0, "C cannot have acknowledged anything");
    // B dies with its lines unacknowledged; C comes back.
    b.kill9();
    drop(b);
    std::thread::sleep(CUT.saturating_sub(cut.elapsed()));
    lan.nft(3, "delete table inet cut").unwrap();
    assert!(
        lines_from(&c, "B").is_empty(),
        "nothing reached C through the cut"
    );

    // B restarts on the same data directory and joins again.
    let mut b = lan.member(2, dir.path(), "B", &["join", &invite]).unwrap();
    let resumed = b
        .wait_for(LIMIT * 2, "the lines sent again", |v| {
            v["event"] == "chat_sent" && v["resumed"] == true && v["text"] == lines[4].as_str()
        })
        .unwrap();
    eprintln!("resumed: {resumed}");
    c.wait_chat(&lines[4], LIMIT).unwrap();
    b.wait_for(LIMIT, "everyone has the last line", |v| {
        v["event"] == "chat_delivered" && v["id"] == resumed["id"]
    })
    .unwrap();
    a.drain_for(Duration::from_secs(1));
    c.drain_for(Duration::from_secs(1));
    assert_eq!(lines_from(&c, "B"), lines, "C: each line once, in order");
    assert_eq!(lines_from(&a, "B"), lines, "A: none twice");
    let resent = b
        .seen
        .iter()
        .filter(|v| v["event"] == "chat_sent" && v["resumed"] == true)
        .count();
    assert_eq!(
        resent,
        lines.len(),
        "every unacknowledged line went out again"
    );
}
