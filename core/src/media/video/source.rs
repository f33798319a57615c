//! What `--video-in` names, and the sources behind it: `testsrc[:WxH]` (the stamped test
//! pattern), a Y4M file (played in a loop), or `camera[:N]` (V4L2 device `/dev/videoN`).
//!
//! A source hands out one picture per call; the video loop calls it at the source's frame
//! rate. A source that cannot start (a missing file, a camera that is absent or busy)
//! gives one sentence; the meeting goes on without our video.

use std::path::PathBuf;

use super::scale::{downscale, scaled_size};
use super::testsrc::{Stamp, TestSource};
use super::y4m::Y4mSource;
use super::{I420Frame, VideoSourceError};

/// Size of `testsrc` pictures when none is given: 640×360 (360p).
pub const DEFAULT_TESTSRC_SIZE: (u32, u32) = (640, 360);
/// Frame rate of `testsrc`.
pub const TESTSRC_FPS: f64 = 30.0;

/// A `--video-in` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSpec {
    /// The stamped test pattern at this size.
    TestSource {
        /// Picture width.
        width: u32,
        /// Picture height.
        height: u32,
    },
    /// A YUV4MPEG2 file.
    Y4m(PathBuf),
    /// A V4L2 camera, by index (`/dev/videoN`).
    Camera(u32),
}

impl std::str::FromStr for VideoSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        if spec == "testsrc" {
            let (width, height) = DEFAULT_TESTSRC_SIZE;
            return Ok(Self::TestSource { width, height });
        }
        if let Some(size) = spec.strip_prefix("testsrc:") {
            let parsed = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
            let Some((width, height)) = parsed else {
                return Err(format!(
                    "`{spec}`: testsrc takes a size as WIDTHxHEIGHT, e.g. testsrc:1280x720"
                ));
            };
            return Ok(Self::TestSource { width, height });
        }
        if spec == "camera" {
            return Ok(Self::Camera(0));
        }
        if let Some(index) = spec.strip_prefix("camera:") {
            return index.parse().map(Self::Camera).map_err(|_| {
                format!("`{spec}`: a camera is named by its number, e.g. camera:0 for /dev/video0")
            });
        }
        if spec.ends_with(".y4m") {
            return Ok(Self::Y4m(PathBuf::from(spec)));
        }
        Err(format!(
            "`{spec}` is not a video source: use testsrc, testsrc:WxH, FILE.y4m or camera[:N]"
        ))
    }
}

/// Pictures for the video loop.
pub trait VideoSource: Send {
    /// Size of the pictures.
    fn size(&self) -> (u32, u32);
    /// Pictures per second the source delivers.
    fn fps(&self) -> f64;
    /// The next picture, captured now (`unix_ms` by the wall clock).
    fn next_frame(&mut self, unix_ms: u64) -> Result<I420Frame, VideoSourceError>;

    /// The next picture at the source's size divided by `factor` (a lower layer): scaled
    /// down, unless the source can make it at that size itself.
    fn next_frame_scaled(
        &mut self,
        unix_ms: u64,
        factor: u32,
    ) -> Result<I420Frame, VideoSourceError> {
        let picture = self.next_frame(unix_ms)?;
        if factor <= 1 {
            return Ok(picture);
        }
        Ok(downscale(&picture, factor)?)
    }

    /// One picture at each of `factors` (ascending: the source's size divided by each),
    /// captured once: the same instant for every layer. The first is made as
    /// [`VideoSource::next_frame_scaled`] makes it, the others scaled down from it.
    fn next_frames(
        &mut self,
        unix_ms: u64,
        factors: &[u32],
    ) -> Result<Vec<I420Frame>, VideoSourceError> {
        let Some((&first, rest)) = factors.split_first() else {
            return Ok(Vec::new());
        };
        let picture = self.next_frame_scaled(unix_ms, first)?;
        let mut pictures = Vec::with_capacity(factors.len());
        for &factor in rest {
            pictures.push(downscale(&picture, (factor / first.max(1)).max(1))?);
        }
        pictures.insert(0, picture);
        Ok(pictures)
    }
}

/// `testsrc`: frame `n` carries its number and capture time. Lower layers are drawn at
/// their own size, so their stamps stay readable and their reference exact.
#[derive(Debug)]
pub struct StampedTestSource {
    pattern: TestSource,
    /// The pattern at the last lower layer's size.
    scaled: Option<TestSource>,
    /// The pattern at each lower layer's size drawn together ([`VideoSource::next_frames`]).
    layers: Vec<TestSource>,
    next: u32,
}

impl StampedTestSource {
    /// The pattern at `width × height`.
    pub fn new(width: u32, height: u32) -> Result<Self, VideoSourceError> {
        Ok(Self {
            pattern: TestSource::new(width, height)?,
            scaled: None,
            layers: Vec::new(),
            next: 0,
        })
    }

    fn stamp(&mut self, unix_ms: u64) -> Stamp {
        let stamp = Stamp {
            frame: self.next,
            captured_ms: unix_ms as u32,
        };
        self.next = self.next.wrapping_add(1);
        stamp
    }
}

impl VideoSource for StampedTestSource {
    fn size(&self) -> (u32, u32) {
        self.pattern.size()
    }

    fn fps(&self) -> f64 {
        TESTSRC_FPS
    }

    fn next_frame(&mut self, unix_ms: u64) -> Result<I420Frame, VideoSourceError> {
        let stamp = self.stamp(unix_ms);
        Ok(self.pattern.draw(stamp))
    }

    fn next_frame_scaled(
        &mut self,
        unix_ms: u64,
        factor: u32,
    ) -> Result<I420Frame, VideoSourceError> {
        if factor <= 1 {
            return self.next_frame(unix_ms);
        }
        let (width, height) = self.pattern.size();
        let size = scaled_size(width, height, factor);
        if self.scaled.as_ref().is_none_or(|p| p.size() != size) {
            self.scaled = Some(TestSource::new(size.0, size.1)?);
        }
        let stamp = self.stamp(unix_ms);
        let pattern = self.scaled.as_ref().unwrap_or(&self.pattern);
        Ok(pattern.draw(stamp))
    }

    /// Every layer drawn at its own size with one stamp: the frame number and capture time
    /// are the same in each, and each layer's reference is exact.
    fn next_frames(
        &mut self,
        unix_ms: u64,
        factors: &[u32],
    ) -> Result<Vec<I420Frame>, VideoSourceError> {
        let stamp = self.stamp(unix_ms);
        let (width, height) = self.pattern.size();
        factors
            .iter()
            .map(|&factor| {
                if factor <= 1 {
                    return Ok(self.pattern.draw(stamp));
                }
                let size = scaled_size(width, height, factor);
                let layer = self.layers.iter().find(|p| p.size() == size);
                match layer {
                    Some(pattern) => Ok(pattern.draw(stamp)),
                    None => {
                        let pattern = TestSource::new(size.0, size.1)?;
                        let picture = pattern.draw(stamp);
                        self.layers.push(pattern);
                        Ok(picture)
                    }
                }
            })
            .collect()
    }
}

impl VideoSource for Y4mSource {
    fn size(&self) -> (u32, u32) {
        (self.width(), self.height())
    }

    fn fps(&self) -> f64 {
        Y4mSource::fps(self)
    }

    fn next_frame(&mut self, _unix_ms: u64) -> Result<I420Frame, VideoSourceError> {
        Y4mSource::next_frame(self)
    }
}

/// Opens the source `spec` names.
pub fn open(spec: &VideoSpec) -> Result<Box<dyn VideoSource>, VideoSourceError> {
    match spec {
        VideoSpec::TestSource { width, height } => {
            Ok(Box::new(StampedTestSource::new(*width, *height)?))
        }
        VideoSpec::Y4m(path) => Ok(Box::new(Y4mSource::open(path)?)),
        VideoSpec::Camera(index) => super::camera::open(*index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::video::testsrc::read_stamp;

    #[test]
    fn video_specs_parse_or_say_what_is_wrong() {
        assert_eq!(
            "testsrc".parse::<VideoSpec>(),
            Ok(VideoSpec::TestSource {
                width: 640,
                height: 360
            })
        );
        assert_eq!(
            "testsrc:1280x720".parse::<VideoSpec>(),
            Ok(VideoSpec::TestSource {
                width: 1280,
                height: 720
            })
        );
        assert_eq!("camera".parse::<VideoSpec>(), Ok(VideoSpec::Camera(0)));
        assert_eq!("camera:2".parse::<VideoSpec>(), Ok(VideoSpec::Camera(2)));
        assert_eq!(
            "talk.y4m".parse::<VideoSpec>(),
            Ok(VideoSpec::Y4m("talk.y4m".into()))
        );
        for bad in ["testsrc:big", "camera:front", "talk.mp4", ""] {
            let err = bad.parse::<VideoSpec>().unwrap_err();
            assert!(err.contains("e.g.") || err.contains("use testsrc"), "{err}");
        }
    }

    #[test]
    fn testsrc_numbers_its_frames_and_stamps_the_capture_time() {
        let mut source = StampedTestSource::new(640, 360).unwrap();
        assert_eq!(source.size(), (640, 360));
        let first = source.next_frame(1_000).unwrap();
        let second = source.next_frame(1_033).unwrap();
        let stamps = [read_stamp(&first).unwrap(), read_stamp(&second).unwrap()];
        assert_eq!((stamps[0].frame, stamps[0].captured_ms), (0, 1_000));
        assert_eq!((stamps[1].frame, stamps[1].captured_ms), (1, 1_033));
        assert!(
            StampedTestSource::new(64, 64).is_err(),
            "too small for the stamp"
        );
        // A lower layer is drawn at its size, numbered on from the full-size frames.
        let half = source.next_frame_scaled(1_066, 2).unwrap();
        assert_eq!((half.width(), half.height()), (320, 180));
        assert_eq!(read_stamp(&half).unwrap().frame, 2);
    }
}
