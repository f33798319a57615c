//! Where outgoing audio comes from: synthetic sources for headless use and WAV files.
//! Device capture (cpal) implements the same trait in [`super::device`]; [`super::spec`]
//! chooses between them.

use std::path::Path;

use super::{AudioError, FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Produces 20 ms frames of 48 kHz mono audio on demand.
pub trait AudioSource: Send {
    /// Fills `frame` with the next 20 ms; returns false once the source has ended (the
    /// frame is then silence).
    fn next_frame(&mut self, frame: &mut Frame) -> bool;
}

/// Digital silence forever.
#[derive(Debug, Default)]
pub struct Silence;

impl AudioSource for Silence {
    fn next_frame(&mut self, frame: &mut Frame) -> bool {
        frame.fill(0);
        true
    }
}

/// A sine tone at a fixed frequency and amplitude, forever.
#[derive(Debug)]
pub struct Tone {
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl Tone {
    /// A tone of `hz` at `amplitude` (0.0–1.0 of full scale).
    pub fn new(hz: f64, amplitude: f64) -> Self {
        Self {
            step: std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE),
            phase: 0.0,
            amplitude: amplitude.clamp(0.0, 1.0) * f64::from(i16::MAX),
        }
    }
}

impl AudioSource for Tone {
    fn next_frame(&mut self, frame: &mut Frame) -> bool {
        for sample in frame.iter_mut() {
            *sample = (self.phase.sin() * self.amplitude) as i16;
            self.phase = (self.phase + self.step) % std::f64::consts::TAU;
        }
        true
    }
}

/// A WAV file, mixed down to mono and resampled (linearly) to 48 kHz at load time.
#[derive(Debug)]
pub struct WavSource {
    samples: Vec<i16>,
    position: usize,
}

impl WavSource {
    /// Loads a PCM WAV file (8/16/24/32-bit integer or 32-bit float, any rate, any channels).
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let wav_err = |message: String| AudioError::Wav {
            path: path.display().to_string(),
            message,
        };
        let mut reader = hound::WavReader::open(path).map_err(|e| wav_err(e.to_string()))?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        let interleaved: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(|e| wav_err(e.to_string()))?,
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                reader
                    .samples::<i32>()
                    .map(|s| s.map(|s| s as f32 * scale))
                    .collect::<Result<_, _>>()
                    .map_err(|e| wav_err(e.to_string()))?
            }
        };
        let mono: Vec<f32> = interleaved
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect();
        let samples = resample(&mono, spec.sample_rate, SAMPLE_RATE)
            .into_iter()
            .map(|s| (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)
            .collect();
        Ok(Self {
            samples,
            position: 0,
        })
    }

    /// Total length in samples at 48 kHz.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the file holds no audio.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

impl AudioSource for WavSource {
    fn next_frame(&mut self, frame: &mut Frame) -> bool {
        let available = self
            .samples
            .len()
            .saturating_sub(self.position)
            .min(FRAME_SAMPLES);
        frame[..available].copy_from_slice(&self.samples[self.position..self.position + available]);
        frame[available..].fill(0);
        self.position += available;
        available > 0
    }
}

fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let ratio = f64::from(from) / f64::from(to);
    let out_len = (input.len() as f64 / ratio) as usize;
    (0..out_len)
        .map(|i| {
            let position = i as f64 * ratio;
            let index = position as usize;
            let fraction = (position - index as f64) as f32;
            let a = input[index.min(input.len() - 1)];
            let b = input[(index + 1).min(input.len() - 1)];
            a + (b - a) * fraction
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::audio::sink::{AudioSink, WavSink};

    #[test]
    fn a_wav_file_round_trips_and_other_rates_are_resampled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.wav");
        let mut tone = Tone::new(440.0, 0.5);
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut written = Vec::new();
        let mut sink = WavSink::create(&path).unwrap();
        for _ in 0..10 {
            tone.next_frame(&mut frame);
            written.extend_from_slice(&frame);
            sink.write(&frame).unwrap();
        }
        sink.finish().unwrap();
        let mut source = WavSource::open(&path).unwrap();
        assert_eq!(source.len(), written.len());
        let mut read = Vec::new();
        while source.next_frame(&mut frame) {
            read.extend_from_slice(&frame);
        }
        assert_eq!(read.len(), written.len());
        let worst = read
            .iter()
            .zip(&written)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap_or(0);
        assert!(
            worst <= 1,
            "16-bit samples survive the float mixdown within one step (worst {worst})"
        );
        assert!(!source.next_frame(&mut frame), "ended");

        // A 16 kHz stereo file comes out at 48 kHz mono, three times as long.
        let path16 = dir.path().join("16k.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path16, spec).unwrap();
        for i in 0..1600i32 {
            writer.write_sample((i % 100) as i16).unwrap();
            writer.write_sample((i % 100) as i16).unwrap();
        }
        writer.finalize().unwrap();
        assert_eq!(WavSource::open(&path16).unwrap().len(), 4800);
    }
}
