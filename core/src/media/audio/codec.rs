//! Opus at 48 kHz mono, 20 ms frames: voice mode, in-band FEC, DTX; decoding with FEC
//! recovery and packet-loss concealment.

use super::jitter::Playout;
use super::{AudioError, FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Target bitrate (bits/s) of voice.
pub const BITRATE: i32 = 32_000;
/// Expected loss the encoder protects against with in-band FEC, in percent.
pub const EXPECTED_LOSS_PERCENT: i32 = 10;
/// Largest encoded frame.
pub const MAX_PACKET: usize = 1275;

fn opus(err: opus::Error) -> AudioError {
    AudioError::Opus(err.to_string())
}

/// Encodes 20 ms frames.
pub struct Encoder {
    inner: opus::Encoder,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// A voice encoder with FEC and DTX on.
    pub fn new() -> Result<Self, AudioError> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(opus)?;
        inner
            .set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(opus)?;
        inner.set_inband_fec(true).map_err(opus)?;
        inner
            .set_packet_loss_perc(EXPECTED_LOSS_PERCENT)
            .map_err(opus)?;
        inner.set_dtx(true).map_err(opus)?;
        Ok(Self { inner })
    }

    /// Encodes one frame. With DTX, silence yields tiny packets (1–2 bytes) that the
    /// transport may skip.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, AudioError> {
        self.inner.encode_vec(frame, MAX_PACKET).map_err(opus)
    }
}

/// How a frame of output was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// From its own packet.
    Normal,
    /// Recovered from the FEC data in the next packet.
    Recovered,
    /// Invented by packet-loss concealment.
    Concealed,
}

/// Decodes one sender's stream.
pub struct Decoder {
    inner: opus::Decoder,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Decoder {
    /// A 48 kHz mono decoder.
    pub fn new() -> Result<Self, AudioError> {
        Ok(Self {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(opus)?,
        })
    }

    /// Decodes a packet into `frame`. A packet that does not decode (garbage) is concealed
    /// instead, and the error returned so it can be counted.
    pub fn decode(&mut self, packet: &[u8], frame: &mut Frame) -> Result<Decoded, AudioError> {
        match self.inner.decode(packet, frame, false) {
            Ok(n) if n == FRAME_SAMPLES => Ok(Decoded::Normal),
            Ok(n) => {
                frame[n.min(FRAME_SAMPLES)..].fill(0);
                Ok(Decoded::Normal)
            }
            Err(err) => {
                self.conceal(frame)?;
                Err(opus(err))
            }
        }
    }

    /// The frame before `next_packet` was lost: recover it from `next_packet`'s FEC data.
    pub fn recover(
        &mut self,
        next_packet: &[u8],
        frame: &mut Frame,
    ) -> Result<Decoded, AudioError> {
        match self.inner.decode(next_packet, frame, true) {
            Ok(_) => Ok(Decoded::Recovered),
            Err(_) => self.conceal(frame),
        }
    }

    /// Produces the frame the jitter buffer asked for: decode, recover from FEC, or conceal.
    /// Returns `None` (and leaves `frame` untouched) while playout has not started.
    pub fn play(
        &mut self,
        playout: Playout,
        frame: &mut Frame,
    ) -> Result<Option<Decoded>, AudioError> {
        match playout {
            Playout::Wait => Ok(None),
            Playout::Frame(packet) => self.decode(&packet, frame).map(Some),
            Playout::Recover(next) => self.recover(&next, frame).map(Some),
            Playout::Conceal => self.conceal(frame).map(Some),
        }
    }

    /// The frame is lost and no FEC is available: conceal it.
    pub fn conceal(&mut self, frame: &mut Frame) -> Result<Decoded, AudioError> {
        self.inner.decode(&[], frame, false).map_err(opus)?;
        Ok(Decoded::Concealed)
    }
}
