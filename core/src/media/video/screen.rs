//! `--share-screen[=N]`: a monitor of the X11 display (`DISPLAY`), captured with the
//! `x11rb` crate (pure Rust, no libxcb).
//!
//! Monitor `N` is the `N`th RandR monitor, the primary one first (`0`, the default); a
//! display without RandR is one monitor, its whole root window. Each picture is one
//! `GetImage` of that rectangle (24-bit colour in 32-bit pixels, as every X server of this
//! century offers), converted to I420 (BT.601 limited range, as VP8 carries it) by
//! [`bgrx_to_i420`]. A monitor larger than 1920×1080 is halved (text stays legible at
//! 1280×720 from a 2560×1440 monitor; arbitrary scaling would blur it more).
//!
//! Wayland: a Wayland session runs XWayland for X11 applications, and with `DISPLAY` set
//! sharing goes through it, which shows X11 windows only. Native Wayland capture (the
//! desktop portal's ScreenCast with PipeWire) is not built: it needs a compositor and a
//! portal to be tested, which this project's machines do not have. Without `DISPLAY` the
//! share fails with one sentence saying so, and the meeting goes on.

use super::source::VideoSource;
use super::{I420Frame, VideoSourceError};

pub use conclave_vpx::SCREEN_FPS;

/// Largest size sent; larger monitors are halved until they fit.
pub const MAX_SCREEN_SIZE: (u32, u32) = (1920, 1080);

/// What `--share-screen[=N]` names: a monitor, by its number (the primary one is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScreenSpec {
    /// The monitor's number.
    pub monitor: u32,
}

impl std::str::FromStr for ScreenSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        spec.parse().map(|monitor| Self { monitor }).map_err(|_| {
            format!("`{spec}`: a screen is named by its number, e.g. --share-screen=1 (0 is the primary monitor)")
        })
    }
}

/// Converts one picture of 32-bit pixels, bytes B, G, R, unused (an X server's little-endian
/// 24-bit colour), `stride` bytes per row, to I420 (BT.601 limited range; chroma is the
/// average of each 2×2 block). `None` if the buffer is too short or a side odd or zero.
pub fn bgrx_to_i420(data: &[u8], width: u32, height: u32, stride: usize) -> Option<I420Frame> {
    let (w, h) = (width as usize, height as usize);
    if w % 2 != 0 || h % 2 != 0 || stride < w * 4 || data.len() < stride * (h - 1) + w * 4 {
        return None;
    }
    let mut picture = I420Frame::black(width, height).ok()?;
    let pixel = |row: usize, col: usize| {
        let at = row * stride + col * 4;
        (
            i32::from(data[at + 2]),
            i32::from(data[at + 1]),
            i32::from(data[at]),
        )
    };
    for (row, luma) in picture.y_mut().chunks_exact_mut(w).enumerate() {
        for (col, y) in luma.iter_mut().enumerate() {
            let (r, g, b) = pixel(row, col);
            *y = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
    }
    let (u, v) = picture.uv_mut();
    let chroma_width = w / 2;
    for row in 0..h / 2 {
        for col in 0..chroma_width {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (pr, pg, pb) = pixel(2 * row + dr, 2 * col + dc);
                (r, g, b) = (r + pr, g + pg, b + pb);
            }
            let (r, g, b) = ((r + 2) / 4, (g + 2) / 4, (b + 2) / 4);
            u[row * chroma_width + col] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v[row * chroma_width + col] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
    Some(picture)
}

/// Opens monitor `spec` of the display `DISPLAY` names.
pub fn open(spec: ScreenSpec) -> Result<Box<dyn VideoSource>, VideoSourceError> {
    if std::env::var_os("DISPLAY").is_none() {
        let reason = if std::env::var_os("WAYLAND_DISPLAY").is_some() {
            "this Wayland session has no X11 display (DISPLAY is not set): screen sharing \
             goes through XWayland today; native Wayland capture is not built yet"
                .to_owned()
        } else {
            "no display to share (DISPLAY is not set)".to_owned()
        };
        return Err(VideoSourceError::Screen { reason });
    }
    #[cfg(target_os = "linux")]
    return Ok(Box::new(x11::X11Screen::open(spec.monitor)?));
    #[cfg(not(target_os = "linux"))]
    Err(VideoSourceError::Screen {
        reason: "screen sharing is built for X11 (Linux) only".to_owned(),
    })
}

#[cfg(target_os = "linux")]
mod x11 {
    use tracing::info;
    use x11rb::connection::Connection;
    use x11rb::protocol::randr::ConnectionExt as _;
    use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, ImageOrder, Window};
    use x11rb::rust_connection::RustConnection;

    use super::{MAX_SCREEN_SIZE, SCREEN_FPS, bgrx_to_i420};
    use crate::media::video::scale::{downscale, scaled_size};
    use crate::media::video::source::VideoSource;
    use crate::media::video::{I420Frame, VideoSourceError};

    fn failed(reason: impl std::fmt::Display) -> VideoSourceError {
        VideoSourceError::Screen {
            reason: reason.to_string(),
        }
    }

    /// A rectangle of the root window, one `GetImage` per picture.
    pub(super) struct X11Screen {
        conn: RustConnection,
        root: Window,
        /// Where the monitor is on the root window, and its (even) size.
        area: (i16, i16, u16, u16),
        /// Pictures are the monitor's size divided by this.
        factor: u32,
    }

    impl X11Screen {
        pub(super) fn open(monitor: u32) -> Result<Self, VideoSourceError> {
            let (conn, screen) = x11rb::connect(None)
                .map_err(|err| failed(format!("cannot connect to the X display: {err}")))?;
            let setup = conn.setup();
            let root_screen = setup
                .roots
                .get(screen)
                .ok_or_else(|| failed("the X display has no such screen"))?;
            let root = root_screen.root;
            let little_endian = setup.image_byte_order == ImageOrder::LSB_FIRST;
            let depth = root_screen.root_depth;
            let bits = setup
                .pixmap_formats
                .iter()
                .find(|format| format.depth == depth)
                .map(|format| format.bits_per_pixel);
            if depth != 24 || bits != Some(32) || !little_endian {
                return Err(failed(format!(
                    "the X display's pictures are {depth}-bit in {bits:?}-bit pixels: only 24-bit colour in 32-bit little-endian pixels is read"
                )));
            }
            let whole = (
                0,
                0,
                root_screen.width_in_pixels,
                root_screen.height_in_pixels,
            );
            let monitors = conn
                .randr_get_monitors(root, true)
                .ok()
                .and_then(|cookie| cookie.reply().ok())
                .map(|reply| {
                    let mut monitors = reply.monitors;
                    monitors.sort_by_key(|m| !m.primary);
                    monitors
                })
                .unwrap_or_default();
            let (x, y, width, height) = if monitors.is_empty() {
                if monitor != 0 {
                    return Err(failed(format!(
                        "the X display has one screen: there is no monitor {monitor}"
                    )));
                }
                whole
            } else {
                let chosen = monitors.get(monitor as usize).ok_or_else(|| {
                    failed(format!(
                        "the X display has {} monitor(s): there is no monitor {monitor}",
                        monitors.len()
                    ))
                })?;
                (chosen.x, chosen.y, chosen.width, chosen.height)
            };
            let (width, height) = (width & !1, height & !1);
            if width < 2 || height < 2 {
                return Err(failed("the monitor has no pixels"));
            }
            let mut factor = 1;
            while u32::from(width) / factor > MAX_SCREEN_SIZE.0
                || u32::from(height) / factor > MAX_SCREEN_SIZE.1
            {
                factor *= 2;
            }
            let source = Self {
                conn,
                root,
                area: (x, y, width, height),
                factor,
            };
            info!(monitor, x, y, width, height, factor, "sharing a screen");
            Ok(source)
        }

        fn grab(&self) -> Result<I420Frame, VideoSourceError> {
            let (x, y, width, height) = self.area;
            let reply = self
                .conn
                .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, width, height, !0)
                .map_err(failed)?
                .reply()
                .map_err(|err| failed(format!("the X display refused a picture: {err}")))?;
            let stride = usize::from(width) * 4;
            let picture = bgrx_to_i420(&reply.data, width.into(), height.into(), stride)
                .ok_or_else(|| failed("the X display sent a picture of the wrong size"))?;
            if self.factor > 1 {
                return Ok(downscale(&picture, self.factor)?);
            }
            Ok(picture)
        }
    }

    impl VideoSource for X11Screen {
        fn size(&self) -> (u32, u32) {
            let (_, _, width, height) = self.area;
            scaled_size(width.into(), height.into(), self.factor)
        }

        fn fps(&self) -> f64 {
            f64::from(SCREEN_FPS)
        }

        fn next_frame(&mut self, _unix_ms: u64) -> Result<I420Frame, VideoSourceError> {
            self.grab()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_specs_are_monitor_numbers() {
        assert_eq!("0".parse::<ScreenSpec>(), Ok(ScreenSpec { monitor: 0 }));
        assert_eq!("2".parse::<ScreenSpec>(), Ok(ScreenSpec { monitor: 2 }));
        let err = "left".parse::<ScreenSpec>().unwrap_err();
        assert!(err.contains("e.g. --share-screen=1"), "{err}");
    }

    #[test]
    fn bgrx_pictures_become_bt601_limited_range_i420() {
        // 4×2: white, black, red, blue in the top row; green, grey, white, black below.
        let colours: [[u8; 3]; 8] = [
            [255, 255, 255],
            [0, 0, 0],
            [255, 0, 0],
            [0, 0, 255],
            [0, 255, 0],
            [128, 128, 128],
            [255, 255, 255],
            [0, 0, 0],
        ];
        let stride = 4 * 4 + 8; // rows padded
        let mut data = vec![0xEE; stride * 2];
        for (i, [r, g, b]) in colours.iter().enumerate() {
            let at = (i / 4) * stride + (i % 4) * 4;
            data[at..at + 4].copy_from_slice(&[*b, *g, *r, 0]);
        }
        let picture = bgrx_to_i420(&data, 4, 2, stride).expect("converts");
        assert_eq!(picture.y(), &[235, 16, 82, 41, 144, 126, 235, 16]);
        // Left block: white, black, green, grey; right block: red, blue, white, black.
        let (u, v) = (picture.u(), picture.v());
        assert_eq!((u[0], v[0]), (110, 105), "{u:?} {v:?}");
        assert_eq!((u[1], v[1]), (147, 152), "{u:?} {v:?}");
        assert!(bgrx_to_i420(&data, 4, 2, 8).is_none(), "stride too short");
        assert!(
            bgrx_to_i420(&data[..20], 4, 2, stride).is_none(),
            "too short"
        );
        assert!(bgrx_to_i420(&data, 3, 2, stride).is_none(), "odd width");
    }

    #[test]
    fn without_a_display_sharing_says_why_in_one_sentence() {
        if std::env::var_os("DISPLAY").is_some() {
            return; // a developer's desktop: the system test covers sharing a real screen
        }
        let Err(err) = open(ScreenSpec::default()) else {
            panic!("no display, yet a screen opened");
        };
        assert!(err.to_string().contains("DISPLAY is not set"), "{err}");
    }
}
