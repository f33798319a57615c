//! The video pipeline but for its transport and its thread (`media::video_loop`): sources
//! ([`source`]: the `testsrc` pattern, which carries its frame number and capture time so
//! a receiver can measure latency, freezes and quality against the exact reference; Y4M
//! files; V4L2 cameras), the VP8 codec (`conclave-vpx`, the only crate with `unsafe`), the
//! sender ([`sender`]: one encoder, SFrame) and the rate it aims at ([`rate`]: the
//! weakest path's send estimate), VP8 RTP reassembly that waits for repairs
//! ([`rtp`]), the receiver ([`receiver`]: open, decode, keyframe after a loss), what a
//! receiver measures of each sender's video ([`monitor`]), and `--video-out` ([`sink`]).
//!
//! Pictures are 8-bit I420 ([`I420Frame`]).

pub mod camera;
pub mod cpu;
pub mod display;
pub mod monitor;
pub mod rate;
pub mod receiver;
pub mod rtp;
pub mod scale;
pub mod screen;
pub mod sender;
pub mod sink;
pub mod source;
pub mod testsrc;
pub mod y4m;

/// RTP clock rate of video (RFC 7741).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

pub use conclave_vpx::{
    Content, Decoder, EncodedFrame, Encoder, EncoderConfig, I420Frame, VpxError, yuv_to_rgb,
};

/// Which of a member's two videos: its camera, or the screen it shares. Each has its own
/// track on every connection (its own RTP sequence, repair and keyframe requests) and its
/// own SFrame stream (KID context), so a frame of one can never be taken for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VideoKind {
    /// The camera (or test source, or file) `--video-in` names.
    Camera,
    /// A shared screen (`--share-screen`).
    Screen,
}

impl VideoKind {
    /// Both kinds.
    pub const ALL: [VideoKind; 2] = [VideoKind::Camera, VideoKind::Screen];

    /// The SFrame stream its frames are sealed for.
    pub fn stream(self) -> crate::media::crypto::sframe::Stream {
        match self {
            VideoKind::Camera => crate::media::crypto::sframe::Stream::Video,
            VideoKind::Screen => crate::media::crypto::sframe::Stream::Screen,
        }
    }

    /// `camera` or `screen` (events, file names).
    pub fn as_str(self) -> &'static str {
        match self {
            VideoKind::Camera => "camera",
            VideoKind::Screen => "screen",
        }
    }
}

/// A member's video (camera or shared screen) from which no frame came for this long is
/// taken as stopped: its receiver is dropped (`video_stopped`; the window shows the avatar
/// again), and the next picture starts afresh (`video_started`). A shared screen goes on
/// sending while still (the encoder drops pictures to hold its rate, but sends several a
/// second of an unchanged screen); a camera sends every picture.
pub const VIDEO_GONE_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a video source cannot deliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoSourceError {
    /// The source file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a Y4M stream this build reads.
    #[error("{path} is not a usable Y4M file: {reason}")]
    BadY4m {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, in one sentence.
        reason: String,
    },
    /// The camera cannot be used.
    #[error("{device}: {reason}")]
    Camera {
        /// The device.
        device: String,
        /// Why, in one sentence.
        reason: &'static str,
    },
    /// The screen cannot be shared.
    #[error("screen sharing: {reason}")]
    Screen {
        /// Why, in one sentence.
        reason: String,
    },
    /// A size the pipeline cannot take.
    #[error("{0}")]
    Frame(#[from] conclave_vpx::FrameError),
}
