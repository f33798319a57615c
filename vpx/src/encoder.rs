//! The VP8 encoder: one per sent quality layer, whatever the number of receivers.

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_long, c_uint, c_ulong};

use vpx_sys as ffi;

use crate::{I420Frame, VpxError, error_text};

/// How to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Picture width (even).
    pub width: u32,
    /// Picture height (even).
    pub height: u32,
    /// Frames per second the source delivers.
    pub fps: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// At most this many frames between keyframes (besides the ones asked for).
    pub keyframe_interval: u32,
    /// Encoder threads.
    pub threads: u32,
    /// libvpx's speed/quality trade-off for realtime (`VP8E_SET_CPUUSED`, 0..=16: higher
    /// is faster and coarser).
    pub speed: u8,
    /// What the pictures show, which decides what the rate control gives up first.
    pub content: Content,
}

/// What an encoder's pictures show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Content {
    /// A camera: motion over detail (every frame goes out, coarser when the rate is short).
    #[default]
    Camera,
    /// A shared screen: detail over motion. libvpx's screen-content mode, a finer quantizer
    /// ceiling, and pictures dropped rather than blurred when the rate is short, so text
    /// stays sharp.
    Screen,
}

/// Largest frame rate of a shared screen.
pub const SCREEN_FPS: u32 = 15;

impl EncoderConfig {
    /// A realtime configuration for `width × height` at 30 fps, with a bitrate for the size
    /// (about 0.12 bit per pixel per frame at 360p: 800 kbit/s; 2.5 Mbit/s at 720p).
    pub fn realtime(width: u32, height: u32) -> Self {
        let pixels = u64::from(width) * u64::from(height);
        let bitrate_kbps =
            u32::try_from((pixels * 800 / (640 * 360)).clamp(100, 4000)).unwrap_or(4000);
        Self {
            width,
            height,
            fps: 30,
            bitrate_kbps,
            keyframe_interval: 300,
            threads: 1,
            speed: 8,
            content: Content::Camera,
        }
    }

    /// A configuration for a shared screen of `width × height` at [`SCREEN_FPS`]: about
    /// 1.2 Mbit/s at 720p and 2.5 Mbit/s at 1080p (text needs fine quantizers, though a
    /// still screen costs far less than that once its first picture is through).
    pub fn screen(width: u32, height: u32) -> Self {
        let pixels = u64::from(width) * u64::from(height);
        let bitrate_kbps =
            u32::try_from((pixels * 1200 / (1280 * 720)).clamp(150, 4000)).unwrap_or(4000);
        Self {
            width,
            height,
            fps: SCREEN_FPS,
            bitrate_kbps,
            keyframe_interval: 300,
            threads: 2,
            speed: 8,
            content: Content::Screen,
        }
    }
}

/// One encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 frame.
    pub data: Vec<u8>,
    /// Whether it is a keyframe (decodable without any earlier frame).
    pub keyframe: bool,
}

/// A VP8 encoder (libvpx, realtime, CBR, error resilient).
pub struct Encoder {
    /// Boxed: libvpx keeps pointers to both for the context's life.
    ctx: Box<ffi::vpx_codec_ctx_t>,
    cfg: Box<ffi::vpx_codec_enc_cfg_t>,
    config: EncoderConfig,
    /// Presentation time of the next frame, in the timebase (1/fps).
    pts: i64,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("config", &self.config)
            .field("frames", &self.pts)
            .finish_non_exhaustive()
    }
}

// SAFETY: the context and the configuration it points to are owned by this value and only
// reached through `&mut self`; a libvpx context has no affinity to the thread that made it.
unsafe impl Send for Encoder {}

impl Encoder {
    /// A VP8 encoder for `config`.
    pub fn new(config: EncoderConfig) -> Result<Self, VpxError> {
        I420Frame::byte_len(config.width, config.height)
            .map_err(|_| VpxError::Config("width and height must be even, 2..=8192"))?;
        if config.fps == 0 || config.bitrate_kbps == 0 || config.threads == 0 {
            return Err(VpxError::Config(
                "fps, bitrate and threads must be positive",
            ));
        }
        if config.speed > 16 {
            return Err(VpxError::Config("speed is 0..=16"));
        }
        let init_err = |reason: String| VpxError::Init {
            what: "VP8 encoder",
            reason,
        };
        // SAFETY: vpx_codec_vp8_cx returns a pointer to libvpx's static interface table;
        // vpx_codec_enc_config_default fills the whole configuration it is given (a plain C
        // struct of integers, for which all-zero is also a valid value).
        let mut cfg: Box<ffi::vpx_codec_enc_cfg_t> = unsafe {
            let mut cfg = Box::new(MaybeUninit::<ffi::vpx_codec_enc_cfg_t>::zeroed().assume_init());
            let code = ffi::vpx_codec_enc_config_default(ffi::vpx_codec_vp8_cx(), &mut *cfg, 0);
            if code != ffi::VPX_CODEC_OK {
                return Err(init_err(format!("{code:?}")));
            }
            cfg
        };
        cfg.g_w = config.width;
        cfg.g_h = config.height;
        cfg.g_timebase = ffi::vpx_rational {
            num: 1,
            den: c_int::try_from(config.fps).map_err(|_| VpxError::Config("fps too high"))?,
        };
        cfg.g_threads = config.threads;
        cfg.g_error_resilient = ffi::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = ffi::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.g_lag_in_frames = 0;
        cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = config.bitrate_kbps;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = match config.content {
            Content::Camera => 56,
            Content::Screen => 48,
        };
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.rc_dropframe_thresh = match config.content {
            Content::Camera => 0,
            // Drop a picture when the buffer runs this low (percent) instead of coarsening.
            Content::Screen => 30,
        };
        cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = config.keyframe_interval.max(1);

        // SAFETY: an all-zero context is the uninitialised state libvpx expects;
        // vpx_codec_enc_init_ver initialises it and keeps a pointer to `cfg`, which is boxed
        // and lives in the same `Encoder` as the context, so it outlives every use.
        let mut ctx = unsafe {
            let mut ctx = Box::new(MaybeUninit::<ffi::vpx_codec_ctx_t>::zeroed().assume_init());
            let code = ffi::vpx_codec_enc_init_ver(
                &mut *ctx,
                ffi::vpx_codec_vp8_cx(),
                &*cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            );
            if code != ffi::VPX_CODEC_OK {
                return Err(init_err(format!("{code:?}")));
            }
            ctx
        };
        let controls = [
            (
                ffi::vp8e_enc_control_id::VP8E_SET_CPUUSED,
                c_int::from(config.speed),
            ),
            (ffi::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0),
            (ffi::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1),
            (ffi::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS, 0),
            (
                ffi::vp8e_enc_control_id::VP8E_SET_SCREEN_CONTENT_MODE,
                c_int::from(config.content == Content::Screen),
            ),
        ];
        for (control, value) in controls {
            // SAFETY: `ctx` is initialised; each of these VP8 controls takes one `int`.
            let code = unsafe { ffi::vpx_codec_control_(&mut *ctx, control as c_int, value) };
            if code != ffi::VPX_CODEC_OK {
                let reason = error_text(&mut ctx, code);
                // SAFETY: initialised above, destroyed once (no `Encoder` owns it yet).
                unsafe { ffi::vpx_codec_destroy(&mut *ctx) };
                return Err(init_err(reason));
            }
        }
        Ok(Self {
            ctx,
            cfg,
            config,
            pts: 0,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Changes the target bitrate from the next frame on.
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), VpxError> {
        if kbps == 0 {
            return Err(VpxError::Config("bitrate must be positive"));
        }
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: `ctx` is initialised; `cfg` is the boxed configuration it already points to.
        let code = unsafe { ffi::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        if code != ffi::VPX_CODEC_OK {
            return Err(VpxError::Encode(error_text(&mut self.ctx, code)));
        }
        self.config.bitrate_kbps = kbps;
        Ok(())
    }

    /// Encodes one picture (a keyframe if `keyframe`); returns the frames libvpx produced
    /// (one, or none when it drops the picture to hold the bitrate).
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VpxError> {
        if (frame.width(), frame.height()) != (self.config.width, self.config.height) {
            return Err(VpxError::WrongSize {
                width: self.config.width,
                height: self.config.height,
                got_width: frame.width(),
                got_height: frame.height(),
            });
        }
        let flags: c_long = if keyframe {
            ffi::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        let mut image = MaybeUninit::<ffi::vpx_image_t>::zeroed();
        // SAFETY: vpx_img_wrap only describes `frame`'s buffer (packed I420 of the
        // configured size, checked above and by `I420Frame`'s constructors, with stride
        // alignment 1 so the planes lie where I420 puts them); the encoder reads the
        // picture during vpx_codec_encode and keeps no pointer to it afterwards, and never
        // writes to it, so lending the shared buffer as `*mut` is sound.
        let code = unsafe {
            let wrapped = ffi::vpx_img_wrap(
                image.as_mut_ptr(),
                ffi::vpx_img_fmt::VPX_IMG_FMT_I420,
                frame.width() as c_uint,
                frame.height() as c_uint,
                1,
                frame.as_bytes().as_ptr().cast_mut(),
            );
            if wrapped.is_null() {
                return Err(VpxError::Encode("the picture could not be wrapped".into()));
            }
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                wrapped,
                self.pts,
                1,
                flags,
                ffi::VPX_DL_REALTIME as c_ulong,
            )
        };
        self.pts += 1;
        if code != ffi::VPX_CODEC_OK {
            return Err(VpxError::Encode(error_text(&mut self.ctx, code)));
        }
        let mut out = Vec::new();
        let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: `ctx` is initialised and `iter` starts null, as the iteration wants; a
            // returned packet and the buffer it names stay valid until the next call on the
            // context, and are copied out before it.
            let packet = unsafe { ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if packet.is_null() {
                break;
            }
            // SAFETY: non-null packets point to initialised packets (see above); `frame` is
            // the union member that VPX_CODEC_CX_FRAME_PKT packets carry.
            unsafe {
                if (*packet).kind == ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    let frame = (*packet).data.frame;
                    let data = if frame.buf.is_null() || frame.sz == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(frame.buf.cast::<u8>(), frame.sz as usize)
                            .to_vec()
                    };
                    out.push(EncodedFrame {
                        data,
                        keyframe: frame.flags & ffi::VPX_FRAME_IS_KEY != 0,
                    });
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed exactly once, here.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}
