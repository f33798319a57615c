//! A virtual X display (Xvfb) for the tests that need a screen: the desktop app's, and
//! screen sharing's. A page of text can be drawn (ImageMagick, DejaVu Sans Mono) and made
//! the root window's picture, and screenshots taken (ImageMagick `import`) and read back.
//!
//! Needs `Xvfb` and ImageMagick (Debian: xvfb, imagemagick, fonts-dejavu-core), which
//! `make test` installs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ChangeWindowAttributesAux, ConnectionExt, CreateGCAux, ImageFormat};
use x11rb::rust_connection::RustConnection;

/// The virtual display, killed on drop.
#[derive(Debug)]
pub struct Xvfb {
    child: Child,
    /// Its name, e.g. `:57` (what `DISPLAY` is set to).
    pub display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed, Xvfb leaves its socket and lock file behind; left there, they used up
        // the display numbers a test may take ("no free X display number").
        let number = self.display.trim_start_matches(':');
        let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{number}"));
        let _ = std::fs::remove_file(format!("/tmp/.X{number}-lock"));
    }
}

impl Xvfb {
    /// Starts a display of one screen of `size` (`WIDTHxHEIGHTxDEPTH`) and waits (at most
    /// 10 s) for its socket.
    pub fn start(size: &str) -> anyhow::Result<Self> {
        // A display number unlikely to be in use, checked against the X sockets.
        let base = 40 + (std::process::id() % 200);
        let number = (base..base + 50)
            .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
            .context("no free X display number")?;
        let display = format!(":{number}");
        let child = Command::new("Xvfb")
            .args([&display, "-screen", "0", size, "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("Xvfb starts (Debian package xvfb)")?;
        let xvfb = Self { child, display };
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "Xvfb did not start on {}",
                xvfb.display
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(xvfb)
    }

    /// Runs `program args` on this display (bounded to 20 s) and checks it succeeded.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new("timeout")
            .arg("20")
            .arg(program)
            .args(args)
            .env("DISPLAY", &self.display)
            .output()
            .with_context(|| format!("{program} runs"))?;
        ensure!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Makes `page` the root window's background: the screen shows it for as long as the
    /// returned connection is open.
    pub fn show(&self, page: &Picture) -> anyhow::Result<RustConnection> {
        let (conn, screen) = x11rb::connect(Some(&self.display))?;
        let root = conn.setup().roots[screen].clone();
        let (width, height) = (u16::try_from(page.width)?, u16::try_from(page.height)?);
        let pixmap = conn.generate_id()?;
        conn.create_pixmap(root.root_depth, pixmap, root.root, width, height)?;
        let gc = conn.generate_id()?;
        conn.create_gc(gc, pixmap, &CreateGCAux::new())?;
        // In strips of 32 rows: within the core protocol's request size.
        let row = usize::from(width) * 3;
        for top in (0..height).step_by(32) {
            let rows = 32.min(height - top);
            let strip: Vec<u8> = page.rgb[usize::from(top) * row..][..usize::from(rows) * row]
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
                i16::try_from(top)?,
                0,
                root.root_depth,
                &strip,
            )?;
        }
        conn.change_window_attributes(
            root.root,
            &ChangeWindowAttributesAux::new().background_pixmap(pixmap),
        )?;
        conn.clear_area(false, root.root, 0, 0, 0, 0)?;
        conn.get_input_focus()?.reply()?;
        Ok(conn)
    }

    /// A screenshot (ImageMagick `import`) written to `path` and read back.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<Picture> {
        self.run("import", &["-window", "root", &path.display().to_string()])?;
        Picture::read_png(path)
    }
}

/// An 8-bit RGB picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// R, G, B per pixel, row by row.
    pub rgb: Vec<u8>,
}

impl Picture {
    /// A page of small dark text on a light background, `width × height`, drawn by
    /// ImageMagick (DejaVu Sans Mono, 14 pt) and written to `path`.
    pub fn text_page(path: &Path, width: u32, height: u32) -> anyhow::Result<Self> {
        let lines: Vec<String> = (1..=36)
            .map(|n| {
                format!(
                    "{n:02}  The cabinet meets at 09:{n:02}; agenda item {n}: budget, logistics, press (draft v{}.{}).",
                    n % 7,
                    n % 10
                )
            })
            .collect();
        let output = Command::new("timeout")
            .arg("20")
            .arg("convert")
            .args(["-size", &format!("{width}x{height}"), "xc:#f4f4f0"])
            .args(["-font", "DejaVu-Sans-Mono", "-pointsize", "14"])
            .args(["-fill", "#202020", "-annotate", "+24+28", &lines.join("\n")])
            .arg(path)
            .output()
            .context("convert runs (Debian package imagemagick)")?;
        ensure!(
            output.status.success(),
            "convert failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self::read_png(path)
    }

    /// Reads an 8-bit or 16-bit PNG (RGB or grey, with or without alpha) as RGB.
    pub fn read_png(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info()?;
        let mut data = vec![0; reader.output_buffer_size().context("no size")?];
        let info = reader.next_frame(&mut data)?;
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
            other => bail!("{}: unexpected colour type {other:?}", path.display()),
        };
        Ok(Self {
            width: info.width,
            height: info.height,
            rgb,
        })
    }

    /// PSNR against `other` over every RGB sample, in dB (infinite when equal).
    pub fn psnr(&self, other: &Picture) -> f64 {
        assert_eq!(self.rgb.len(), other.rgb.len(), "pictures of one size");
        let mse = self
            .rgb
            .iter()
            .zip(&other.rgb)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            / self.rgb.len() as f64;
        if mse == 0.0 {
            return f64::INFINITY;
        }
        10.0 * (255.0 * 255.0 / mse).log10()
    }

    /// Mean SSIM against `other` on luma (BT.601 weights), over 8×8 windows every 4 pixels.
    pub fn ssim(&self, other: &Picture) -> f64 {
        const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
        const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
        let (a, b) = (self.luma(), other.luma());
        let width = self.width as usize;
        let height = a.len() / width.max(1);
        let (mut total, mut windows) = (0.0, 0usize);
        for top in (0..height.saturating_sub(8)).step_by(4) {
            for left in (0..width.saturating_sub(8)).step_by(4) {
                let at = |p: &[f64], i: usize| p[(top + i / 8) * width + left + i % 8];
                let mean = |p: &[f64]| (0..64).map(|i| at(p, i)).sum::<f64>() / 64.0;
                let (ma, mb) = (mean(&a), mean(&b));
                let (mut va, mut vb, mut cov) = (0.0, 0.0, 0.0);
                for i in 0..64 {
                    let (da, db) = (at(&a, i) - ma, at(&b, i) - mb);
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

    fn luma(&self) -> Vec<f64> {
        self.rgb
            .chunks_exact(3)
            .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
            .collect()
    }
}
