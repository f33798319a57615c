//! The desktop app's own settings (window size, devices, relays, toggles), kept as a small
//! JSON file `gui.json` in the data directory.
//!
//! Loading never fails: a missing or unreadable file gives the defaults (and a warning in
//! the log), so a damaged file cannot keep the app from opening. Saving goes through a
//! temporary file and a rename, so a crash leaves either the old or the new file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// Name of the settings file inside the data directory.
pub(crate) const FILE_NAME: &str = "gui.json";

/// Why the settings could not be saved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrefsError {
    /// Writing the file failed.
    #[error("cannot save the settings to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the app remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Prefs {
    /// Window width in logical pixels.
    pub(crate) window_width: f32,
    /// Window height in logical pixels.
    pub(crate) window_height: f32,
    /// Chosen microphone (a cpal device name); `None` = the system default.
    pub(crate) audio_input: Option<String>,
    /// Chosen speakers; `None` = the system default.
    pub(crate) audio_output: Option<String>,
    /// Noise suppression on the microphone.
    pub(crate) noise_suppression: bool,
    /// Relay / bootstrap multiaddrs (each ending in `/p2p/<peer id>`).
    pub(crate) relays: Vec<String>,
    /// New meetings use relays only (hides our addresses from the other members).
    pub(crate) relay_only: bool,
    /// New meetings have a lobby by default.
    pub(crate) lobby: bool,
    /// The camera is on (in the preview and when joining).
    pub(crate) camera_on: bool,
}

impl Default for Prefs {
    fn default() -> Self {
        Self {
            window_width: 1100.0,
            window_height: 720.0,
            audio_input: None,
            audio_output: None,
            noise_suppression: true,
            relays: Vec::new(),
            relay_only: false,
            lobby: false,
            camera_on: true,
        }
    }
}

impl Prefs {
    /// Reads the settings of `data_dir`, or the defaults.
    pub(crate) fn load(data_dir: &Path) -> Self {
        let path = data_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                warn!(path = %path.display(), %err, "unreadable settings file, using defaults");
                Self::default()
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(err) => {
                warn!(path = %path.display(), %err, "cannot read the settings file, using defaults");
                Self::default()
            }
        }
    }

    /// Writes the settings to `data_dir` (atomically).
    pub(crate) fn save(&self, data_dir: &Path) -> Result<(), PrefsError> {
        let path = data_dir.join(FILE_NAME);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).expect("settings serialize to JSON");
        std::fs::create_dir_all(data_dir)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| PrefsError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_damage_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Prefs::load(dir.path()), Prefs::default());
        let prefs = Prefs {
            window_width: 800.0,
            audio_input: Some("USB mic".into()),
            relay_only: true,
            ..Prefs::default()
        };
        prefs.save(dir.path()).unwrap();
        assert_eq!(Prefs::load(dir.path()), prefs);
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert_eq!(Prefs::load(dir.path()), Prefs::default());
    }
}
