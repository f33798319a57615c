//! The audio pipeline, sans-IO: 48 kHz mono, 20 ms frames.
//!
//! Send: [`source::AudioSource`] (device, tone, silence or WAV file) → noise suppression
//! ([`denoise::NoiseSuppressor`], RNNoise) → [`codec::Encoder`]
//! (Opus, in-band FEC, DTX) → SFrame ([`crate::media::crypto`]) → transport.
//! Receive: transport → [`jitter::JitterBuffer`] (adaptive playout delay, reorder, loss) →
//! SFrame open → [`codec::Decoder`] (FEC recovery or PLC on loss) → [`mixer::Mixer`]
//! (per-speaker level, sum) → [`sink::AudioSink`] (device, WAV file or null).
//!
//! [`spec`] opens what `--audio-in`/`--audio-out` name; [`device`] is the one place where
//! cpal devices are looked up (the app's settings screen uses it too).
//!
//! Nothing here reads a clock or blocks: the caller paces frames (a real-time driver, or a
//! simulated clock in tests).

pub mod codec;
pub mod denoise;
pub mod device;
pub mod jitter;
pub mod mixer;
pub mod sink;
pub mod source;
pub mod spec;

/// Sample rate of the whole pipeline.
pub const SAMPLE_RATE: u32 = 48_000;
/// Duration of one frame in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Samples in one (mono) frame.
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;

/// One frame of mono PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// Errors of the audio pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The Opus codec refused an operation.
    #[error("opus: {0}")]
    Opus(String),
    /// A WAV file could not be read or written.
    #[error("WAV file {path}: {message}")]
    Wav {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A source specification (`--audio-in`) that names nothing we can play.
    #[error("unknown audio source {0:?} (expected device, silence, tone:HZ or a .wav file)")]
    BadSource(String),
    /// A sound device is missing or failed.
    #[error("{0}")]
    Device(String),
}
