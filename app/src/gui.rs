//! The desktop app (iced): home, meeting and settings screens over the same core
//! [`Client`](conclave_core::Client) API as the CLI.
//!
//! Layout: [`app`] (state, messages, update, view), [`bridge`] (the subscription that owns
//! the client and forwards its events), [`screen`] (one module per screen, each with its own
//! state, messages and actions), [`widget`] (tiles and badges), [`video`] (the pictures drawn), [`audio`] (device lists,
//! meter, test sound), [`prefs`] (the app's settings file). Started by `conclave gui`, or by
//! `conclave` with no command when a display is available.

pub(crate) mod app;
pub(crate) mod audio;
pub(crate) mod bridge;
pub(crate) mod prefs;
pub(crate) mod screen;
pub(crate) mod video;
pub(crate) mod widget;

use app::{App, Options};

/// Whether a graphical display is available (X11 or Wayland).
pub(crate) fn display_available() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

/// The app's camera when `--video-in` names none: the first V4L2 camera, if this machine
/// has one.
pub(crate) fn default_camera() -> Option<conclave_core::media::video::source::VideoSpec> {
    std::path::Path::new("/dev/video0")
        .exists()
        .then_some(conclave_core::media::video::source::VideoSpec::Camera(0))
}

/// Runs the desktop app until its window closes.
pub(crate) fn run(options: Options) -> iced::Result {
    let prefs = prefs::Prefs::load(&options.data_dir);
    let size = iced::Size::new(
        prefs.window_width.clamp(640.0, 4000.0),
        prefs.window_height.clamp(480.0, 3000.0),
    );
    let data_dir = options.data_dir.clone();
    let result = iced::application(move || App::boot(options.clone()), App::update, App::view)
        .title(App::title)
        .theme(App::theme)
        .subscription(App::subscription)
        .window_size(size)
        .exit_on_close_request(false)
        .run();
    tracing::debug!(data_dir = %data_dir.display(), "window closed");
    result
}

/// A temporary directory with mode 0700: Conclave refuses a data directory other users can
/// read (tests only).
#[cfg(test)]
pub(crate) fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 700");
    dir
}
