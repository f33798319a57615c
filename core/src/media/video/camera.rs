//! `--video-in camera[:N]`: a V4L2 camera.
//!
//! Camera capture is not in this build yet (see the note on issue 16): asking for a camera
//! gives one sentence saying so, and the meeting goes on without our video.

use super::VideoSourceError;
use super::source::VideoSource;

/// Opens camera `index` (`/dev/videoN`).
pub fn open(index: u32) -> Result<Box<dyn VideoSource>, VideoSourceError> {
    let device = format!("/dev/video{index}");
    let reason = if std::path::Path::new(&device).exists() {
        "camera capture is not in this build yet; use --video-in testsrc or a Y4M file"
    } else {
        "there is no such camera"
    };
    Err(VideoSourceError::Camera { device, reason })
}
