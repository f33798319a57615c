//! `--video-in FILE.y4m`: pictures from a YUV4MPEG2 file (the `y4m` crate parses it),
//! played in a loop. Only 8-bit 4:2:0 is taken (`C420`, `C420jpeg`, `C420paldv`,
//! `C420mpeg2`, the colourspaces ffmpeg and most tools write); anything else, a broken header
//! or an odd size is refused when the file is opened, with one sentence naming the problem.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{I420Frame, VideoSourceError};

/// Largest frame buffer a Y4M header may ask for (a header claiming more is refused rather
/// than allocated): 4096 × 4096 at 4:2:0.
const MAX_FRAME_BYTES: usize = 4096 * 4096 * 3 / 2;

/// A Y4M file, read in a loop.
pub struct Y4mSource {
    path: PathBuf,
    decoder: y4m::Decoder<BufReader<File>>,
    width: u32,
    height: u32,
    fps: f64,
    /// Pictures read since the file was (re)opened.
    read: u64,
}

impl std::fmt::Debug for Y4mSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mSource")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

impl Y4mSource {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, VideoSourceError> {
        let bad = |reason: String| VideoSourceError::BadY4m {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(|source| VideoSourceError::Io {
            path: path.to_owned(),
            source,
        })?;
        let decoder = y4m::Decoder::new_with_limits(
            BufReader::new(file),
            y4m::Limits {
                bytes: MAX_FRAME_BYTES,
            },
        )
        .map_err(|err| match err {
            y4m::Error::OutOfMemory => bad("its pictures are larger than 4096x4096".into()),
            y4m::Error::UnknownColorspace => bad("its colourspace is not one Y4M defines".into()),
            other => bad(format!("its header does not parse ({other})")),
        })?;
        let colorspace = decoder.get_colorspace();
        if !matches!(
            colorspace,
            y4m::Colorspace::C420
                | y4m::Colorspace::C420jpeg
                | y4m::Colorspace::C420paldv
                | y4m::Colorspace::C420mpeg2
        ) {
            return Err(bad(format!(
                "its colourspace is {colorspace:?}; only 8-bit 4:2:0 (C420) is supported"
            )));
        }
        let (width, height) = (decoder.get_width(), decoder.get_height());
        let size =
            |value: usize| u32::try_from(value).map_err(|_| bad("its size is too large".into()));
        let (width, height) = (size(width)?, size(height)?);
        I420Frame::byte_len(width, height)
            .map_err(|_| bad(format!("its size {width}x{height} is not even")))?;
        let rate = decoder.get_framerate();
        let fps = if rate.num == 0 || rate.den == 0 {
            30.0
        } else {
            rate.num as f64 / rate.den as f64
        };
        Ok(Self {
            path: path.to_owned(),
            decoder,
            width,
            height,
            fps,
            read: 0,
        })
    }

    /// Picture width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Picture height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The file's frame rate (30 if its header names none).
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// The next picture; after the last one the file starts again. A file with no whole
    /// picture, or a damaged one, is an error.
    pub fn next_frame(&mut self) -> Result<I420Frame, VideoSourceError> {
        match self.read_one() {
            Ok(frame) => Ok(frame),
            Err(err) if self.read > 0 && is_end(&err) => {
                let mut again = Self::open(&self.path)?;
                again.read = 0;
                *self = again;
                self.read_one().map_err(|err| self.bad_frame(&err))
            }
            Err(err) => Err(self.bad_frame(&err)),
        }
    }

    fn read_one(&mut self) -> Result<I420Frame, y4m::Error> {
        let frame = self.decoder.read_frame()?;
        let mut data = Vec::with_capacity(
            frame.get_y_plane().len() + frame.get_u_plane().len() + frame.get_v_plane().len(),
        );
        data.extend_from_slice(frame.get_y_plane());
        data.extend_from_slice(frame.get_u_plane());
        data.extend_from_slice(frame.get_v_plane());
        let frame = I420Frame::from_bytes(self.width, self.height, data)
            .map_err(|_| y4m::Error::BadInput)?;
        self.read += 1;
        Ok(frame)
    }

    fn bad_frame(&self, err: &y4m::Error) -> VideoSourceError {
        warn!(path = %self.path.display(), error = %err, "unreadable Y4M picture");
        VideoSourceError::BadY4m {
            path: self.path.clone(),
            reason: if self.read == 0 && is_end(err) {
                "it holds no complete picture".into()
            } else {
                format!("picture {} is damaged ({err})", self.read + 1)
            },
        }
    }
}

/// Whether `err` is the end of the file (possibly in the middle of a last, cut picture).
fn is_end(err: &y4m::Error) -> bool {
    match err {
        y4m::Error::EOF => true,
        y4m::Error::IoError(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_y4m(
        path: &Path,
        width: usize,
        height: usize,
        frames: u8,
        colorspace: y4m::Colorspace,
    ) {
        let file = File::create(path).expect("writable");
        let mut encoder = y4m::encode(width, height, y4m::Ratio::new(25, 1))
            .with_colorspace(colorspace)
            .write_header(file)
            .expect("header");
        let luma = width * height;
        let chroma = if matches!(colorspace, y4m::Colorspace::C444) {
            luma
        } else {
            luma / 4
        };
        for n in 0..frames {
            let y = vec![n; luma];
            let c = vec![128u8; chroma];
            encoder
                .write_frame(&y4m::Frame::new([&y, &c, &c], None))
                .expect("frame");
        }
    }

    #[test]
    fn pictures_come_in_order_and_the_file_loops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clip.y4m");
        write_y4m(&path, 64, 32, 3, y4m::Colorspace::C420jpeg);
        let mut source = Y4mSource::open(&path).expect("opens");
        assert_eq!((source.width(), source.height()), (64, 32));
        assert_eq!(source.fps(), 25.0);
        let firsts: Vec<u8> = (0..7)
            .map(|_| source.next_frame().expect("a picture").y()[0])
            .collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn bad_files_are_refused_in_one_sentence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken = dir.path().join("broken.y4m");
        std::fs::write(&broken, b"YUV4MPEG2 W64 Hxx F25:1\nFRAME\n").expect("writable");
        let err = Y4mSource::open(&broken).expect_err("refused");
        assert!(err.to_string().contains("header does not parse"), "{err}");

        let not_y4m = dir.path().join("text.y4m");
        std::fs::write(&not_y4m, b"hello\n").expect("writable");
        assert!(matches!(
            Y4mSource::open(&not_y4m),
            Err(VideoSourceError::BadY4m { .. })
        ));

        let full_chroma = dir.path().join("444.y4m");
        write_y4m(&full_chroma, 64, 32, 1, y4m::Colorspace::C444);
        let err = Y4mSource::open(&full_chroma).expect_err("refused");
        assert!(err.to_string().contains("only 8-bit 4:2:0"), "{err}");

        let missing = dir.path().join("missing.y4m");
        assert!(matches!(
            Y4mSource::open(&missing),
            Err(VideoSourceError::Io { .. })
        ));

        let huge = dir.path().join("huge.y4m");
        std::fs::write(&huge, b"YUV4MPEG2 W60000 H60000 F25:1 C420jpeg\n").expect("writable");
        assert!(Y4mSource::open(&huge).is_err());

        let empty = dir.path().join("empty.y4m");
        std::fs::write(&empty, b"YUV4MPEG2 W64 H32 F25:1 C420jpeg\n").expect("writable");
        let mut source = Y4mSource::open(&empty).expect("the header is fine");
        let err = source.next_frame().expect_err("no picture");
        assert!(err.to_string().contains("no complete picture"), "{err}");
    }

    #[test]
    fn a_cut_last_picture_ends_the_loop_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cut.y4m");
        write_y4m(&path, 64, 32, 2, y4m::Colorspace::C420);
        let len = std::fs::metadata(&path).expect("exists").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("writable");
        file.set_len(len - 100).expect("truncates");
        let mut source = Y4mSource::open(&path).expect("opens");
        let firsts: Vec<u8> = (0..3)
            .map(|_| source.next_frame().expect("a picture").y()[0])
            .collect();
        assert_eq!(firsts, [0, 0, 0], "the cut picture is skipped");
    }
}
