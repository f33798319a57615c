//! The desktop app end to end, under a virtual X display (Xvfb): a GUI joins a meeting hosted
//! by CLI members, shows their tiles, chats, mutes and leaves, driven by real keystrokes
//! (xdotool). Screenshots of the home, settings and meeting screens are taken with
//! ImageMagick's `import`; with `CONCLAVE_SCREENSHOTS=DIR` they are written to DIR (the
//! README's pictures come from `CONCLAVE_SCREENSHOTS=docs/screenshots`).
//!
//! Without a display, `conclave` alone prints its usage and `conclave gui` says why.
//!
//! It also reports two figures for `docs/performance.md`: time from process start to the
//! first frame, and the GUI's resident memory in a 4-person meeting.
//!
//! Needs `Xvfb`, `xdotool` and `import` (Debian: xvfb, xdotool, imagemagick), which
//! `make test` installs. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conclave_tests::{Proc, bin, loopback_client_args, start_host, start_relay};

/// The virtual display, killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is missing: install the Debian package {package} (make test does)"
    );
}

fn start_xvfb() -> Xvfb {
    // A display number unlikely to be in use, checked against the X sockets.
    let base = 40 + (std::process::id() % 200);
    let number = (base..base + 50)
        .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
        .expect("a free X display number");
    let display = format!(":{number}");
    let child = Command::new("Xvfb")
        .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb starts");
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "Xvfb did not start on {display}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Xvfb { child, display }
}

/// Runs `xdotool ARGS` on `display` (bounded to 10 s).
fn xdotool(display: &str, args: &[&str]) -> String {
    let output = Command::new("timeout")
        .arg("10")
        .arg("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .expect("xdotool runs");
    assert!(
        output.status.success(),
        "xdotool {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `text` without terminal colour codes (ESC [ … letter).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until `needle` appears in the log file at `path`; returns the line.
fn wait_log(path: &Path, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the GUI did not log {needle:?} within {limit:?}; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshot(display: &str, dir: &Path, name: &str) {
    // Let the last change render.
    std::thread::sleep(Duration::from_millis(700));
    let path = dir.join(format!("{name}.png"));
    let status = Command::new("timeout")
        .arg("20")
        .arg("import")
        .args(["-window", "root"])
        .arg(&path)
        .env("DISPLAY", display)
        .status()
        .expect("import runs");
    assert!(status.success(), "screenshot {name} failed");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 5_000,
        "screenshot {name} is suspiciously small ({size} bytes)"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn gui_joins_chats_mutes_and_leaves_a_meeting() {
    require("Xvfb", "xvfb");
    require("xdotool", "xdotool");
    require("import", "imagemagick");
    let dir = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("CONCLAVE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let x = start_xvfb();

    // A meeting hosted by a CLI member, with two more CLI members: four people with the GUI.
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    // The CLI members send tones, so the tiles show speaking rings and media paths.
    let media = |hz: &str| {
        [
            "--audio-in".to_owned(),
            format!("tone:{hz}"),
            "--audio-out".to_owned(),
            "null".to_owned(),
            "--media-bind".to_owned(),
            "127.0.0.1:0".to_owned(),
        ]
    };
    let mut host_args = vec!["--relay".to_owned(), relay_addr.clone()];
    host_args.extend(media("440"));
    let host_args: Vec<&str> = host_args.iter().map(String::as_str).collect();
    let (mut host, invite, _) = start_host(dir.path(), "Ada", &host_args).unwrap();
    let mut others = Vec::new();
    for (name, hz) in [("Bob", "330"), ("Carol", "550")] {
        let mut args = vec!["join".to_owned(), invite.clone()];
        args.extend(media(hz));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        others.push(Proc::conclave(name, &dir.path().join(name), &args).unwrap());
    }

    let gui_dir = dir.path().join("gui");
    std::fs::create_dir_all(&gui_dir).unwrap();
    let mut command = Command::new(bin("conclave"));
    let mut args = loopback_client_args(&gui_dir, "Grace");
    args.retain(|a| a != "--json");
    command
        .args(args)
        .args([
            "--audio-in",
            "silence",
            "--audio-out",
            "null",
            "--media-bind",
            "127.0.0.1:0",
            "gui",
        ])
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY");
    let gui = Proc::spawn("gui", command, dir.path()).unwrap();
    let log = dir.path().join("gui.stderr.log");
    let first_frame = wait_log(&log, "first frame", Duration::from_secs(20));
    let identity = wait_log(&log, "identity ready", Duration::from_secs(20));
    let gui_peer = identity
        .split("peer_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the identity line names the peer id")
        .to_owned();

    let window = xdotool(&x.display, &["search", "--sync", "--name", "^Conclave"]);
    let window = window.lines().next().expect("a Conclave window").to_owned();
    xdotool(&x.display, &["windowfocus", "--sync", &window]);
    screenshot(&x.display, &shots, "home");

    // Settings and back, by keyboard (Escape first: it leaves the focused invite field).
    xdotool(&x.display, &["key", "Escape"]);
    xdotool(&x.display, &["key", "ctrl+comma"]);
    screenshot(&x.display, &shots, "settings");
    xdotool(&x.display, &["key", "Escape"]);

    // Join: paste the invite into the invite field and press Enter.
    xdotool(&x.display, &["key", "ctrl+j"]);
    xdotool(&x.display, &["type", "--delay", "2", &invite]);
    xdotool(&x.display, &["key", "Return"]);
    host.wait_for(Duration::from_secs(30), "the GUI joined", |v| {
        v["event"] == "member_joined" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();
    wait_log(&log, "tiles=4", Duration::from_secs(30));

    // Chat both ways.
    host.send_line("welcome, Grace").unwrap();
    wait_log(&log, "phase=In", Duration::from_secs(10));
    xdotool(
        &x.display,
        &["type", "--delay", "2", "hello from the desktop app"],
    );
    xdotool(&x.display, &["key", "Return"]);
    host.wait_for(Duration::from_secs(15), "the GUI's chat line", |v| {
        v["event"] == "chat" && v["text"] == "hello from the desktop app"
    })
    .unwrap();

    // Mute with the keyboard shortcut.
    xdotool(&x.display, &["key", "ctrl+d"]);
    wait_log(&log, "muted=true", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    screenshot(&x.display, &shots, "meeting");
    let rss = rss_kib(gui.pid());

    // Leave: the others see the GUI go.
    xdotool(&x.display, &["key", "ctrl+shift+l"]);
    host.wait_for(Duration::from_secs(15), "the GUI left", |v| {
        v["event"] == "member_left" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();

    println!("figure: {first_frame}");
    println!(
        "figure: GUI resident memory in a 4-person meeting: {:.1} MiB",
        rss as f64 / 1024.0
    );
    println!("screenshots in {}", shots.display());
    drop(others);
}

#[test]
fn no_command_without_a_display_prints_usage() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("timeout")
        .arg("20")
        .arg(bin("conclave"))
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Usage:") && text.contains("gui"), "{text}");
    // `conclave gui` says why it cannot open.
    let output = Command::new("timeout")
        .arg("20")
        .arg(bin("conclave"))
        .args(["--json", "--data-dir"])
        .arg(dir.path())
        .arg("gui")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("no_display"), "{text}");
}
