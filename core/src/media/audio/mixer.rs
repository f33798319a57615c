//! Mixing speakers and measuring who is speaking.

use super::{FRAME_SAMPLES, Frame};

/// Level (dBFS) above which a speaker counts as speaking.
pub const SPEAKING_DBFS: f32 = -45.0;

/// RMS level of a frame in dBFS (−∞ for digital silence is reported as −120).
pub fn level_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let sum: f64 = frame.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
    let rms = (sum / frame.len() as f64).sqrt() / f64::from(i16::MAX);
    if rms <= 1e-6 {
        -120.0
    } else {
        (20.0 * rms.log10()) as f32
    }
}

/// Power of one frequency in `samples` (Goertzel), normalised by length: how much of a tone
/// a recording holds. Used to check who was heard (demo, tests, benches).
pub fn tone_power(samples: &[i16], frequency: f64) -> f64 {
    let k = 2.0 * (std::f64::consts::TAU * frequency / f64::from(super::SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for sample in samples {
        let s0 = f64::from(*sample) / 32768.0 + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

/// Sums the frames of several speakers with saturation.
#[derive(Debug)]
pub struct Mixer {
    sum: [i32; FRAME_SAMPLES],
    speakers: usize,
}

impl Default for Mixer {
    fn default() -> Self {
        Self {
            sum: [0; FRAME_SAMPLES],
            speakers: 0,
        }
    }
}

impl Mixer {
    /// Adds one speaker's frame to the current mix.
    pub fn add(&mut self, frame: &Frame) {
        for (acc, sample) in self.sum.iter_mut().zip(frame) {
            *acc += i32::from(*sample);
        }
        self.speakers += 1;
    }

    /// How many frames are in the current mix.
    pub fn speakers(&self) -> usize {
        self.speakers
    }

    /// The mixed frame; the mixer starts over.
    pub fn take(&mut self) -> Frame {
        let mut out = [0i16; FRAME_SAMPLES];
        for (out, acc) in out.iter_mut().zip(&self.sum) {
            *out = (*acc).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        self.sum = [0; FRAME_SAMPLES];
        self.speakers = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixing_sums_and_saturates() {
        let mut mixer = Mixer::default();
        mixer.add(&[20_000; FRAME_SAMPLES]);
        mixer.add(&[20_000; FRAME_SAMPLES]);
        mixer.add(&[-5; FRAME_SAMPLES]);
        assert_eq!(mixer.speakers(), 3);
        let out = mixer.take();
        assert!(out.iter().all(|s| *s == i16::MAX));
        assert_eq!(mixer.take(), [0; FRAME_SAMPLES], "starts over");
    }

    #[test]
    fn levels_tell_speech_from_silence() {
        assert_eq!(level_dbfs(&[0; FRAME_SAMPLES]), -120.0);
        let full = level_dbfs(&[i16::MAX; FRAME_SAMPLES]);
        assert!(full.abs() < 0.01);
        assert!(level_dbfs(&[300; FRAME_SAMPLES]) > SPEAKING_DBFS);
        assert!(level_dbfs(&[3; FRAME_SAMPLES]) < SPEAKING_DBFS);
    }
}
