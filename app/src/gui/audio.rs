//! Sound devices for the settings screen (cpal): the device lists, a live input level meter
//! and a test sound.
//!
//! Nothing here runs on the UI thread for long: listing and the test sound are blocking
//! calls that the app runs in a background task; the meter's stream lives on its own thread
//! and publishes its level through an atomic, which the UI reads on a timer. A machine with
//! no sound card gives empty lists or a clear error, never a crash.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use conclave_core::media::audio::device::{Direction, device_names, find_device};
use cpal::traits::{DeviceTrait, StreamTrait};

/// Level reported when nothing is heard.
pub(crate) const SILENCE_DBFS: f32 = -90.0;
/// How long the test sound plays.
pub(crate) const TEST_SOUND: Duration = Duration::from_millis(800);

/// The devices found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Devices {
    pub(crate) inputs: Vec<String>,
    pub(crate) outputs: Vec<String>,
}

/// Lists input and output devices (blocking: call from a background task).
pub(crate) fn list_devices() -> Result<Devices, String> {
    Ok(Devices {
        inputs: device_names(Direction::Input).map_err(|e| e.to_string())?,
        outputs: device_names(Direction::Output).map_err(|e| e.to_string())?,
    })
}

/// The device by name, or the default one: core's lookup, with its error as text.
fn find(direction: Direction, name: Option<&str>) -> Result<cpal::Device, String> {
    find_device(direction, name).map_err(|e| e.to_string())
}

/// Level in dBFS of a block of samples.
pub(crate) fn dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return SILENCE_DBFS;
    }
    let mean_square = samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32;
    (10.0 * mean_square.max(1e-9).log10()).max(SILENCE_DBFS)
}

/// A live input level meter; the stream stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Meter {
    level: Arc<AtomicU32>,
    error: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Meter {
    /// Starts metering `device` (`None` = the default microphone).
    pub(crate) fn start(device: Option<String>) -> Self {
        let level = Arc::new(AtomicU32::new(SILENCE_DBFS.to_bits()));
        let error = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_level, thread_error, thread_stop) =
            (Arc::clone(&level), Arc::clone(&error), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("conclave-meter".to_owned())
            .spawn(move || {
                let opened = (|| {
                    let device = find(Direction::Input, device.as_deref())?;
                    let config = device
                        .default_input_config()
                        .map_err(|e| format!("the microphone cannot be used: {e}"))?
                        .config();
                    let stream = device
                        .build_input_stream::<f32, _, _>(
                            config,
                            move |data: &[f32], _: &cpal::InputCallbackInfo| {
                                thread_level.store(dbfs(data).to_bits(), Ordering::Relaxed);
                            },
                            |err| tracing::warn!(error = %err, "meter stream error"),
                            None,
                        )
                        .map_err(|e| format!("the microphone cannot be opened: {e}"))?;
                    stream
                        .play()
                        .map_err(|e| format!("the microphone cannot start: {e}"))?;
                    Ok::<_, String>(stream)
                })();
                match opened {
                    Ok(stream) => {
                        while !thread_stop.load(Ordering::Acquire) {
                            std::thread::park_timeout(Duration::from_millis(200));
                        }
                        drop(stream);
                    }
                    Err(message) => {
                        if let Ok(mut slot) = thread_error.lock() {
                            *slot = Some(message);
                        }
                    }
                }
            })
            .ok();
        Self {
            level,
            error,
            stop,
            thread,
        }
    }

    /// The latest level in dBFS.
    pub(crate) fn level_dbfs(&self) -> f32 {
        f32::from_bits(self.level.load(Ordering::Relaxed))
    }

    /// Why the meter could not run, if it could not.
    pub(crate) fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|slot| slot.clone())
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread only waits for `stop`; it ends promptly. Do not join on the UI
            // thread: a stuck driver must not freeze the window.
        }
    }
}

/// Plays a short 440 Hz tone on `device` (blocking: call from a background task).
pub(crate) fn play_test_sound(device: Option<String>) -> Result<(), String> {
    let device = find(Direction::Output, device.as_deref())?;
    let config = device
        .default_output_config()
        .map_err(|e| format!("the speakers cannot be used: {e}"))?
        .config();
    let rate = config.sample_rate as f32;
    let channels = usize::from(config.channels.max(1));
    let mut phase = 0.0f32;
    let stream = device
        .build_output_stream::<f32, _, _>(
            config,
            move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
                for frame in data.chunks_mut(channels) {
                    let sample = (phase * std::f32::consts::TAU).sin() * 0.2;
                    phase = (phase + 440.0 / rate).fract();
                    frame.fill(sample);
                }
            },
            |err| tracing::warn!(error = %err, "test sound stream error"),
            None,
        )
        .map_err(|e| format!("the speakers cannot be opened: {e}"))?;
    stream
        .play()
        .map_err(|e| format!("the speakers cannot start: {e}"))?;
    std::thread::sleep(TEST_SOUND);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_in_dbfs() {
        assert_eq!(dbfs(&[]), SILENCE_DBFS);
        assert_eq!(dbfs(&[0.0; 480]), SILENCE_DBFS);
        let full = dbfs(&[1.0, -1.0, 1.0, -1.0]);
        assert!(full.abs() < 0.01, "{full}");
        let half = dbfs(&[0.5; 480]);
        assert!((half + 6.02).abs() < 0.05, "{half}");
    }
}
