//! The desktop app end to end, under a virtual X display (Xvfb), driven by real keystrokes
//! (xdotool): a GUI joins a video meeting hosted by CLI members, shows their cameras in
//! its tiles and its own mirrored self-view (and the host's mute), chats, mutes, turns its
//! camera off and on (Ctrl+E: the host sees it stop and start), puts a member's shared
//! screen on its stage, shares its own screen (Ctrl+Shift+E: the host receives it) and
//! leaves; and a GUI hosts a lobby meeting, hands its invite
//! over the X clipboard (xclip), lets the CLI joiner in with Tab and Enter, chats, and has
//! its window closed (a WM_DELETE_WINDOW message, as a window manager sends it): the member
//! sees it leave, not time out. Screenshots of the home, settings and meeting screens are taken with
//! ImageMagick's `import`; with `CONCLAVE_SCREENSHOTS=DIR` they are written to DIR (the
//! README's pictures come from `CONCLAVE_SCREENSHOTS=docs/screenshots`).
//!
//! Without a display, `conclave` alone prints its usage and `conclave gui` says why.
//!
//! It also reports figures for `docs/performance.md`: time from process start to the
//! first frame, and the GUI's resident memory and CPU in a 4-person video meeting, with
//! and without a shared screen on its stage (the memory must stay under 250 MiB).
//!
//! Needs `Xvfb`, `xdotool` and `import` (Debian: xvfb, xdotool, imagemagick), which
//! `make test` installs. Every wait is bounded, and none is a fixed sleep: the test waits
//! for the window to have the X input focus, for the app's log to say that a key took
//! effect (`focus moved`, `settings shown`, `banner dismissed`, `close requested`, …), and
//! for the screen to stop changing before a screenshot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conclave_tests::xvfb::{Picture, Xvfb};
use conclave_tests::{
    PATIENCE, Proc, bin, loopback_client_args, peer_id_of, start_host, start_relay,
};

pub(crate) fn require(tool: &str, package: &str) {
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
    Xvfb::start("1280x800x24").expect("Xvfb starts")
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

/// The log file at `path`, without colour codes.
fn read_log(path: &Path) -> String {
    strip_ansi(&std::fs::read_to_string(path).unwrap_or_default())
}

/// How many lines of the log at `path` contain `needle`.
fn count_log(path: &Path, needle: &str) -> usize {
    read_log(path)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until more than `before` lines of the log at `path` contain `needle`; returns the
/// newest such line.
fn wait_log_after(path: &Path, needle: &str, before: usize, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = read_log(path);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        if lines.len() > before {
            return lines[lines.len() - 1].to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the GUI did not log {needle:?} within {limit:?}; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `needle` appears in the log file at `path`; returns the line.
fn wait_log(path: &Path, needle: &str, limit: Duration) -> String {
    wait_log_after(path, needle, 0, limit)
}

/// Waits (at most 3 s) until the screen shows the same picture twice in a row, 150 ms
/// apart: the last change has been drawn. A screen that keeps moving (a speaking ring) is
/// taken as it is after 3 s.
fn wait_rendered(display: &str) {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, ImageFormat};
    let (conn, screen) = x11rb::connect(Some(display)).expect("connects to the virtual display");
    let root = &conn.setup().roots[screen];
    let grab = || {
        conn.get_image(
            ImageFormat::Z_PIXMAP,
            root.root,
            0,
            0,
            root.width_in_pixels,
            root.height_in_pixels,
            !0,
        )
        .expect("get_image sent")
        .reply()
        .expect("get_image answered")
        .data
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = grab();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(150));
        let now = grab();
        if now == last {
            return;
        }
        last = now;
    }
}

/// Takes a screenshot of `display` into `dir/name.png` and reads it back.
fn screenshot(display: &str, dir: &Path, name: &str) -> Picture {
    wait_rendered(display);
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
    Picture::read_png(&path).expect("the screenshot reads back")
}

/// The share of `picture`'s pixels that are near white (a page of text shown large: the
/// app's dark theme has almost none).
fn white_share(picture: &Picture) -> f64 {
    let white = picture
        .rgb
        .chunks_exact(3)
        .filter(|p| p.iter().all(|c| *c > 215))
        .count();
    white as f64 / (picture.rgb.len() / 3).max(1) as f64
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // Linux reports in USER_HZ, 100 a second on every architecture Debian ships.
    Duration::from_millis(ticks * 10)
}

/// The share of one core the process `pid` uses over `window`.
fn cpu_share(pid: u32, window: Duration) -> f64 {
    let before = cpu_time(pid);
    std::thread::sleep(window);
    (cpu_time(pid) - before).as_secs_f64() / window.as_secs_f64()
}

/// One GUI test at a time: each runs several processes, and the machine is small.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Presses `keys` and waits until the app at `log` says the key took effect: `effect`
/// logged once more than before.
fn press_until(display: &str, log: &Path, keys: &str, effect: &str) {
    let before = count_log(log, effect);
    xdotool(display, &["key", keys]);
    wait_log_after(log, effect, before, Duration::from_secs(10));
}

/// Presses `keys` that move the focus and waits until the app has moved it.
fn focus_then(display: &str, log: &Path, keys: &str) {
    press_until(display, log, keys, "focus moved");
}

/// Gives `window` the X input focus (there is no window manager) and waits until it has it.
fn focus_window(display: &str, window: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        xdotool(display, &["windowfocus", window]);
        if xdotool(display, &["getwindowfocus"]) == window {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "window {window} did not get the input focus"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
        Self::start_with(dir, display, name, prefs, &[])
    }

    /// As [`Gui::start`], with `extra` arguments (e.g. a camera).
    fn start_with(
        dir: &Path,
        display: &str,
        name: &str,
        prefs: Option<serde_json::Value>,
        extra: &[&str],
    ) -> Self {
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
            ])
            .args(extra)
            .arg("gui")
            .env("DISPLAY", display)
            .env_remove("WAYLAND_DISPLAY");
        let label = format!("gui-{name}");
        let proc = Proc::spawn(&label, command, dir).unwrap();
        let log = dir.join(format!("{label}.stderr.log"));
        let first_frame = wait_log(&log, "first frame", PATIENCE);
        let identity = wait_log(&log, "identity ready", PATIENCE);
        let peer = identity
            .split("peer_id=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the identity line names the peer id")
            .to_owned();
        let window = xdotool(display, &["search", "--sync", "--name", "^Conclave"]);
        let window = window.lines().next().expect("a Conclave window").to_owned();
        focus_window(display, &window);
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

    // A second display showing a page of text: what Bob shares.
    let document = Xvfb::start("1280x720x24").expect("a second Xvfb starts");
    let page = Picture::text_page(&dir.path().join("page.png"), 1280, 720).unwrap();
    let _page_shown = document.show(&page).expect("the page on Bob's screen");

    // A video meeting hosted by a CLI member, with two more CLI members: four people with
    // the GUI.
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    // The CLI members send tones, so the tiles show speaking rings and media paths, and
    // the test pattern as their cameras.
    let media = |hz: &str| {
        [
            "--audio-in".to_owned(),
            format!("tone:{hz}"),
            "--audio-out".to_owned(),
            "null".to_owned(),
            "--media-bind".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--video-in".to_owned(),
            "testsrc".to_owned(),
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
        let env = [("DISPLAY", document.display.as_str())];
        others.push(Proc::conclave_with_env(name, &dir.path().join(name), &env, &args).unwrap());
    }
    let member_peers: Vec<String> = others
        .iter_mut()
        .map(|member| peer_id_of(member).unwrap())
        .collect();

    let app = Gui::start_with(
        dir.path(),
        &x.display,
        "Grace",
        None,
        &["--video-in", "testsrc"],
    );
    let (gui, log, gui_peer, first_frame) = (&app.proc, &app.log, &app.peer, &app.first_frame);
    // The camera preview on the home screen, before joining.
    wait_log(log, "video shown owner=me kind=camera", PATIENCE);
    screenshot(&x.display, &shots, "home");

    // Settings and back, by keyboard (Escape first: it leaves the focused invite field).
    xdotool(&x.display, &["key", "Escape"]);
    press_until(&x.display, log, "ctrl+comma", "settings shown");
    screenshot(&x.display, &shots, "settings");
    press_until(&x.display, log, "Escape", "settings closed");

    // Join: paste the invite into the invite field and press Enter.
    focus_then(&x.display, log, "ctrl+j");
    xdotool(&x.display, &["type", "--delay", "2", &invite]);
    xdotool(&x.display, &["key", "Return"]);
    host.wait_for(PATIENCE, "the GUI joined", |v| {
        v["event"] == "member_joined" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();
    wait_log(log, "tiles=4", PATIENCE);

    // Chat both ways.
    host.send_line("welcome, Grace").unwrap();
    wait_log(log, "phase=In", PATIENCE);
    focus_then(&x.display, log, "ctrl+j");
    xdotool(
        &x.display,
        &["type", "--delay", "2", "hello from the desktop app"],
    );
    xdotool(&x.display, &["key", "Return"]);
    host.wait_chat("hello from the desktop app", PATIENCE)
        .unwrap();

    // The host mutes: the GUI learns it (its tile shows "muted").
    host.send_line("/mute").unwrap();
    wait_log(
        log,
        &format!("member muted peer={host_peer} muted=true"),
        PATIENCE,
    );
    // Mute with the keyboard shortcut: the others learn it.
    xdotool(&x.display, &["key", "ctrl+d"]);
    wait_log(log, "microphone muted=true", PATIENCE);
    host.wait_for(PATIENCE, "the GUI's mute", |v| {
        v["event"] == "member_muted" && v["peer_id"] == gui_peer.as_str() && v["muted"] == true
    })
    .unwrap();

    // Every member's camera is in its tile, and the host receives ours.
    for peer in member_peers.iter().chain([&host_peer]) {
        wait_log(
            log,
            &format!("video shown owner={peer} kind=camera"),
            PATIENCE,
        );
    }
    host.wait_for(PATIENCE, "the GUI's camera", |v| {
        v["event"] == "video_started" && v["kind"] == "camera" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();
    let grid = screenshot(&x.display, &shots, "meeting");
    let rss = rss_kib(gui.pid());
    let cpu = cpu_share(gui.pid(), Duration::from_secs(10));

    // The camera off and on again with its shortcut: the host sees it stop and start.
    let mark = host.seen.len();
    xdotool(&x.display, &["key", "ctrl+e"]);
    wait_log(log, "camera on=false", PATIENCE);
    host.wait_for_since(mark, PATIENCE, "the GUI's camera stopped", |v| {
        v["event"] == "video_stopped" && v["kind"] == "camera" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();
    let mark = host.seen.len();
    xdotool(&x.display, &["key", "ctrl+e"]);
    wait_log(log, "camera on=true", PATIENCE);
    host.wait_for_since(mark, PATIENCE, "the GUI's camera again", |v| {
        v["event"] == "video_started" && v["kind"] == "camera" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();

    // Bob shares his screen (a page of text): it takes the GUI's stage, large.
    others[0].send_line("/share on").unwrap();
    let bob = &member_peers[0];
    wait_log(
        log,
        &format!("video shown owner={bob} kind=screen"),
        PATIENCE,
    );
    wait_log(log, "stage staged=Some(Screen(", PATIENCE);
    let stage = screenshot(&x.display, &shots, "meeting-stage");
    let (grid_white, stage_white) = (white_share(&grid), white_share(&stage));
    assert!(
        grid_white < 0.03 && stage_white > 0.08,
        "the shared page fills the stage: {:.1} % white before, {:.1} % with it",
        grid_white * 100.0,
        stage_white * 100.0
    );
    let rss_stage = rss_kib(gui.pid());
    let cpu_stage = cpu_share(gui.pid(), Duration::from_secs(10));
    for (what, kib) in [("grid", rss), ("stage", rss_stage)] {
        assert!(
            kib < 250 * 1024,
            "the app stays under 250 MiB in a 4-person video meeting ({what}: {:.1} MiB)",
            kib as f64 / 1024.0
        );
    }
    others[0].send_line("/share off").unwrap();
    wait_log(
        log,
        &format!("video ended owner={bob} kind=screen"),
        PATIENCE,
    );

    // Share the screen with its shortcut: the host receives the GUI's screen (this very
    // display) as a screen share; the strip says so and stops it; the host sees it end.
    xdotool(&x.display, &["key", "ctrl+shift+e"]);
    wait_log(log, "screen sharing share=true", PATIENCE);
    let shared = host
        .wait_for(PATIENCE, "the GUI's screen", |v| {
            v["event"] == "video_started"
                && v["kind"] == "screen"
                && v["peer_id"] == gui_peer.as_str()
        })
        .unwrap();
    assert_eq!(
        (&shared["width"], &shared["height"]),
        (&1280.into(), &800.into())
    );
    screenshot(&x.display, &shots, "meeting-sharing");
    xdotool(&x.display, &["key", "ctrl+shift+e"]);
    wait_log(log, "screen sharing share=false", PATIENCE);
    host.wait_for(PATIENCE, "the GUI's share ended", |v| {
        v["event"] == "video_stopped" && v["kind"] == "screen" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();

    // Leave: the others see the GUI go.
    xdotool(&x.display, &["key", "ctrl+shift+l"]);
    host.wait_for(PATIENCE, "the GUI left", |v| {
        v["event"] == "member_left" && v["peer_id"] == gui_peer.as_str()
    })
    .unwrap();
    wait_log(log, "back to home", PATIENCE);

    println!("figure: {first_frame}");
    println!(
        "figure: GUI in a 4-person video meeting (grid): {:.1} MiB resident, {:.0} % of a core",
        rss as f64 / 1024.0,
        cpu * 100.0
    );
    println!(
        "figure: GUI in a 4-person video meeting (a shared screen on the stage): {:.1} MiB resident, {:.0} % of a core",
        rss_stage as f64 / 1024.0,
        cpu_stage * 100.0
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
    wait_log(&app.log, "phase=In", PATIENCE);
    xdotool(&x.display, &["key", "ctrl+i"]);
    wait_log(&app.log, "invite copied", PATIENCE);
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
    member.wait_event("waiting", PATIENCE).unwrap();
    wait_log(&app.log, "waiting in the lobby", PATIENCE);
    press_until(&x.display, &app.log, "Escape", "banner dismissed");
    // Focus moves through a task after each key: each Tab waits until the app moved it.
    focus_then(&x.display, &app.log, "Tab");
    focus_then(&x.display, &app.log, "Tab");
    xdotool(&x.display, &["key", "Return"]);
    member
        .wait_for(PATIENCE, "the GUI host", |v| {
            v["event"] == "member_joined" && v["peer_id"] == app.peer.as_str()
        })
        .unwrap();
    wait_log(&app.log, "tiles=2", PATIENCE);
    focus_then(&x.display, &app.log, "ctrl+j");
    xdotool(&x.display, &["type", "--delay", "2", "hi from the host"]);
    xdotool(&x.display, &["key", "Return"]);
    member.wait_chat("hi from the host", PATIENCE).unwrap();
    // Close the window: the app says goodbye before it exits. The app logs each close
    // request it receives. In two of four full `make test` runs (never alone) the first
    // request had no effect. Suspected, not confirmed: iced hands every window event to each
    // event subscription through a queue of 100 and drops what does not fit
    // (`iced_futures` `Tracker::broadcast`, `try_send`, logged as "Error sending event to
    // subscription"), so on a starved executor a close request can be lost before the app
    // sees it. A user clicks again: the test asks again, but only when the app did not
    // receive the request (printing iced's warnings, the evidence), and then waits as long
    // as the goodbye takes.
    request_close(&x.display, app.window);
    let received = (0..3).any(|attempt| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if count_log(&app.log, "close requested") > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "close request {} was not received in 10 s; asking again",
            attempt + 1
        );
        // iced logs what it could not hand to a subscription: the evidence for the cause.
        for line in read_log(&app.log).lines() {
            if line.contains("subscription") {
                eprintln!("  {line}");
            }
        }
        request_close(&x.display, app.window);
        false
    }) || count_log(&app.log, "close requested") > 0;
    assert!(received, "the app never received a close request");
    let left = member.wait_for(PATIENCE, "the host left", |v| {
        v["event"] == "member_left" && v["peer_id"] == app.peer.as_str()
    });
    let left = left.unwrap();
    assert_eq!(left["reason"], "left", "{left}");
    let mut gui = app.proc;
    assert_eq!(gui.wait_exit(PATIENCE).unwrap().code(), Some(0));
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
