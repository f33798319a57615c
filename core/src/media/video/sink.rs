//! `--video-out DIR`: what we received of each sender's video, on disk.
//!
//! For each sender, a directory named by its peer id holds:
//! - `frames.tsv`: one line per decoded picture: local Unix ms when shown, the testsrc
//!   frame number and capture time (Unix ms, low 32 bits) (`-` for other sources), width,
//!   height, luma PSNR against the testsrc reference (`-` when not testsrc). Scripts and
//!   tests read it.
//! - `snapshot-NNNN.png`: one picture per [`SNAPSHOT_EVERY`], for people.
//!
//! Raw video (Y4M) would be 10 MB/s per sender at 360p; snapshots and a log are what a
//! person or a test needs. A write that fails (a full disk) stops that sender's output with
//! one warning; the meeting goes on.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::warn;

use super::I420Frame;
use super::monitor::Shown;
use super::yuv_to_rgb;

/// Time between two PNG snapshots of one sender.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Where one sender's pictures go.
#[derive(Debug)]
pub struct VideoFileSink {
    dir: PathBuf,
    log: Option<BufWriter<File>>,
    last_snapshot: Option<Instant>,
    snapshots: u32,
}

impl VideoFileSink {
    /// Creates `root/<name>/` and its `frames.tsv`.
    pub fn create(root: &Path, name: &str) -> std::io::Result<Self> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut log = BufWriter::new(File::create(dir.join("frames.tsv"))?);
        writeln!(log, "unix_ms\tframe\tcaptured_ms\twidth\theight\tpsnr_db")?;
        Ok(Self {
            dir,
            log: Some(log),
            last_snapshot: None,
            snapshots: 0,
        })
    }

    /// The directory this sender's pictures go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records one decoded picture, shown at `now` (`unix_ms` by the wall clock), with
    /// what the monitor read of it.
    pub fn write(&mut self, now: Instant, unix_ms: u64, picture: &I420Frame, shown: Shown) {
        if self.log.is_none() {
            return;
        }
        let Shown { stamp, psnr_db } = shown;
        let line = format!(
            "{unix_ms}\t{}\t{}\t{}\t{}\t{}\n",
            stamp.map_or("-".to_owned(), |s| s.frame.to_string()),
            stamp.map_or("-".to_owned(), |s| s.captured_ms.to_string()),
            picture.width(),
            picture.height(),
            psnr_db.map_or("-".to_owned(), |p| format!("{p:.2}")),
        );
        let due = self
            .last_snapshot
            .is_none_or(|last| now.saturating_duration_since(last) >= SNAPSHOT_EVERY);
        let result = self
            .log
            .as_mut()
            .map_or(Ok(()), |log| log.write_all(line.as_bytes()))
            .and_then(|()| {
                if due {
                    self.last_snapshot = Some(now);
                    self.snapshots += 1;
                    let path = self.dir.join(format!("snapshot-{:04}.png", self.snapshots));
                    write_png(&path, picture)
                } else {
                    Ok(())
                }
            });
        if let Err(err) = result {
            warn!(dir = %self.dir.display(), error = %err, "cannot write received video; stopped writing it");
            self.log = None;
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if let Some(log) = self.log.as_mut()
            && let Err(err) = log.flush()
        {
            warn!(dir = %self.dir.display(), error = %err, "cannot write received video; stopped writing it");
            self.log = None;
        }
    }
}

impl Drop for VideoFileSink {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes `picture` as an 8-bit RGB PNG (BT.601 limited range, as VP8 carries it).
fn write_png(path: &Path, picture: &I420Frame) -> std::io::Result<()> {
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    let (y, u, v) = (picture.y(), picture.u(), picture.v());
    let mut rgb = Vec::with_capacity(width * height * 3);
    for row in 0..height {
        for col in 0..width {
            let chroma = (row / 2) * width.div_ceil(2) + col / 2;
            rgb.extend_from_slice(&yuv_to_rgb(y[row * width + col], u[chroma], v[chroma]));
        }
    }
    let file = BufWriter::new(File::create(path)?);
    let mut encoder = png::Encoder::new(file, picture.width(), picture.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Written on the video thread once a second per sender: speed over size.
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&rgb)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::video::monitor::Monitor;
    use crate::media::video::testsrc::{Stamp, TestSource};
    use crate::test_clock::t0;

    #[test]
    fn each_picture_is_logged_and_one_per_second_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = VideoFileSink::create(dir.path(), "peer").unwrap();
        let mut monitor = Monitor::new(t0());
        let source = TestSource::new(320, 180).unwrap();
        for n in 0..40u32 {
            let at = t0() + Duration::from_millis(u64::from(n) * 33);
            let picture = source.draw(Stamp {
                frame: n,
                captured_ms: n * 33,
            });
            let shown = monitor.shown(at, 1_000 + u64::from(n), &picture);
            sink.write(at, 1_000 + u64::from(n), &picture, shown);
        }
        sink.flush();
        let log = std::fs::read_to_string(dir.path().join("peer/frames.tsv")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 41, "a header and one line per picture");
        assert_eq!(lines[1], "1000\t0\t0\t320\t180\tinf");
        let pngs = std::fs::read_dir(dir.path().join("peer"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "png")
            })
            .count();
        assert_eq!(pngs, 2, "40 pictures over 1.3 s: two snapshots");
        let png = std::fs::read(dir.path().join("peer/snapshot-0001.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
