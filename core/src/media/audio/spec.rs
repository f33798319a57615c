//! What `--audio-in` and `--audio-out` name, and opening it: a device, a synthetic source,
//! a WAV file or nothing. A missing or failing sound device is not fatal: the source falls
//! back to silence (listen-only) and the sink to nothing, each with a warning to report.
//!
//! This is the one module that knows both the device implementations and the file and
//! synthetic ones, so that [`super::source`] and [`super::device`] need not know each other.

use std::path::Path;

use super::AudioError;
use super::device::{DeviceSink, DeviceSource};
use super::sink::{AudioSink, NullSink, WavSink};
use super::source::{AudioSource, Silence, Tone, WavSource};

/// Builds a source from a `--audio-in` value: `device` (the default microphone),
/// `device:NAME` (a microphone by its cpal name), `silence`, `tone:HZ` or a `.wav` path.
pub fn from_spec(spec: &str) -> Result<Box<dyn AudioSource>, AudioError> {
    if spec == "device" {
        return Ok(Box::new(DeviceSource::open()?));
    }
    if let Some(name) = spec.strip_prefix("device:") {
        return Ok(Box::new(DeviceSource::open_named(Some(name.to_owned()))?));
    }
    if spec == "silence" {
        return Ok(Box::new(Silence));
    }
    if let Some(hz) = spec.strip_prefix("tone:") {
        let hz: f64 = hz
            .parse()
            .map_err(|_| AudioError::BadSource(spec.to_owned()))?;
        if !(20.0..=20_000.0).contains(&hz) {
            return Err(AudioError::BadSource(spec.to_owned()));
        }
        return Ok(Box::new(Tone::new(hz, 0.3)));
    }
    if spec.to_ascii_lowercase().ends_with(".wav") {
        return Ok(Box::new(WavSource::open(Path::new(spec))?));
    }
    Err(AudioError::BadSource(spec.to_owned()))
}

/// The source a `--audio-in` value names, or silence (with the warning to report) if it
/// names a sound device that cannot be used.
pub fn source_from_spec(spec: &str) -> Result<(Box<dyn AudioSource>, Option<String>), AudioError> {
    match from_spec(spec) {
        Ok(source) => Ok((source, None)),
        Err(AudioError::Device(message)) => Ok((
            Box::new(Silence),
            Some(format!("{message}; you are listen-only")),
        )),
        Err(other) => Err(other),
    }
}

/// For an output spec `device` → `Some(None)`, `device:NAME` → `Some(Some(NAME))`, a file
/// path → `None`.
pub fn output_device(path: &Path) -> Option<Option<String>> {
    let text = path.to_str()?;
    if text == "device" {
        return Some(None);
    }
    text.strip_prefix("device:")
        .map(|name| Some(name.to_owned()))
}

/// The sink a `--audio-out` value names (nothing for `None`), or nothing (with the warning
/// to report) if it names a sound device that cannot be used.
pub fn sink_from_spec(
    out: Option<&Path>,
) -> Result<(Box<dyn AudioSink>, Option<String>), AudioError> {
    let Some(path) = out else {
        return Ok((Box::new(NullSink), None));
    };
    let Some(device) = output_device(path) else {
        return Ok((Box::new(WavSink::create(path)?), None));
    };
    match DeviceSink::open_named(device) {
        Ok(sink) => Ok((Box::new(sink), None)),
        Err(err) => Ok((
            Box::new(NullSink),
            Some(format!("{err}; incoming audio is not played")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_name_devices_or_files() {
        assert_eq!(output_device(Path::new("device")), Some(None));
        assert_eq!(
            output_device(Path::new("device:USB headset")),
            Some(Some("USB headset".to_owned()))
        );
        assert_eq!(output_device(Path::new("heard.wav")), None);
    }

    #[test]
    fn a_named_device_that_is_absent_is_a_device_error() {
        match from_spec("device:no such microphone 1234") {
            Err(AudioError::Device(message)) => assert!(!message.is_empty()),
            Err(other) => panic!("expected a device error, got {other:?}"),
            Ok(_) => panic!("a device that does not exist opened"),
        }
    }

    #[test]
    fn specs_parse_or_say_what_is_wrong() {
        assert!(from_spec("silence").is_ok());
        assert!(from_spec("tone:440").is_ok());
        for bad in ["tone:", "tone:abc", "tone:5", "noise", "music.mp3"] {
            assert!(
                matches!(from_spec(bad), Err(AudioError::BadSource(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            from_spec("/nonexistent/file.wav"),
            Err(AudioError::Wav { .. })
        ));
    }
}
