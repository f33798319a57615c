//! `conclave demo` (the README's main job) runs to completion and tells the whole story.

use std::process::Command;

use conclave_tests::bin;

#[test]
fn the_demo_runs_a_whole_meeting() {
    let output = Command::new(bin("conclave"))
        .args(["--json", "demo", "--seconds", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for expected in [
        "relay",
        "meeting",
        "joined",
        "security_code",
        "chat",
        "kicked",
        "vanished",
        "summary",
    ] {
        assert!(names.contains(&expected), "missing {expected} in {names:?}");
    }
    let epochs: Vec<u64> = events
        .iter()
        .filter(|e| e["epoch"].is_u64())
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "each membership change is a new epoch: {epochs:?}"
    );
}
