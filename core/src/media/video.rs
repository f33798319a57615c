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
pub mod monitor;
pub mod rate;
pub mod receiver;
pub mod rtp;
pub mod scale;
pub mod sender;
pub mod sink;
pub mod source;
pub mod testsrc;
pub mod y4m;

/// RTP clock rate of video (RFC 7741).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

pub use conclave_vpx::{Decoder, EncodedFrame, Encoder, EncoderConfig, I420Frame, VpxError};

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
    /// A size the pipeline cannot take.
    #[error("{0}")]
    Frame(#[from] conclave_vpx::FrameError),
}
