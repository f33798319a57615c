//! `conclave demo` (the README's main job) runs to completion and tells the whole story,
//! and the recordings prove that everybody heard everybody else.

use std::process::Command;

use conclave_tests::bin;

#[test]
fn the_demo_runs_a_whole_encrypted_audio_meeting() {
    let output = Command::new(bin("conclave"))
        .args(["--json", "demo", "--seconds", "1"])
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
        "late_joiner",
        "kicked",
        "recording",
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
    let recordings: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "recording")
        .collect();
    assert_eq!(
        recordings.len(),
        3,
        "the three remaining participants recorded"
    );
    for recording in recordings {
        let heard: Vec<&str> = recording["heard"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h.as_str())
            .collect();
        let me = recording["name"].as_str().unwrap();
        let others: Vec<&str> = ["Ada", "Grace", "Barbara"]
            .into_iter()
            .filter(|n| *n != me)
            .collect();
        for other in others {
            assert!(
                heard.contains(&other),
                "{me} did not hear {other}: {recording}"
            );
        }
        assert!(std::path::Path::new(recording["wav"].as_str().unwrap()).exists());
    }
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    let _ = std::fs::remove_dir_all(summary["recordings"].as_str().unwrap());
}
