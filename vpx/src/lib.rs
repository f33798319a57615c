//! VP8 through the system libvpx, behind a safe interface: [`Encoder`] turns I420 frames
//! into VP8 frames, [`Decoder`] turns them back.
//!
//! This crate is where Conclave's media path calls C. Every `unsafe` block is here, each
//! with the invariant it relies on (a `SAFETY:` comment); `conclave-core` forbids `unsafe`
//! and uses only this interface. What the wrapper guarantees:
//! - a codec context lives exactly as long as its [`Encoder`] or [`Decoder`] (initialised in
//!   `new`, destroyed in `Drop`, never copied), and is used by one thread at a time (`&mut
//!   self`; the types are `Send`, not `Sync`);
//! - the frame handed to the encoder is borrowed for the call only, and its planes are
//!   checked against the configured size before libvpx reads them;
//! - encoded and decoded data are copied out of libvpx's buffers before the next call on
//!   the context can reuse them.
//!
//! The encoder is set up for calls: one pass, constant bitrate, realtime deadline, no lag,
//! error resilient (a lost frame damages only what depends on it), keyframes on request and
//! at most every [`EncoderConfig::keyframe_interval`] frames.

mod convert;
mod decoder;
mod encoder;
mod frame;

pub use convert::yuv_to_rgb;
pub use decoder::Decoder;
pub use encoder::{Content, EncodedFrame, Encoder, EncoderConfig, SCREEN_FPS};
pub use frame::{FrameError, I420Frame, MAX_DIMENSION};

/// Why libvpx refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VpxError {
    /// A codec context could not be set up.
    #[error("libvpx could not start the {what}: {reason}")]
    Init {
        /// Encoder or decoder.
        what: &'static str,
        /// libvpx's message.
        reason: String,
    },
    /// Encoding a frame failed.
    #[error("VP8 encoding failed: {0}")]
    Encode(String),
    /// The data is not a VP8 frame this decoder can decode (corrupt, truncated, or missing
    /// its reference frames).
    #[error("VP8 decoding failed: {0}")]
    Decode(String),
    /// A frame does not match the encoder's configured size.
    #[error("frame of {got_width}x{got_height} given to an encoder of {width}x{height}")]
    WrongSize {
        /// Configured width.
        width: u32,
        /// Configured height.
        height: u32,
        /// The frame's width.
        got_width: u32,
        /// The frame's height.
        got_height: u32,
    },
    /// A configuration value libvpx cannot take.
    #[error("invalid encoder setting: {0}")]
    Config(&'static str),
}

/// libvpx's last error message for `ctx`, or the code's name.
fn error_text(ctx: &mut vpx_sys::vpx_codec_ctx_t, code: vpx_sys::vpx_codec_err_t) -> String {
    // SAFETY: `ctx` is a live, initialised context (callers hold it through `&mut self`);
    // vpx_codec_error returns a pointer to a static or context-owned NUL-terminated string,
    // which is copied out before the context is used again.
    let text = unsafe {
        let message = vpx_sys::vpx_codec_error(ctx);
        if message.is_null() {
            None
        } else {
            Some(
                std::ffi::CStr::from_ptr(message)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    text.unwrap_or_else(|| format!("{code:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture with detail and motion: diagonal luma bands moving `t` pixels, a square
    /// whose position depends on `t`, and chroma gradients.
    fn picture(width: u32, height: u32, t: u32) -> I420Frame {
        let mut frame = I420Frame::black(width, height).expect("valid size");
        let w = width as usize;
        for (i, y) in frame.y_mut().iter_mut().enumerate() {
            let (row, col) = (i / w, i % w);
            let band = ((row + col + t as usize * 4) / 16) % 2;
            let in_square = (col + 64).saturating_sub(t as usize * 3) % w < 64 && row / 64 == 1;
            *y = if in_square {
                235
            } else {
                40 + 120 * band as u8
            };
        }
        let (u, v) = frame.uv_mut();
        for (i, (u, v)) in u.iter_mut().zip(v.iter_mut()).enumerate() {
            *u = (i % 200) as u8 + 20;
            *v = ((i / 7) % 200) as u8 + 20;
        }
        frame
    }

    #[test]
    fn frames_survive_the_round_trip_with_high_quality() {
        let (width, height) = (320, 180);
        let mut encoder = Encoder::new(EncoderConfig::realtime(width, height)).expect("encoder");
        let mut decoder = Decoder::new().expect("decoder");
        let mut worst = f64::INFINITY;
        for t in 0..30 {
            let sent = picture(width, height, t);
            let frames = encoder.encode(&sent, false).expect("encodes");
            assert_eq!(frames.len(), 1, "one frame per picture (no lag, no drops)");
            assert_eq!(frames[0].keyframe, t == 0, "only the first is a keyframe");
            let got = decoder
                .decode(&frames[0].data)
                .expect("decodes")
                .expect("a picture");
            assert_eq!((got.width(), got.height()), (width, height));
            // The first frames warm the rate control up.
            if t >= 5 {
                worst = worst.min(got.psnr_y(&sent).expect("same size"));
            }
        }
        assert!(worst >= 30.0, "luma PSNR {worst:.1} dB");
        assert_eq!(decoder.decoded(), 30);
    }

    /// Text-like detail: one-pixel strokes in 8×12 glyph cells, dark on light.
    fn page(width: u32, height: u32) -> I420Frame {
        let mut frame = I420Frame::black(width, height).expect("valid size");
        let w = width as usize;
        for (i, y) in frame.y_mut().iter_mut().enumerate() {
            let (row, col) = (i / w, i % w);
            let glyph = (row / 12 * 131 + col / 8 * 71) % 17;
            let stroke = (row % 12 < 9) && ((col % 8 == glyph % 5) || (row % 12 == glyph % 9));
            *y = if stroke && glyph > 3 { 30 } else { 230 };
        }
        let (u, v) = frame.uv_mut();
        u.fill(128);
        v.fill(128);
        frame
    }

    #[test]
    fn a_still_screen_of_text_comes_out_sharp_at_its_screen_rate() {
        let (width, height) = (1280, 720);
        let config = EncoderConfig::screen(width, height);
        assert_eq!((config.fps, config.content), (SCREEN_FPS, Content::Screen));
        let mut encoder = Encoder::new(config).expect("encoder");
        let mut decoder = Decoder::new().expect("decoder");
        let sent = page(width, height);
        let mut last = None;
        for _ in 0..2 * SCREEN_FPS {
            for frame in encoder.encode(&sent, false).expect("encodes") {
                last = decoder.decode(&frame.data).expect("decodes");
            }
        }
        let psnr = last.expect("a picture").psnr_y(&sent).expect("same size");
        assert!(psnr >= 35.0, "luma PSNR {psnr:.1} dB after two seconds");
    }

    #[test]
    fn a_keyframe_comes_when_asked_and_lets_a_new_decoder_start() {
        let mut encoder = Encoder::new(EncoderConfig::realtime(160, 90)).expect("encoder");
        for t in 0..3 {
            encoder
                .encode(&picture(160, 90, t), false)
                .expect("encodes");
        }
        let delta = encoder
            .encode(&picture(160, 90, 3), false)
            .expect("encodes");
        assert!(!delta[0].keyframe);
        let mut late = Decoder::new().expect("decoder");
        assert!(
            late.decode(&delta[0].data).is_err(),
            "a delta frame alone does not decode"
        );
        let key = encoder.encode(&picture(160, 90, 4), true).expect("encodes");
        assert!(key[0].keyframe);
        assert!(late.decode(&key[0].data).expect("decodes").is_some());
    }

    #[test]
    fn bad_input_is_an_error_never_a_crash() {
        let mut encoder = Encoder::new(EncoderConfig::realtime(160, 90)).expect("encoder");
        assert!(matches!(
            encoder.encode(&picture(320, 180, 0), false),
            Err(VpxError::WrongSize { .. })
        ));
        let key = encoder
            .encode(&picture(160, 90, 0), false)
            .expect("encodes");
        let mut decoder = Decoder::new().expect("decoder");
        assert!(decoder.decode(&[]).is_err());
        assert!(decoder.decode(&[0x9d, 0x01, 0x2a]).is_err());
        // A truncated or scrambled frame: an error or a damaged picture, never a crash.
        let _ = decoder.decode(&key[0].data[..key[0].data.len() / 3]);
        let mut garbage = key[0].data.clone();
        for (i, byte) in garbage.iter_mut().enumerate().skip(10) {
            *byte ^= (i * 31) as u8;
        }
        let _ = decoder.decode(&garbage);
        // Still usable afterwards.
        let mut fresh = Decoder::new().expect("decoder");
        assert!(fresh.decode(&key[0].data).expect("decodes").is_some());
        assert!(Encoder::new(EncoderConfig::realtime(161, 90)).is_err());
        assert!(
            Encoder::new(EncoderConfig {
                speed: 99,
                ..EncoderConfig::realtime(160, 90)
            })
            .is_err()
        );
    }

    #[test]
    fn the_bitrate_can_change_between_frames() {
        let mut encoder = Encoder::new(EncoderConfig::realtime(320, 180)).expect("encoder");
        encoder
            .encode(&picture(320, 180, 0), false)
            .expect("encodes");
        encoder.set_bitrate(150).expect("accepted");
        assert_eq!(encoder.config().bitrate_kbps, 150);
        assert!(encoder.set_bitrate(0).is_err());
        encoder
            .encode(&picture(320, 180, 1), false)
            .expect("still encodes");
    }
}
