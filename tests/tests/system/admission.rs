//! Admission: a wrong secret is refused with exit code 3 and learns nothing; a malformed
//! invite exits 2 at once.

use std::time::{Duration, Instant};

use conclave_tests::{PATIENCE, Proc, peer_id_of, start_host, start_relay};

/// Replaces the invite's secret with another well-formed one.
fn tamper_secret(invite: &str) -> String {
    let start = invite.find("secret=").unwrap() + "secret=".len();
    let end = start + 43;
    let original = &invite[start..end];
    // 42 free characters plus a last one whose unused low bits are zero, as base64url needs.
    let forged = if original.starts_with('A') {
        format!("{}A", "B".repeat(42))
    } else {
        "A".repeat(43)
    };
    format!("{}{}{}", &invite[..start], forged, &invite[end..])
}

#[test]
fn a_tampered_secret_exits_3_and_the_host_never_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let forged = tamper_secret(&invite);
    assert_ne!(forged, invite);

    let mut intruder = Proc::conclave("X", &dir.path().join("X"), &["join", &forged]).unwrap();
    let intruder_id = peer_id_of(&mut intruder).unwrap();
    let status = intruder.wait_exit(PATIENCE).unwrap();
    assert_eq!(status.code(), Some(3), "join refused exits 3");
    let errors: Vec<_> = intruder
        .seen
        .iter()
        .filter(|v| v["event"] == "error")
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one clear sentence: {:?}",
        intruder.seen
    );
    assert_eq!(errors[0]["kind"], "join_refused");
    assert!(
        intruder
            .seen
            .iter()
            .all(|v| v["event"] != "member_joined" && v["event"] != "joined"),
        "the intruder learns no member: {:?}",
        intruder.seen
    );

    // A real member still gets in, and the host never listed the intruder.
    let mut friend = Proc::conclave("B", &dir.path().join("B"), &["join", &invite]).unwrap();
    friend.wait_event("joined", PATIENCE).unwrap();
    host.wait_event("member_joined", PATIENCE).unwrap();
    host.drain_for(Duration::from_millis(500));
    assert!(
        !host.members().contains(&intruder_id),
        "host listed the intruder: {:?}",
        host.seen
    );
    assert_eq!(host.members().len(), 1);
}

#[test]
fn a_malformed_invite_exits_2_immediately_with_the_defect_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("conclave:v1/nothex?secret=x", "meeting id"),
        ("https://example.org/meeting", "must start with"),
        (
            "conclave:v9/00000000000000000000000000000000?secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "version",
        ),
        ("conclave:v1/00000000000000000000000000000000", "no secret"),
    ];
    for (invite, defect) in cases {
        let started = Instant::now();
        let mut joiner = Proc::conclave("bad", &dir.path().join("bad"), &["join", invite]).unwrap();
        let status = joiner.wait_exit(PATIENCE).unwrap();
        assert_eq!(status.code(), Some(2), "{invite}");
        assert!(started.elapsed() < Duration::from_secs(5), "immediately");
        let error = joiner
            .seen
            .iter()
            .find(|v| v["event"] == "error")
            .unwrap_or_else(|| panic!("an error event for {invite}: {:?}", joiner.text));
        assert_eq!(error["kind"], "bad_invite");
        assert!(
            error["message"].as_str().unwrap().contains(defect),
            "{error} names {defect}"
        );
    }
}
