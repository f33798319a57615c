//! Screen sharing across real processes: a host shares an X screen (Xvfb, 1280×720) that
//! shows a page of text, beside its camera (testsrc); a member receives the screen as its
//! own SFrame-sealed VP8 stream and writes what it saw (`--video-out`). The member's last snapshot must match
//! a screenshot of the same screen taken with ImageMagick (PSNR ≥ 30 dB over RGB, SSIM ≥
//! 0.95 on luma): text arrives sharp. `/share off` ends the share at the member
//! (`video_stopped`), and `/share on` starts it afresh. Without a display, sharing says why
//! in one sentence and the meeting goes on. And across an ocean (`intercontinental`: 250 ms
//! RTT ± jitter, 1 % loss on each uplink; `CONCLAVE_WAN_PROFILE` picks another), two homes
//! behind NATs: the shared text arrives as sharp, and the screen does not freeze.
//!
//! Needs `Xvfb`, ImageMagick (`convert`, `import`) and the DejaVu fonts, which `make test`
//! installs. The page is the root window's background (set over X11 by the test), and both
//! screenshots are checked to show it, so a blank screen cannot pass for a sharp one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use conclave_tests::nat::{Internet, NatKind, relay_config, serial};
use conclave_tests::netns::available;
use conclave_tests::wan::Profile;
use conclave_tests::{Proc, bin, loopback_client_args, peer_id_of, start_relay};

use crate::gui::{require, start_xvfb_sized};

const LIMIT: Duration = Duration::from_secs(30);
/// Least acceptable PSNR of the received screen against the screenshot, over RGB.
const MIN_PSNR_DB: f64 = 30.0;
/// Least acceptable SSIM of the received screen against the screenshot, on luma.
const MIN_SSIM: f64 = 0.95;

/// Runs `program args` on `display` (bounded to 20 s) and checks it succeeded.
fn run_on(display: &str, program: &str, args: &[&str]) {
    let output = Command::new("timeout")
        .arg("20")
        .arg(program)
        .args(args)
        .env("DISPLAY", display)
        .output()
        .unwrap_or_else(|err| panic!("{program} runs: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Draws a page of small dark text on a light background (ImageMagick, DejaVu Sans Mono)
/// into `dir/page.png`; returns its pixels (RGB, 1280×720).
fn draw_text_page(display: &str, dir: &Path) -> Vec<u8> {
    let page = dir.join("page.png");
    let lines: Vec<String> = (1..=36)
        .map(|n| {
            format!(
                "{n:02}  The cabinet meets at 09:{n:02}; agenda item {n}: budget, logistics, press (draft v{}.{}).",
                n % 7,
                n % 10
            )
        })
        .collect();
    let text = lines.join("\n");
    run_on(
        display,
        "convert",
        &[
            "-size",
            "1280x720",
            "xc:#f4f4f0",
            "-font",
            "DejaVu-Sans-Mono",
            "-pointsize",
            "14",
            "-fill",
            "#202020",
            "-annotate",
            "+24+28",
            &text,
            &page.display().to_string(),
        ],
    );
    let (width, height, rgb) = read_rgb(&page);
    assert_eq!((width, height), (1280, 720));
    rgb
}

/// Makes `rgb` (1280×720) the root window's background on `display`: the screen shows it
/// for as long as the returned connection is open.
fn show_on_root(display: &str, rgb: &[u8]) -> x11rb::rust_connection::RustConnection {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{
        ChangeWindowAttributesAux, ConnectionExt, CreateGCAux, ImageFormat,
    };
    let (conn, screen) = x11rb::connect(Some(display)).expect("connects to the virtual display");
    let root = conn.setup().roots[screen].clone();
    let (width, height) = (1280u16, 720u16);
    let pixmap = conn.generate_id().expect("an id");
    conn.create_pixmap(root.root_depth, pixmap, root.root, width, height)
        .expect("create_pixmap");
    let gc = conn.generate_id().expect("an id");
    conn.create_gc(gc, pixmap, &CreateGCAux::new())
        .expect("create_gc");
    // In strips of 32 rows (160 KB): within the core protocol's request size.
    for top in (0..height).step_by(32) {
        let rows = 32.min(height - top);
        let strip: Vec<u8> = rgb[usize::from(top) * 1280 * 3..][..usize::from(rows) * 1280 * 3]
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0], 0])
            .collect();
        conn.put_image(
            ImageFormat::Z_PIXMAP,
            pixmap,
            gc,
            width,
            rows,
            0,
            top as i16,
            0,
            root.root_depth,
            &strip,
        )
        .expect("put_image");
    }
    conn.change_window_attributes(
        root.root,
        &ChangeWindowAttributesAux::new().background_pixmap(pixmap),
    )
    .expect("set the background");
    conn.clear_area(false, root.root, 0, 0, 0, 0)
        .expect("clear_area");
    conn.get_input_focus()
        .expect("sync sent")
        .reply()
        .expect("the server did it all");
    conn
}

/// A screenshot of `display` (ImageMagick `import`) as RGB, checked to show `page`.
fn screenshot_showing(display: &str, path: &Path, page: &[u8]) -> Vec<u8> {
    run_on(
        display,
        "import",
        &["-window", "root", &path.display().to_string()],
    );
    let (_, _, shot) = read_rgb(path);
    let psnr = psnr_rgb(&shot, page);
    assert!(
        psnr >= 50.0,
        "the screen does not show the page ({psnr:.1} dB): {}",
        path.display()
    );
    shot
}

/// A conclave process whose screen is `display` (`None`: no display at all).
fn conclave_on(label: &str, dir: &Path, display: Option<&str>, args: &[&str]) -> Proc {
    let data_dir = dir.join(label);
    let mut command = Command::new(bin("conclave"));
    command
        .args(loopback_client_args(&data_dir, label))
        .args(["--media-bind", "127.0.0.1:0", "--audio-in", "silence"])
        .args(args)
        .env_remove("WAYLAND_DISPLAY");
    match display {
        Some(display) => command.env("DISPLAY", display),
        None => command.env_remove("DISPLAY"),
    };
    Proc::spawn(label, command, dir).expect("conclave starts")
}

/// An 8-bit PNG (RGB, grey, with or without alpha) as (width, height, RGB bytes).
fn read_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    try_read_rgb(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// As [`read_rgb`], or why the file is not a whole PNG (one still being written).
fn try_read_rgb(path: &Path) -> Result<(u32, u32, Vec<u8>), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut data = vec![0; reader.output_buffer_size().ok_or("no size")?];
    let info = reader.next_frame(&mut data).map_err(|e| e.to_string())?;
    data.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => data,
        png::ColorType::Rgba => data
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => data.iter().flat_map(|g| [*g, *g, *g]).collect(),
        png::ColorType::GrayscaleAlpha => data
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        other => return Err(format!("unexpected colour type {other:?}")),
    };
    Ok((info.width, info.height, rgb))
}

/// PSNR of `a` against `b` over every RGB sample, in dB.
fn psnr_rgb(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// Luma (BT.601 weights, full range) of an RGB picture.
fn luma(rgb: &[u8]) -> Vec<f64> {
    rgb.chunks_exact(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect()
}

/// Mean SSIM of two luma pictures of `width` columns over 8×8 windows (stride 4).
fn ssim(a: &[f64], b: &[f64], width: usize) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let height = a.len() / width;
    let (mut total, mut windows) = (0.0, 0usize);
    for top in (0..height.saturating_sub(8)).step_by(4) {
        for left in (0..width.saturating_sub(8)).step_by(4) {
            let at = |p: &[f64], i: usize| p[(top + i / 8) * width + left + i % 8];
            let mean = |p: &[f64]| (0..64).map(|i| at(p, i)).sum::<f64>() / 64.0;
            let (ma, mb) = (mean(a), mean(b));
            let (mut va, mut vb, mut cov) = (0.0, 0.0, 0.0);
            for i in 0..64 {
                let (da, db) = (at(a, i) - ma, at(b, i) - mb);
                va += da * da;
                vb += db * db;
                cov += da * db;
            }
            let (va, vb, cov) = (va / 63.0, vb / 63.0, cov / 63.0);
            total += ((2.0 * ma * mb + C1) * (2.0 * cov + C2))
                / ((ma * ma + mb * mb + C1) * (va + vb + C2));
            windows += 1;
        }
    }
    total / windows.max(1) as f64
}

/// The newest whole snapshot in `dir` (the newest may still be being written), as
/// (path, width, height, RGB).
fn newest_snapshot(dir: &Path) -> (PathBuf, u32, u32, Vec<u8>) {
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|x| x == "png"))
        .collect();
    snapshots.sort();
    snapshots
        .into_iter()
        .rev()
        .find_map(|path| {
            let (width, height, rgb) = try_read_rgb(&path).ok()?;
            Some((path, width, height, rgb))
        })
        .expect("at least one whole snapshot")
}

/// Checks the newest snapshot in `received_dir` against a screenshot of `display` (which
/// must show `page`): PSNR and SSIM.
fn check_sharp(display: &str, dir: &Path, page: &[u8], received_dir: &Path) {
    let expected = screenshot_showing(display, &dir.join("screenshot.png"), page);
    let (snapshot, width, height, received) = newest_snapshot(received_dir);
    assert_eq!((width, height), (1280, 720));
    let psnr = psnr_rgb(&received, &expected);
    let similarity = ssim(&luma(&received), &luma(&expected), width as usize);
    eprintln!(
        "shared screen {width}x{height}: PSNR {psnr:.2} dB, SSIM {similarity:.4} ({})",
        snapshot.display()
    );
    assert!(psnr >= MIN_PSNR_DB, "PSNR {psnr:.2} dB");
    assert!(similarity >= MIN_SSIM, "SSIM {similarity:.4}");
}

#[test]
fn a_shared_screen_of_text_arrives_sharp_and_ends_when_sharing_stops() {
    require("Xvfb", "xvfb");
    for tool in ["convert", "import"] {
        require(tool, "imagemagick");
    }
    let dir = tempfile::tempdir().unwrap();
    let xvfb = start_xvfb_sized("1280x720x24");
    let display = xvfb.display.clone();
    let page = draw_text_page(&display, dir.path());
    let _shown = show_on_root(&display, &page);
    screenshot_showing(&display, &dir.path().join("before.png"), &page);

    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let mut host = conclave_on(
        "host",
        dir.path(),
        Some(&display),
        &[
            "--video-in",
            "testsrc",
            "--share-screen",
            "new",
            "--relay",
            &relay_addr,
        ],
    );
    let shared = host.wait_event("screen_share", LIMIT).unwrap();
    assert_eq!(
        (&shared["on"], &shared["width"], &shared["height"]),
        (&true.into(), &1280.into(), &720.into()),
        "{shared}"
    );
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let host_id = peer_id_of(&mut host).unwrap();
    let out = dir.path().join("member-video");
    let out_arg = out.display().to_string();
    let mut member = conclave_on(
        "member",
        dir.path(),
        None,
        &["--video-out", &out_arg, "join", &invite],
    );
    let started = member
        .wait_for(LIMIT, "the shared screen", |v| {
            v["event"] == "video_started" && v["kind"] == "screen"
        })
        .unwrap();
    assert_eq!(started["peer_id"], host_id.as_str());
    assert_eq!(
        (&started["width"], &started["height"]),
        (&1280.into(), &720.into())
    );
    // The camera comes beside the screen, as its own video.
    let camera = member
        .wait_for(LIMIT, "the camera", |v| {
            v["event"] == "video_started" && v["kind"] == "camera"
        })
        .unwrap();
    assert_eq!(camera["peer_id"], host_id.as_str());

    // A few seconds of a still screen: the encoder refines it, and snapshots are taken.
    for _ in 0..30 {
        member.drain_for(Duration::from_millis(200));
        host.drain_for(Duration::from_millis(1));
    }
    let reports: Vec<&serde_json::Value> = member
        .seen
        .iter()
        .filter(|v| v["event"] == "video" && v["kind"] == "screen")
        .collect();
    assert!(reports.len() >= 3, "screen statistics: {reports:?}");
    let undecryptable = reports.last().map(|v| v["undecryptable"].clone());
    assert_eq!(undecryptable, Some(0.into()), "{reports:?}");
    assert!(
        host.seen
            .iter()
            .any(|v| v["event"] == "video_sent" && v["kind"] == "screen"),
        "the host reports what it sends of its screen"
    );

    check_sharp(
        &display,
        dir.path(),
        &page,
        &out.join(format!("{host_id}-screen")),
    );

    // Stop sharing: the member sees the share end; start again: it starts afresh.
    host.send_line("/share off").unwrap();
    host.wait_for(LIMIT, "sharing stopped", |v| {
        v["event"] == "screen_share" && v["on"] == false
    })
    .unwrap();
    member
        .wait_for(LIMIT, "the share ended", |v| {
            v["event"] == "video_stopped" && v["kind"] == "screen"
        })
        .unwrap();
    member.seen.retain(|v| v["event"] != "video_started");
    host.send_line("/share on").unwrap();
    member
        .wait_for(LIMIT, "the screen shared again", |v| {
            v["event"] == "video_started" && v["kind"] == "screen"
        })
        .unwrap();

    for proc in [&mut host, &mut member] {
        proc.send_line("/leave").unwrap();
    }
    for proc in [&mut host, &mut member] {
        assert_eq!(
            proc.wait_exit(LIMIT).unwrap().code(),
            Some(0),
            "{}",
            proc.label
        );
    }
}

#[test]
fn sharing_without_a_display_says_why_and_the_meeting_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay_addr) = start_relay(dir.path()).unwrap();
    let mut host = conclave_on(
        "host",
        dir.path(),
        None,
        &["--share-screen", "new", "--relay", &relay_addr],
    );
    let error = host
        .wait_for(LIMIT, "why the screen is not shared", |v| {
            v["event"] == "error" && v["kind"] == "share"
        })
        .unwrap();
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("DISPLAY is not set"), "{error}");
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut member = conclave_on("member", dir.path(), None, &["join", &invite]);
    member.wait_event("joined", LIMIT).unwrap();
    member.send_line("still here").unwrap();
    host.wait_chat("still here", LIMIT).unwrap();
    for proc in [&mut host, &mut member] {
        proc.send_line("/leave").unwrap();
    }
    for proc in [&mut host, &mut member] {
        assert_eq!(
            proc.wait_exit(LIMIT).unwrap().code(),
            Some(0),
            "{}",
            proc.label
        );
    }
}

/// Longest acceptable gap between two pictures of the shared screen after its first
/// second, on the far path.
const LONGEST_SCREEN_GAP_MS: u64 = 1_000;

#[test]
fn a_shared_screen_across_an_ocean_arrives_sharp_without_freezing() {
    assert!(available(), "this test needs root and iproute2 (ip netns)");
    require("Xvfb", "xvfb");
    for tool in ["convert", "import"] {
        require(tool, "imagemagick");
    }
    let _serial = serial();
    let profile = Profile::from_env_or(Profile::INTERCONTINENTAL);
    let dir = tempfile::tempdir().unwrap();
    let xvfb = start_xvfb_sized("1280x720x24");
    let display = xvfb.display.clone();
    let page = draw_text_page(&display, dir.path());
    let _shown = show_on_root(&display, &page);

    let mut internet = Internet::new("scr").unwrap();
    let config = relay_config(dir.path()).unwrap();
    let (_relay, relay_addr) = internet.relay_full(dir.path(), Some(&config)).unwrap();
    let homes: Vec<_> = (0..2)
        .map(|_| {
            internet
                .add_home_with(NatKind::PortRestricted, Some(&profile))
                .unwrap()
        })
        .collect();
    let mut host = homes[0]
        .member_with_env(
            dir.path(),
            "sharer",
            &[("DISPLAY", &display)],
            &[
                "--audio-in",
                "silence",
                "--video-in",
                "testsrc",
                "--share-screen",
                "new",
                "--relay",
                &relay_addr,
            ],
        )
        .unwrap();
    host.wait_event("screen_share", LIMIT).unwrap();
    let invite = host.wait_event("invite", LIMIT).unwrap()["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let host_id = peer_id_of(&mut host).unwrap();
    let out = dir.path().join("viewer-video");
    let out_arg = out.display().to_string();
    let mut viewer = homes[1]
        .member(
            dir.path(),
            "viewer",
            &[
                "--audio-in",
                "silence",
                "--video-out",
                &out_arg,
                "join",
                &invite,
            ],
        )
        .unwrap();
    viewer
        .wait_for(LIMIT, "the shared screen", |v| {
            v["event"] == "video_started" && v["kind"] == "screen"
        })
        .unwrap();
    for _ in 0..50 {
        viewer.drain_for(Duration::from_millis(200));
        host.drain_for(Duration::from_millis(1));
    }
    eprintln!("{}: screen shared", profile.name);
    let reports: Vec<&serde_json::Value> = viewer
        .seen
        .iter()
        .filter(|v| v["event"] == "video" && v["kind"] == "screen")
        .collect();
    // The first report covers the first second (the first keyframe's repair included).
    assert!(reports.len() >= 5, "screen statistics: {reports:?}");
    for report in &reports[1..] {
        let gap = report["longest_gap_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(
            gap <= LONGEST_SCREEN_GAP_MS,
            "the screen froze for {gap} ms: {report}"
        );
    }
    check_sharp(
        &display,
        dir.path(),
        &page,
        &out.join(format!("{host_id}-screen")),
    );
    for proc in [&mut host, &mut viewer] {
        proc.send_line("/leave").unwrap();
    }
    for proc in [&mut host, &mut viewer] {
        assert_eq!(
            proc.wait_exit(LIMIT).unwrap().code(),
            Some(0),
            "{}",
            proc.label
        );
    }
}
