//! `--video-in camera[:N]`: a V4L2 camera (`/dev/videoN`) through the `v4l` crate.
//!
//! The camera is asked for 640×480 YUYV (packed 4:2:2, which every UVC webcam offers); what
//! the driver grants is converted to I420 ([`yuyv_to_i420`]). Reading a frame blocks until
//! the camera delivers one, so capture runs on its own thread and keeps the newest
//! picture; the video loop takes it at its own frame rate (the last picture again if the
//! camera is slower). Opening fails with one sentence — no such camera, busy (another
//! application has it), no permission, no YUYV (MJPEG-only cameras are not read yet) — and
//! the meeting goes on without our video.
//!
//! This machine has no camera: the conversion is tested, and so are the messages for a
//! missing device; capture itself follows the `v4l` crate's documented mmap streaming.

use super::source::VideoSource;
use super::{I420Frame, VideoSourceError};

/// Size asked of the camera.
pub const REQUESTED_SIZE: (u32, u32) = (640, 480);
/// Frame rate assumed for the camera (the video loop's capture rate).
pub const CAMERA_FPS: f64 = 30.0;

/// Converts one packed YUYV (4:2:2) picture, `stride` bytes per row, to I420: luma copied,
/// chroma averaged over each pair of rows. `None` if the buffer is too short or the size
/// odd.
pub fn yuyv_to_i420(data: &[u8], width: u32, height: u32, stride: usize) -> Option<I420Frame> {
    let (w, h) = (width as usize, height as usize);
    if w % 2 != 0 || h % 2 != 0 || stride < w * 2 || data.len() < stride * (h - 1) + w * 2 {
        return None;
    }
    let mut picture = I420Frame::black(width, height).ok()?;
    for (row, luma) in picture.y_mut().chunks_exact_mut(w).enumerate() {
        let line = &data[row * stride..row * stride + w * 2];
        for (y, pair) in luma.iter_mut().zip(line.chunks_exact(2)) {
            *y = pair[0];
        }
    }
    let (u, v) = picture.uv_mut();
    let chroma_width = w / 2;
    for row in 0..h / 2 {
        let top = &data[2 * row * stride..2 * row * stride + w * 2];
        let bottom = &data[(2 * row + 1) * stride..(2 * row + 1) * stride + w * 2];
        for col in 0..chroma_width {
            let average = |offset: usize| {
                let sum = u16::from(top[col * 4 + offset]) + u16::from(bottom[col * 4 + offset]);
                (sum.div_ceil(2)) as u8
            };
            u[row * chroma_width + col] = average(1);
            v[row * chroma_width + col] = average(3);
        }
    }
    Some(picture)
}

#[cfg(target_os = "linux")]
mod v4l2 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::Duration;

    use tracing::warn;
    use v4l::buffer::Type;
    use v4l::io::mmap::Stream;
    use v4l::io::traits::CaptureStream;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    use super::{CAMERA_FPS, REQUESTED_SIZE, yuyv_to_i420};
    use crate::media::video::source::VideoSource;
    use crate::media::video::{I420Frame, VideoSourceError};

    /// Longest wait for the camera's first picture when opening it.
    const FIRST_PICTURE_WAIT: Duration = Duration::from_secs(3);
    /// Buffers the driver cycles through.
    const BUFFERS: u32 = 4;

    /// A camera being read on its own thread.
    pub(super) struct Camera {
        size: (u32, u32),
        latest: Arc<Mutex<I420Frame>>,
        stop: Arc<AtomicBool>,
    }

    impl Drop for Camera {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    impl VideoSource for Camera {
        fn size(&self) -> (u32, u32) {
            self.size
        }

        fn fps(&self) -> f64 {
            CAMERA_FPS
        }

        fn next_frame(&mut self, _unix_ms: u64) -> Result<I420Frame, VideoSourceError> {
            Ok(self
                .latest
                .lock()
                .map_or_else(|poisoned| poisoned.into_inner().clone(), |p| p.clone()))
        }
    }

    fn refused(device: &str, err: &std::io::Error) -> VideoSourceError {
        let reason = match (err.kind(), err.raw_os_error()) {
            (std::io::ErrorKind::NotFound, _) => "there is no such camera",
            (std::io::ErrorKind::PermissionDenied, _) => {
                "no permission to use the camera (is this user in the `video` group?)"
            }
            (_, Some(16)) => "the camera is busy: another application is using it",
            _ => "the camera cannot be opened",
        };
        VideoSourceError::Camera {
            device: device.to_owned(),
            reason,
        }
    }

    pub(super) fn open(index: u32) -> Result<Camera, VideoSourceError> {
        let device = format!("/dev/video{index}");
        let dev = Device::with_path(&device).map_err(|err| refused(&device, &err))?;
        let mut format = dev.format().map_err(|err| refused(&device, &err))?;
        (format.width, format.height) = REQUESTED_SIZE;
        format.fourcc = FourCC::new(b"YUYV");
        let format = dev
            .set_format(&format)
            .map_err(|err| refused(&device, &err))?;
        if format.fourcc != FourCC::new(b"YUYV") || format.width % 2 != 0 || format.height % 2 != 0
        {
            return Err(VideoSourceError::Camera {
                device,
                reason: "the camera offers no YUYV pictures (MJPEG-only cameras are not read yet)",
            });
        }
        let (width, height, stride) = (format.width, format.height, format.stride as usize);
        let black = I420Frame::black(width, height)?;
        let latest = Arc::new(Mutex::new(black));
        let stop = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = mpsc::sync_channel(1);
        let (shared, stopped, name) = (Arc::clone(&latest), Arc::clone(&stop), device.clone());
        std::thread::Builder::new()
            .name("conclave-camera".into())
            .spawn(move || {
                let mut stream = match Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS) {
                    Ok(stream) => stream,
                    Err(err) => {
                        let _ = first_tx.send(Err(refused(&name, &err)));
                        return;
                    }
                };
                let mut first = Some(first_tx);
                while !stopped.load(Ordering::Relaxed) {
                    let picture = match stream.next() {
                        Ok((data, meta)) => {
                            let used = (meta.bytesused as usize).min(data.len());
                            yuyv_to_i420(&data[..used], width, height, stride)
                        }
                        Err(err) => {
                            match first.take() {
                                Some(first) => {
                                    let _ = first.send(Err(refused(&name, &err)));
                                }
                                None => warn!(device = %name, error = %err, "the camera stopped"),
                            }
                            return;
                        }
                    };
                    let Some(picture) = picture else {
                        continue;
                    };
                    if let Ok(mut latest) = shared.lock() {
                        *latest = picture;
                    }
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                }
            })
            .map_err(|_| VideoSourceError::Camera {
                device: device.clone(),
                reason: "no thread to read the camera on",
            })?;
        match first_rx.recv_timeout(FIRST_PICTURE_WAIT) {
            Ok(Ok(())) => Ok(Camera {
                size: (width, height),
                latest,
                stop,
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(VideoSourceError::Camera {
                    device,
                    reason: "the camera delivered no picture within 3 s",
                })
            }
        }
    }
}

/// Opens camera `index` (`/dev/videoN`).
pub fn open(index: u32) -> Result<Box<dyn VideoSource>, VideoSourceError> {
    #[cfg(target_os = "linux")]
    {
        Ok(Box::new(v4l2::open(index)?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(VideoSourceError::Camera {
            device: format!("camera {index}"),
            reason: "camera capture is only built for Linux (V4L2) so far",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×2 YUYV picture: luma 10, 20, …; chroma differing between the two rows.
    #[test]
    fn yuyv_becomes_i420_with_chroma_averaged_over_row_pairs() {
        #[rustfmt::skip]
        let data = [
            10, 100, 20, 200,   30, 110, 40, 210,   0, 0, // 2 bytes of row padding
            50, 102, 60, 202,   70, 111, 80, 211,   0, 0,
        ];
        let picture = yuyv_to_i420(&data, 4, 2, 10).unwrap();
        assert_eq!(picture.y(), &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(picture.u(), &[101, 111]);
        assert_eq!(picture.v(), &[201, 211]);
        assert!(
            yuyv_to_i420(&data[..18], 4, 2, 10).is_some(),
            "the last row needs no padding"
        );
        assert!(yuyv_to_i420(&data[..17], 4, 2, 10).is_none(), "too short");
        assert!(yuyv_to_i420(&data, 3, 2, 10).is_none(), "odd width");
    }

    #[test]
    fn a_missing_camera_is_refused_in_one_sentence() {
        let err = open(63).err().expect("no /dev/video63 here").to_string();
        assert!(err.starts_with("/dev/video63: "), "{err}");
        assert!(!err.contains('\n'));
    }
}
