//! `conclave id`: a stable identity per data dir, and one process per data dir.

use std::process::Command;

use conclave_tests::{PATIENCE, Proc, bin};

fn id_json(dir: &std::path::Path) -> serde_json::Value {
    let output = Command::new(bin("conclave"))
        .args(["--json", "--insecure-key-file", "--data-dir"])
        .arg(dir)
        .arg("id")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).unwrap();
    let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(value["event"], "identity");
    value
}

#[test]
fn the_same_data_dir_is_the_same_person() {
    let dir = tempfile::tempdir().unwrap();
    let first = id_json(&dir.path().join("a"));
    let second = id_json(&dir.path().join("a"));
    let other = id_json(&dir.path().join("b"));
    assert_eq!(first["peer_id"], second["peer_id"]);
    assert_eq!(first["safety_number"], second["safety_number"]);
    assert_ne!(first["peer_id"], other["peer_id"]);
    let safety = first["safety_number"].as_str().unwrap();
    assert_eq!(safety.len(), 35, "six groups of five digits: {safety}");
}

#[test]
fn a_second_process_on_the_same_data_dir_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    let mut host = Proc::conclave("a", &data, &["new"]).unwrap();
    host.wait_event("invite", PATIENCE).unwrap();
    let output = Command::new(bin("conclave"))
        .args(["--json", "--insecure-key-file", "--data-dir"])
        .arg(&data)
        .arg("id")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let line = String::from_utf8(output.stdout).unwrap();
    let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(value["event"], "error");
    assert!(
        value["message"]
            .as_str()
            .unwrap()
            .contains("in use by another Conclave process"),
        "{value}"
    );
    // The running process is unaffected.
    host.close_stdin();
    assert!(host.wait_exit(PATIENCE).unwrap().success());
}
