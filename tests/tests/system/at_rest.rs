//! Data at rest (the stolen-laptop case): after a meeting with chat, and after `conclave
//! forget`, the raw files of a member's data directory hold no identity key bytes, no invite
//! secret and no chat text; the directory is 0700 and its files 0600; a directory opened to
//! other users (0755) is refused with one clear sentence; the OS secret service keeps the
//! store key when there is one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use conclave_core::{Invite, KeySource, Store};
use conclave_tests::{Proc, bin, start_host, start_relay};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// Every file under `dir` (bounded depth), with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert!(depth < 6, "unexpectedly deep data directory");
                stack.push((path, depth + 1));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The peer id of the `identity` event in what a terminal or a process showed.
fn peer_id(shown: &str) -> Option<Value> {
    shown
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .find(|v| v["event"] == "identity")
        .map(|v| v["peer_id"].clone())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Asserts that no file under `dir` contains any needle, and that every directory is 0700
/// and every file 0600.
fn assert_sealed_and_private(dir: &Path, needles: &[(&str, Vec<u8>)], when: &str) {
    assert_eq!(mode(dir), 0o700, "{when}: data directory mode");
    let files = files(dir);
    assert!(
        files.iter().any(|(path, _)| path.ends_with("db/db")),
        "{when}: the sled files are there"
    );
    for (path, bytes) in &files {
        assert_eq!(mode(path), 0o600, "{when}: mode of {}", path.display());
        let parent = path.parent().unwrap();
        assert_eq!(mode(parent), 0o700, "{when}: mode of {}", parent.display());
        for (what, needle) in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{when}: {what} in plaintext in {}",
                path.display()
            );
        }
    }
}

/// Runs `conclave --json --insecure-key-file --data-dir DIR ARGS` to completion (bounded).
fn conclave(dir: &Path, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let output = Command::new("timeout")
        .arg("20")
        .arg(bin("conclave"))
        .args(["--json", "--insecure-key-file", "--data-dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (output.status.code(), events)
}

#[test]
fn a_members_files_hold_no_key_invite_or_chat_in_plaintext_even_after_forget() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let (mut host, invite_uri, _) = start_host(dir.path(), "A", &["--relay", &relay_addr]).unwrap();
    let b_dir = dir.path().join("B");
    let mut b = Proc::conclave("B", &b_dir, &["join", &invite_uri]).unwrap();
    b.wait_event("joined", LIMIT).unwrap();
    let text = "the-plan-is-at-the-old-mill-at-nine";
    host.send_line(text).unwrap();
    b.wait_chat(text, LIMIT).unwrap();
    b.send_line("a-reply-nobody-else-may-read").unwrap();
    host.wait_chat("a-reply-nobody-else-may-read", LIMIT)
        .unwrap();
    for proc in [&mut b, &mut host] {
        proc.close_stdin();
        proc.wait_exit(LIMIT).unwrap();
    }

    let invite: Invite = invite_uri.parse().unwrap();
    let meeting = invite.meeting_id.to_string();
    let secret_b64 = invite_uri
        .split("secret=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .unwrap()
        .to_owned();
    let mut needles: Vec<(&str, Vec<u8>)> = vec![
        ("the invite", invite_uri.as_bytes().to_vec()),
        ("the invite secret", invite.secret.expose().to_vec()),
        ("the invite secret (base64)", secret_b64.into_bytes()),
        (
            "the invite secret (hex)",
            hex(invite.secret.expose()).into_bytes(),
        ),
        ("a chat line", text.as_bytes().to_vec()),
        ("a chat line", b"a-reply-nobody-else-may-read".to_vec()),
    ];
    // The identity keys, read through the store (with its key), then looked for raw.
    for member in ["A", "B"] {
        let store = Store::open(&dir.path().join(member), &KeySource::InsecureKeyFile).unwrap();
        let secret = store.load_or_create_identity().unwrap().secret_bytes();
        needles.push(("the identity key", secret.to_vec()));
        needles.push(("the identity key (hex)", hex(secret.as_ref()).into_bytes()));
    }

    // The history is there (sealed): the store reads it back...
    let (code, events) = conclave(&b_dir, &["history", &meeting]);
    assert_eq!(code, Some(0), "{events:?}");
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "chat" && v["text"] == text),
        "{events:?}"
    );
    // ...and no raw file shows it, nor any key or secret.
    for member in ["A", "B"] {
        assert_sealed_and_private(&dir.path().join(member), &needles, "after the meeting");
    }

    // Forget: the history and the invite are gone, and the rewritten files hold nothing.
    let (code, events) = conclave(&b_dir, &["forget", &meeting]);
    assert_eq!(code, Some(0), "{events:?}");
    assert_eq!(events[0]["event"], "forgotten", "{events:?}");
    assert_eq!(events[0]["known"], true, "{events:?}");
    let (_, events) = conclave(&b_dir, &["history", &meeting]);
    assert!(events.iter().all(|v| v["event"] != "chat"), "{events:?}");
    let (_, events) = conclave(&b_dir, &["history"]);
    assert!(events.iter().all(|v| v["event"] != "meeting"), "{events:?}");
    assert_sealed_and_private(&b_dir, &needles, "after forget");

    // The same person still: forgetting a meeting keeps the identity.
    let (code, events) = conclave(&b_dir, &["id"]);
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn a_data_directory_open_to_others_is_refused_in_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("open");
    let (code, _) = conclave(&data, &["id"]);
    assert_eq!(code, Some(0));
    assert_eq!(mode(&data), 0o700, "a new data directory is private");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, events) = conclave(&data, &["id"]);
    assert_eq!(code, Some(1), "{events:?}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "error");
    let message = events[0]["message"].as_str().unwrap();
    assert!(message.starts_with("refusing to use "), "{message}");
    assert!(message.contains("mode 755"), "{message}");
    assert!(message.contains("chmod go-rwx"), "{message}");
    assert_eq!(message.matches(". ").count(), 0, "one sentence: {message}");
    assert!(!message.contains('\n'), "one sentence: {message}");
    // The fix it names works.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(conclave(&data, &["id"]).0, Some(0));
}

#[test]
fn without_a_key_source_the_client_says_which_flag_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    // In a session of its own: no terminal to type a passphrase at.
    let output = Command::new("timeout")
        .args(["20", "setsid", "--wait"])
        .arg(bin("conclave"))
        .args(["--json", "--data-dir"])
        .arg(dir.path().join("x"))
        .arg("id")
        .env_remove("CONCLAVE_INSECURE_KEY_FILE")
        // And no secret service.
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("--passphrase-file"), "{stdout}");
    assert!(stdout.contains("--insecure-key-file"), "{stdout}");

    // With a passphrase file: the key is wrapped, and the wrong passphrase is refused.
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let run = |pass: &Path| {
        Command::new("timeout")
            .arg("60")
            .arg(bin("conclave"))
            .args(["--json", "--data-dir"])
            .arg(dir.path().join("p"))
            .arg("--passphrase-file")
            .arg(pass)
            .arg("id")
            .output()
            .unwrap()
    };
    let first = run(&pass);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert!(dir.path().join("p/store.key.sealed").exists());
    assert!(!dir.path().join("p/store.key").exists());
    assert_eq!(run(&pass).stdout, first.stdout, "the same identity again");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let refused = run(&wrong);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("wrong passphrase"),
        "{refused:?}"
    );
}

/// Runs `conclave --json --data-dir DIR id` on a terminal of its own (`script` gives it a
/// pseudo-terminal, which our stdin feeds) and types `typed` there; returns the exit code
/// and everything the terminal showed.
fn id_at_a_terminal(data_dir: &Path, typed: &str) -> (Option<i32>, String) {
    let command = format!(
        "{} --json --data-dir {} id",
        bin("conclave").display(),
        data_dir.display()
    );
    let mut child = Command::new("timeout")
        .args([
            "30",
            "script",
            "--quiet",
            "--return",
            "--command",
            &command,
            "/dev/null",
        ])
        .env_remove("CONCLAVE_INSECURE_KEY_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, typed.as_bytes()).unwrap();
    // Stdin stays open until the end: its end would reach the program as the terminal's.
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn a_passphrase_typed_at_the_terminal_seals_the_store_and_opens_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("t");
    let phrase = "correct horse battery staple";

    // Two different passphrases for a new store: nothing is created.
    let (code, shown) = id_at_a_terminal(&data, &format!("{phrase}\nsomething else\n"));
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert!(!data.join("store.key.sealed").exists());

    // Asked twice, the same: the store key is wrapped under it.
    let (code, shown) = id_at_a_terminal(&data, &format!("{phrase}\n{phrase}\n"));
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("New passphrase"), "{shown}");
    assert!(data.join("store.key.sealed").exists());
    assert!(!data.join("store.key").exists());
    let first = peer_id(&shown).unwrap_or_else(|| panic!("no identity in {shown}"));

    // Asked once for an existing store: the same person; a passphrase file opens it too.
    let (code, shown) = id_at_a_terminal(&data, &format!("{phrase}\n"));
    assert_eq!(code, Some(0), "{shown}");
    assert_eq!(peer_id(&shown), Some(first.clone()));
    let pass = dir.path().join("pass");
    std::fs::write(&pass, format!("{phrase}\n")).unwrap();
    let from_file = Command::new("timeout")
        .arg("30")
        .arg(bin("conclave"))
        .args(["--json", "--data-dir"])
        .arg(&data)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("id")
        .output()
        .unwrap();
    assert_eq!(
        peer_id(&String::from_utf8_lossy(&from_file.stdout)),
        Some(first)
    );

    // The wrong one is refused.
    let (code, shown) = id_at_a_terminal(&data, "not the passphrase\n");
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("wrong passphrase"), "{shown}");
}

/// Runs `script` under `sh` in a D-Bus session of its own (`dbus-run-session`), with `HOME`
/// and the environment variables `vars`; returns the exit code and what it printed.
fn in_dbus_session(home: &Path, script: &str, vars: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut command = Command::new("timeout");
    command
        .args(["60", "dbus-run-session", "--", "sh", "-c", script])
        .env("HOME", home)
        .env("CONCLAVE", bin("conclave"))
        .env_remove("CONCLAVE_INSECURE_KEY_FILE")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("XDG_RUNTIME_DIR");
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command
        .output()
        .expect("dbus-run-session (make deps installs it)");
    let mut shown = String::from_utf8_lossy(&output.stdout).into_owned();
    shown.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code(), shown)
}

/// The login keyring's password the test types to unlock GNOME Keyring.
const LOGIN_PASSWORD: &str = "login password of the test user";

/// Starts GNOME Keyring (secrets only) in the session, its login keyring unlocked with the
/// password in `$LOGIN_FILE` (created with it the first time).
const UNLOCK_KEYRING: &str =
    "gnome-keyring-daemon --unlock --components=secrets <\"$LOGIN_FILE\" >/dev/null || exit 90\n";

#[test]
fn the_os_secret_service_keeps_the_store_key_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = dir.path().join("member");
    let login = dir.path().join("login");
    std::fs::write(&login, LOGIN_PASSWORD).unwrap();
    let vars = [("DATA", data.as_path()), ("LOGIN_FILE", login.as_path())];
    let unlock = UNLOCK_KEYRING;

    // A login session with an unlocked keyring and no key flag: the key goes there.
    let (code, shown) = in_dbus_session(
        &home,
        &format!(
            "{unlock}\"$CONCLAVE\" --json --data-dir \"$DATA\" id || exit 91\n\
             secret-tool search --all service 'Conclave store key' 2>&1 || exit 92\n"
        ),
        &vars,
    );
    assert_eq!(code, Some(0), "{shown}");
    let first = peer_id(&shown).unwrap_or_else(|| panic!("no identity in {shown}"));
    assert!(
        shown.contains(&format!("attribute.username = {}", data.display())),
        "the keyring holds the key of this data directory: {shown}"
    );
    assert!(!data.join("store.key").exists(), "no key file");
    assert!(!data.join("store.key.sealed").exists(), "no wrapped key");
    assert!(data.join("store.key.in-secret-service").exists());
    assert_eq!(mode(&data.join("store.key.in-secret-service")), 0o600);

    // The next login (a new session, the keyring daemon started again): the same person.
    let (code, shown) = in_dbus_session(
        &home,
        &format!("{unlock}\"$CONCLAVE\" --json --data-dir \"$DATA\" id || exit 91\n"),
        &vars,
    );
    assert_eq!(code, Some(0), "{shown}");
    assert_eq!(peer_id(&shown), Some(first), "{shown}");

    // No secret service (no D-Bus session at all): refused, saying where the key is.
    let output = Command::new("timeout")
        .args(["30", "setsid", "--wait"])
        .arg(bin("conclave"))
        .args(["--json", "--data-dir"])
        .arg(&data)
        .arg("id")
        .env("HOME", &home)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("CONCLAVE_INSECURE_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("kept in the OS secret service, which does not answer"),
        "{stdout}"
    );
    // Nor does a key flag re-key it behind the keyring's back.
    let (code, events) = conclave(&data, &["id"]);
    assert_eq!(code, Some(1), "{events:?}");
    assert!(
        events.iter().any(|e| e
            .to_string()
            .contains("its key is in the OS secret service")),
        "{events:?}"
    );
}
