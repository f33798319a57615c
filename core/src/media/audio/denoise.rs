//! Noise suppression on the send path: RNNoise (the `nnnoiseless` port) over each 20 ms frame.
//!
//! RNNoise works on 10 ms blocks of 48 kHz audio scaled like 16-bit PCM, so a frame is two
//! blocks. Everything is preallocated: [`NoiseSuppressor::process`] never allocates, so it may
//! run wherever the frame is produced. The output lags the input by RNNoise's internal
//! look-ahead (10 ms), which is part of the figure in `docs/performance.md`.

use nnnoiseless::DenoiseState;

use super::{FRAME_SAMPLES, Frame};

const BLOCK: usize = DenoiseState::FRAME_SIZE;
const BLOCKS_PER_FRAME: usize = FRAME_SAMPLES / BLOCK;

/// RNNoise state for one microphone.
pub struct NoiseSuppressor {
    state: Box<DenoiseState<'static>>,
    input: [f32; BLOCK],
    output: [f32; BLOCK],
    voice_probability: f32,
}

impl std::fmt::Debug for NoiseSuppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseSuppressor")
            .field("voice_probability", &self.voice_probability)
            .finish_non_exhaustive()
    }
}

impl Default for NoiseSuppressor {
    fn default() -> Self {
        Self::new()
    }
}

impl NoiseSuppressor {
    /// A suppressor with RNNoise's built-in model.
    pub fn new() -> Self {
        Self {
            state: DenoiseState::new(),
            input: [0.0; BLOCK],
            output: [0.0; BLOCK],
            voice_probability: 0.0,
        }
    }

    /// Denoises `frame` in place.
    pub fn process(&mut self, frame: &mut Frame) {
        let mut voice = 0.0f32;
        for block in frame.chunks_exact_mut(BLOCK) {
            for (input, sample) in self.input.iter_mut().zip(block.iter()) {
                *input = f32::from(*sample);
            }
            voice = voice.max(self.state.process_frame(&mut self.output, &self.input));
            for (sample, output) in block.iter_mut().zip(self.output.iter()) {
                *sample = output
                    .round()
                    .clamp(f32::from(i16::MIN), f32::from(i16::MAX))
                    as i16;
            }
        }
        self.voice_probability = voice;
    }

    /// RNNoise's estimate (0–1) that the last processed frame contained speech.
    pub fn voice_probability(&self) -> f32 {
        self.voice_probability
    }
}

const _: () = assert!(BLOCKS_PER_FRAME * BLOCK == FRAME_SAMPLES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::mixer::level_dbfs;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Fan-like background noise: white noise through a one-pole low-pass (energy falls with
    /// frequency, like ventilation or traffic rumble).
    pub(crate) fn fan_noise(rng: &mut StdRng, state: &mut f32, amplitude: f32) -> Frame {
        let mut frame = [0i16; FRAME_SAMPLES];
        for sample in &mut frame {
            *state = 0.99 * *state + 0.1 * rng.gen_range(-1.0f32..1.0);
            *sample = (*state * amplitude * f32::from(i16::MAX)) as i16;
        }
        frame
    }

    #[test]
    fn background_noise_is_strongly_attenuated() {
        for amplitude in [0.02, 0.05, 0.2] {
            let mut rng = StdRng::seed_from_u64(7);
            let mut suppressor = NoiseSuppressor::new();
            let (mut before, mut after, mut lowpass) = (Vec::new(), Vec::new(), 0.0);
            for i in 0..150 {
                let mut frame = fan_noise(&mut rng, &mut lowpass, amplitude);
                let input_level = level_dbfs(&frame);
                suppressor.process(&mut frame);
                // Skip the first second: RNNoise learns the noise floor.
                if i >= 50 {
                    before.push(input_level);
                    after.push(level_dbfs(&frame));
                    assert!(suppressor.voice_probability() < 0.5);
                }
            }
            let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
            let attenuation = mean(&before) - mean(&after);
            assert!(
                attenuation > 30.0,
                "noise at {:.0} dBFS attenuated by only {attenuation:.1} dB",
                mean(&before)
            );
        }
    }

    #[test]
    fn silence_stays_silence_and_nothing_panics_on_full_scale() {
        let mut suppressor = NoiseSuppressor::new();
        let mut frame = [0i16; FRAME_SAMPLES];
        suppressor.process(&mut frame);
        assert!(frame.iter().all(|&s| s == 0));
        let mut loud = [i16::MAX; FRAME_SAMPLES];
        for _ in 0..10 {
            suppressor.process(&mut loud);
            loud.iter_mut()
                .enumerate()
                .for_each(|(i, s)| *s = if i % 2 == 0 { i16::MAX } else { i16::MIN });
        }
    }
}
