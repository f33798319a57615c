//! Sound devices (cpal): a microphone as an [`AudioSource`] and speakers as an
//! [`AudioSink`] — the system defaults, or devices chosen by name (`device:NAME`).
//!
//! The device callbacks never lock and never allocate: they exchange samples with the rest
//! of the pipeline through a preallocated single-producer single-consumer ring (`rtrb`).
//! cpal streams must stay on the thread that built them, so each device lives on its own
//! small thread, stopped when the source or sink is dropped. A device that is missing or
//! fails to open is a clear [`AudioError::Device`]; callers fall back to silence (listen-only)
//! or to no playback, and the meeting goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::sink::AudioSink;
use super::source::AudioSource;
use super::{AudioError, FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Samples buffered between a device and the pipeline (one second).
const RING: usize = SAMPLE_RATE as usize;

/// Keeps a device's stream alive on its own thread until dropped.
struct DeviceThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

fn device_error(what: &str, err: impl std::fmt::Display) -> AudioError {
    AudioError::Device(format!("{what}: {err}"))
}

/// Runs `build` on a new thread, which keeps the returned stream playing until stopped.
fn spawn_device<B>(name: &str, build: B) -> Result<DeviceThread, AudioError>
where
    B: FnOnce() -> Result<cpal::Stream, AudioError> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread_stop = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let stream = match build().and_then(|s| {
                s.play()
                    .map(|()| s)
                    .map_err(|e| device_error("cannot start the device", e))
            }) {
                Ok(stream) => {
                    let _ = ready_tx.send(Ok(()));
                    stream
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                    return;
                }
            };
            while !thread_stop.load(Ordering::Acquire) {
                std::thread::park();
            }
            drop(stream);
        })
        .map_err(|e| device_error("cannot start the device thread", e))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(DeviceThread {
            stop,
            handle: Some(handle),
        }),
        Ok(Err(err)) => {
            let _ = handle.join();
            Err(err)
        }
        Err(_) => Err(AudioError::Device("the device thread stopped".into())),
    }
}

fn config_for(
    supported: cpal::SupportedStreamConfig,
    what: &str,
) -> Result<cpal::StreamConfig, AudioError> {
    if supported.sample_rate() != SAMPLE_RATE {
        return Err(AudioError::Device(format!(
            "the {what} runs at {} Hz; only 48 kHz devices are supported so far",
            supported.sample_rate()
        )));
    }
    Ok(supported.config())
}

/// Which way a sound device goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A microphone.
    Input,
    /// Speakers.
    Output,
}

impl Direction {
    fn what(self) -> &'static str {
        match self {
            Self::Input => "microphone",
            Self::Output => "speakers",
        }
    }

    fn devices(
        self,
        host: &cpal::Host,
    ) -> Result<impl Iterator<Item = cpal::Device> + use<>, AudioError> {
        match self {
            Self::Input => host.input_devices(),
            Self::Output => host.output_devices(),
        }
        .map_err(|e| device_error(&format!("cannot list the {}", self.what()), e))
    }
}

/// The name cpal gives a device (what `device:NAME` and the settings screen use).
pub fn device_name(device: &cpal::Device) -> Option<String> {
    device.description().ok().map(|d| d.name().to_owned())
}

/// The names of the devices that go `direction` (blocking: cpal asks the system).
pub fn device_names(direction: Direction) -> Result<Vec<String>, AudioError> {
    let host = cpal::default_host();
    Ok(direction
        .devices(&host)?
        .filter_map(|d| device_name(&d))
        .collect())
}

/// The device named `name` (as cpal describes it), or the default one. The one place
/// where a device is looked up, for the media plane and the app's settings screen alike.
pub fn find_device(direction: Direction, name: Option<&str>) -> Result<cpal::Device, AudioError> {
    let host = cpal::default_host();
    let what = direction.what();
    let Some(name) = name else {
        let device = match direction {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return device.ok_or_else(|| AudioError::Device(format!("no {what} found")));
    };
    direction
        .devices(&host)?
        .find(|d| device_name(d).as_deref() == Some(name))
        .ok_or_else(|| AudioError::Device(format!("the {what} \"{name}\" is not connected")))
}

/// The default microphone, mixed down to mono.
pub struct DeviceSource {
    consumer: rtrb::Consumer<i16>,
    _device: DeviceThread,
}

impl std::fmt::Debug for DeviceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSource").finish_non_exhaustive()
    }
}

impl DeviceSource {
    /// Opens the default input device.
    pub fn open() -> Result<Self, AudioError> {
        Self::open_named(None)
    }

    /// Opens the input device called `name` (a cpal device name), or the default one.
    pub fn open_named(name: Option<String>) -> Result<Self, AudioError> {
        let (mut producer, consumer) = rtrb::RingBuffer::<i16>::new(RING);
        let device = spawn_device("conclave-mic", move || {
            let device = find_device(Direction::Input, name.as_deref())?;
            let supported = device
                .default_input_config()
                .map_err(|e| device_error("the microphone cannot be used", e))?;
            let config = config_for(supported, "microphone")?;
            let channels = usize::from(config.channels.max(1));
            device
                .build_input_stream::<f32, _, _>(
                    config,
                    move |data: &[f32], _: &cpal::InputCallbackInfo| {
                        for frame in data.chunks(channels) {
                            let mono = frame.iter().sum::<f32>() / channels as f32;
                            // A full ring means the pipeline fell behind: drop, never block.
                            let _ =
                                producer.push((mono.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16);
                        }
                    },
                    |err| tracing::warn!(error = %err, "microphone error"),
                    None,
                )
                .map_err(|e| device_error("the microphone cannot be opened", e))
        })?;
        Ok(Self {
            consumer,
            _device: device,
        })
    }
}

impl AudioSource for DeviceSource {
    fn next_frame(&mut self, frame: &mut Frame) -> bool {
        for sample in frame.iter_mut() {
            *sample = self.consumer.pop().unwrap_or(0);
        }
        true
    }
}

/// The default speakers (the mono mix on every channel).
pub struct DeviceSink {
    producer: rtrb::Producer<i16>,
    _device: DeviceThread,
}

impl std::fmt::Debug for DeviceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSink").finish_non_exhaustive()
    }
}

impl DeviceSink {
    /// Opens the default output device.
    pub fn open() -> Result<Self, AudioError> {
        Self::open_named(None)
    }

    /// Opens the output device called `name` (a cpal device name), or the default one.
    pub fn open_named(name: Option<String>) -> Result<Self, AudioError> {
        let (producer, mut consumer) = rtrb::RingBuffer::<i16>::new(RING);
        let device = spawn_device("conclave-speaker", move || {
            let device = find_device(Direction::Output, name.as_deref())?;
            let supported = device
                .default_output_config()
                .map_err(|e| device_error("the speakers cannot be used", e))?;
            let config = config_for(supported, "speaker")?;
            let channels = usize::from(config.channels.max(1));
            device
                .build_output_stream::<f32, _, _>(
                    config,
                    move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
                        for frame in data.chunks_mut(channels) {
                            let sample = f32::from(consumer.pop().unwrap_or(0)) / 32768.0;
                            frame.fill(sample);
                        }
                    },
                    |err| tracing::warn!(error = %err, "speaker error"),
                    None,
                )
                .map_err(|e| device_error("the speakers cannot be opened", e))
        })?;
        Ok(Self {
            producer,
            _device: device,
        })
    }
}

impl AudioSink for DeviceSink {
    fn write(&mut self, samples: &[i16]) -> Result<(), AudioError> {
        for sample in samples.iter().take(FRAME_SAMPLES * 50) {
            // A full ring means the device is slower than our clock: drop the excess.
            let _ = self.producer.push(*sample);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a sound card the devices open and run; without one (as in CI) opening fails
    /// with one clear sentence instead of a panic or a hang.
    #[test]
    fn devices_open_or_say_clearly_why_not() {
        match DeviceSource::open() {
            Ok(mut source) => {
                let mut frame = [0i16; FRAME_SAMPLES];
                assert!(source.next_frame(&mut frame));
            }
            Err(AudioError::Device(message)) => {
                assert!(message.contains("microphone"), "{message}")
            }
            Err(other) => panic!("unexpected error kind: {other}"),
        }
        match DeviceSink::open() {
            Ok(mut sink) => sink.write(&[0; FRAME_SAMPLES]).unwrap(),
            Err(AudioError::Device(message)) => assert!(message.contains("speaker"), "{message}"),
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }
}
