//! Where received audio goes: a WAV file (48 kHz mono 16-bit) or nowhere. Device playback
//! (cpal) implements the same trait in [`super::device`].

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::{AudioError, SAMPLE_RATE};

/// Consumes mixed 48 kHz mono audio.
pub trait AudioSink: Send {
    /// Takes one frame (or any number of samples).
    fn write(&mut self, samples: &[i16]) -> Result<(), AudioError>;
    /// Flushes and closes (a WAV header is completed here).
    fn finish(&mut self) -> Result<(), AudioError>;
}

/// Discards everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl AudioSink for NullSink {
    fn write(&mut self, _samples: &[i16]) -> Result<(), AudioError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
}

/// Writes a 48 kHz mono 16-bit WAV file.
pub struct WavSink {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<std::fs::File>>>,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WavSink {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> Result<Self, AudioError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| AudioError::Wav {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            writer: Some(writer),
        })
    }

    fn error(&self, err: impl std::fmt::Display) -> AudioError {
        AudioError::Wav {
            path: self.path.display().to_string(),
            message: err.to_string(),
        }
    }
}

impl AudioSink for WavSink {
    fn write(&mut self, samples: &[i16]) -> Result<(), AudioError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.error("already finished"));
        };
        for sample in samples {
            if let Err(err) = writer.write_sample(*sample) {
                return Err(self.error(err));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(writer) => writer.finalize().map_err(|e| self.error(e)),
            None => Ok(()),
        }
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Err(err) = self.finish() {
            tracing::warn!(error = %err, "could not complete the WAV file");
        }
    }
}
