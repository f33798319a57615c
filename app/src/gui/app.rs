//! The application: state, messages, `update`, `view` and subscriptions (the Elm
//! architecture of iced).
//!
//! ```text
//! bridge subscription ──bridge::Event──▶ update ──Request──▶ bridge (core Client)
//! keyboard / window / timers ─────────▶ update ──Task──────▶ clipboard, focus, devices
//! update ──▶ App state ──▶ view (home | meeting | settings) + banner
//! ```
//!
//! Each screen owns its state and returns an `Action` from its own `update`;
//! `app/actions.rs` turns actions (and keyboard shortcuts) into bridge requests or iced
//! tasks, so screens stay testable without a runtime, and `app/events.rs` applies what the
//! bridge and the core report. Nothing here blocks: core work goes through the bridge,
//! device work through background tasks.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use conclave_core::media::video::source::VideoSpec;
use conclave_core::{Config, KeySource, MediaConfig, Multiaddr, PeerId, parse_relay};
use iced::keyboard::{self, Key, key::Named};
use iced::widget::{column, container, operation, row, text};
use iced::{Color, Element, Length, Size, Subscription, Task, Theme, window};
use tracing::{info, warn};

use super::audio::{Devices, Meter};
use super::bridge::{self, Handle, Me, Request};
use super::prefs::Prefs;
use super::screen::{home, meeting, settings};
use super::video::{self, Pictures};
use super::widget::focus::button;
use actions::focus;

/// How the app was started (from the command line).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) data_dir: PathBuf,
    pub(crate) name: Option<String>,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) mdns: bool,
    /// `--audio-in` override (default: the microphone).
    pub(crate) audio_in: Option<String>,
    /// `--audio-out` override (default: the speakers; `null` for none).
    pub(crate) audio_out: Option<String>,
    pub(crate) media_bind: Vec<String>,
    /// `--noise-suppression on|off` (`None`: the saved setting).
    pub(crate) noise_suppression: Option<bool>,
    /// `--relay-only`: every meeting relay-only, whatever the settings say.
    pub(crate) relay_only: bool,
    /// The camera (`--video-in`, else the first V4L2 camera if there is one).
    pub(crate) video_in: Option<VideoSpec>,
    /// When the process started (for the time-to-first-frame figure).
    pub(crate) started: Instant,
    /// Where the store key comes from (`--passphrase-file`, `--insecure-key-file`).
    pub(crate) store_key: KeySource,
}

/// Which screen is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Screen {
    Home,
    Meeting,
    Settings,
}

/// A banner across the top: something the user must know (missing device, lost
/// connection, failed request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Banner {
    pub(crate) text: String,
    pub(crate) error: bool,
}

/// Keyboard shortcuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortcut {
    /// Tab / Shift+Tab: next / previous field.
    FocusNext,
    FocusPrevious,
    /// Ctrl+D: mute / unmute.
    ToggleMute,
    /// Ctrl+E: camera on / off.
    ToggleCamera,
    /// Ctrl+Shift+E: share the screen / stop sharing.
    ToggleShare,
    /// Ctrl+, : settings.
    Settings,
    /// Escape: back / close.
    Back,
    /// Ctrl+Shift+L: leave the meeting.
    Leave,
    /// Ctrl+J: to the text field (the invite on home, the chat in a meeting).
    FocusInvite,
    /// Ctrl+N: new meeting (home).
    NewMeeting,
    /// Ctrl+I: copy the meeting's invite.
    CopyInvite,
}

/// Everything that can happen.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    Bridge(bridge::Event),
    Home(home::Message),
    Meeting(meeting::Message),
    Settings(settings::Message),
    Shortcut(Shortcut),
    Resized(Size),
    /// The window's close button: save the settings, then exit.
    CloseRequested(window::Id),
    /// Leave-on-close grace is over (or the leave completed): exit.
    Exit,
    /// The leave grace is over: go home even if the goodbye was not confirmed.
    LeaveGraceOver,
    FirstFrame,
    /// A focus change was applied (logged: the GUI system test waits for it).
    Focused(&'static str),
    MeterTick,
    /// Time to take the newest video pictures.
    VideoTick,
    Devices(Result<Devices, String>),
    TestSoundDone(Result<(), String>),
    DismissBanner,
}

/// The application state.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) options: Options,
    pub(crate) prefs: Prefs,
    pub(crate) handle: Option<Handle>,
    pub(crate) me: Option<Me>,
    pub(crate) screen: Screen,
    /// Screen to return to from settings.
    pub(crate) previous: Screen,
    pub(crate) home: home::State,
    pub(crate) meeting: Option<meeting::State>,
    pub(crate) settings: settings::State,
    pub(crate) verified: BTreeSet<PeerId>,
    pub(crate) banner: Option<Banner>,
    pub(crate) meter: Option<Meter>,
    pub(crate) first_frame_seen: bool,
    /// The window is closing once the meeting is left.
    pub(crate) closing: bool,
    /// The running client shares only relayed media candidates.
    pub(crate) relay_only_active: bool,
    /// We asked to leave and wait for the core's confirmation.
    pub(crate) leaving: bool,
    /// The newest picture of each video (self-view, members' cameras and screens).
    pub(crate) pictures: Pictures,
}

/// How long leaving waits for the core's confirmation before going home anyway.
const LEAVE_GRACE: Duration = Duration::from_secs(3);

/// Most time closing the window waits for the meeting's goodbye (the core itself waits
/// at most 1.5 s for the members' acknowledgements, then reports the leave done).
const CLOSE_GRACE: Duration = Duration::from_secs(4);

impl App {
    /// The state at start, before the bridge runs (no I/O but reading the settings file).
    pub(crate) fn new(options: Options) -> Self {
        let prefs = Prefs::load(&options.data_dir);
        Self::with_prefs(options, prefs)
    }

    /// The state at start with given settings.
    pub(crate) fn with_prefs(options: Options, prefs: Prefs) -> Self {
        let home = home::State {
            name: options.name.clone().unwrap_or_default(),
            lobby: prefs.lobby,
            relay_only_supported: true,
            relay_only: prefs.relay_only || options.relay_only,
            ..home::State::default()
        };
        let settings = settings::State {
            noise_supported: true,
            relay_only_supported: true,
            ..settings::State::default()
        };
        Self {
            options,
            prefs,
            handle: None,
            me: None,
            screen: Screen::Home,
            previous: Screen::Home,
            home,
            meeting: None,
            settings,
            verified: BTreeSet::new(),
            banner: None,
            meter: None,
            first_frame_seen: false,
            closing: false,
            relay_only_active: false,
            leaving: false,
            pictures: Pictures::default(),
        }
    }

    /// iced's boot: the state and the first tasks (focus the invite field, list devices).
    pub(crate) fn boot(options: Options) -> (Self, Task<Message>) {
        let app = Self::new(options);
        (app, focus(operation::focus(home::INVITE_INPUT), "invite"))
    }

    /// The window title.
    pub(crate) fn title(&self) -> String {
        match (&self.screen, &self.meeting) {
            (Screen::Meeting, Some(meeting)) if meeting.phase == meeting::Phase::In => {
                format!("Conclave — meeting ({} people)", meeting.members.len() + 1)
            }
            _ => "Conclave".to_owned(),
        }
    }

    /// The client configuration from the command line and the saved settings.
    pub(crate) fn config(&self) -> Config {
        let relays: Vec<Multiaddr> = self
            .prefs
            .relays
            .iter()
            .filter_map(|r| parse_relay(r).ok())
            .collect();
        let mut config = Config::new(&self.options.data_dir)
            .with_store_key(self.options.store_key.clone())
            .with_relays(relays)
            .with_mdns(self.options.mdns);
        if !self.options.listen.is_empty() {
            config = config.with_listen(self.options.listen.clone());
        }
        let name = self
            .me
            .as_ref()
            .map(|me| me.name.clone())
            .or_else(|| self.options.name.clone());
        if let Some(name) = name {
            config = config.with_name(name);
        }
        // Flags win; otherwise the devices chosen in Settings (or the system defaults).
        let device = |name: &Option<String>| match name {
            Some(name) => format!("device:{name}"),
            None => "device".to_owned(),
        };
        let mut media = MediaConfig {
            audio_in: self
                .options
                .audio_in
                .clone()
                .unwrap_or_else(|| device(&self.prefs.audio_input)),
            audio_out: match self.options.audio_out.as_deref() {
                None => Some(PathBuf::from(device(&self.prefs.audio_output))),
                Some("null") => None,
                Some(path) => Some(PathBuf::from(path)),
            },
            ..MediaConfig::default()
        };
        if !self.options.media_bind.is_empty() {
            media.udp_addrs = self.options.media_bind.clone();
        }
        media.noise_suppression = self
            .options
            .noise_suppression
            .unwrap_or(self.prefs.noise_suppression);
        media.relay_only = self.relay_only_active || self.options.relay_only;
        media.video_in = self.options.video_in.clone();
        media.display = Some(self.pictures.display());
        config.with_media(media)
    }

    /// Our camera: on or off, or `None` without one.
    pub(crate) fn camera(&self) -> Option<bool> {
        self.options.video_in.as_ref().map(|_| self.prefs.camera_on)
    }

    fn request(&mut self, request: Request) {
        let sent = match self.handle.as_mut() {
            Some(handle) => handle.send(request),
            None => false,
        };
        if !sent {
            self.show_error("Conclave is busy or not running; try again in a moment.".to_owned());
        }
    }

    fn show_error(&mut self, text: String) {
        warn!(%text, "banner");
        self.banner = Some(Banner { text, error: true });
    }

    fn save_prefs(&mut self) {
        if let Err(err) = self.prefs.save(&self.options.data_dir) {
            self.show_error(err.to_string());
        }
    }

    /// Handles a message.
    pub(crate) fn update(&mut self, message: Message) -> Task<Message> {
        match message {
            Message::Bridge(event) => self.on_bridge(event),
            Message::Home(message) => {
                let action = self.home.update(message, self.me.as_ref());
                self.on_home(action)
            }
            Message::Meeting(message) => {
                let Some(meeting) = self.meeting.as_mut() else {
                    return Task::none();
                };
                let action = meeting.logging_stage(|meeting| meeting.update(message));
                self.on_meeting(action)
            }
            Message::Settings(message) => {
                let action = self.settings.update(message, &mut self.prefs);
                self.on_settings(action)
            }
            Message::Shortcut(shortcut) => self.on_shortcut(shortcut),
            Message::Resized(size) => {
                self.prefs.window_width = size.width;
                self.prefs.window_height = size.height;
                Task::none()
            }
            Message::CloseRequested(id) => self.close_requested(id),
            Message::Exit => iced::exit(),
            Message::LeaveGraceOver => {
                if self.leaving && self.meeting.is_some() {
                    warn!("the leave was not confirmed in time; back to home anyway");
                    self.leave_to_home();
                }
                Task::none()
            }
            Message::FirstFrame => {
                self.first_frame();
                Task::none()
            }
            Message::Focused(target) => {
                info!(target, "focus moved");
                Task::none()
            }
            Message::MeterTick => {
                self.meter_tick();
                Task::none()
            }
            Message::VideoTick => {
                self.pictures.refresh();
                Task::none()
            }
            Message::Devices(devices) => {
                self.settings.devices = Some(devices);
                Task::none()
            }
            Message::TestSoundDone(result) => {
                self.settings.audio_status = Some(match result {
                    Ok(()) => "Test sound played. Did you hear a short beep?".to_owned(),
                    Err(err) => format!("No test sound: {err}."),
                });
                Task::none()
            }
            Message::DismissBanner => {
                self.banner = None;
                Task::none()
            }
        }
    }

    /// The window's close button: save, say goodbye if in a meeting, then exit.
    fn close_requested(&mut self, id: window::Id) -> Task<Message> {
        info!(?id, in_meeting = self.meeting.is_some(), "close requested");
        self.meter = None;
        self.save_prefs();
        let in_meeting = self.meeting.is_some();
        if let Some(handle) = self.handle.as_mut()
            && in_meeting
        {
            // Say goodbye, and exit once the members acknowledged it (the bridge reports
            // `LeaveDone`) or the grace is over: exiting at once could cut the goodbye off,
            // and the others would see us time out.
            let _ = handle.send(Request::Leave);
            self.closing = true;
            return Task::perform(async { tokio::time::sleep(CLOSE_GRACE).await }, |()| {
                Message::Exit
            });
        }
        iced::exit()
    }

    /// Logs the time from process start to the first frame, once.
    fn first_frame(&mut self) {
        if !self.first_frame_seen {
            self.first_frame_seen = true;
            let ms = self.options.started.elapsed().as_secs_f64() * 1000.0;
            info!(ms = format!("{ms:.0}"), "first frame");
        }
    }

    /// Shows the meter's level, or why it stopped.
    fn meter_tick(&mut self) {
        if let Some(meter) = &self.meter {
            self.settings.level_dbfs = Some(meter.level_dbfs());
            if let Some(err) = meter.error() {
                self.settings.audio_status = Some(err);
                self.settings.metering = false;
                self.meter = None;
            }
        }
    }

    /// Draws the window.
    pub(crate) fn view(&self) -> Element<'_, Message> {
        let screen: Element<'_, Message> = match (self.screen, &self.meeting) {
            (Screen::Meeting, Some(meeting)) => meeting
                .view(&self.verified, &self.pictures)
                .map(Message::Meeting),
            (Screen::Settings, _) => self.settings.view(&self.prefs).map(Message::Settings),
            _ => self
                .home
                .view(self.me.as_ref(), self.camera(), &self.pictures)
                .map(Message::Home),
        };
        // The banner slot is always there (empty when there is no banner), so the screen
        // keeps its place in the widget tree and its fields keep their focus and state.
        let banner: Element<'_, Message> = if let Some(banner) = &self.banner {
            let background = if banner.error {
                Color::from_rgb(0.55, 0.10, 0.10)
            } else {
                Color::from_rgb(0.45, 0.30, 0.0)
            };
            container(
                row![
                    text(banner.text.clone())
                        .color(Color::WHITE)
                        .width(Length::Fill),
                    button(text("Dismiss").size(14))
                        .style(button::secondary)
                        .on_press(Message::DismissBanner),
                ]
                .spacing(12)
                .align_y(iced::Alignment::Center),
            )
            .padding([8, 16])
            .width(Length::Fill)
            .style(move |_theme: &iced::Theme| container::Style {
                background: Some(background.into()),
                ..container::Style::default()
            })
            .into()
        } else {
            iced::widget::space().into()
        };
        column![banner, screen].into()
    }

    /// The theme (dark, high contrast text).
    pub(crate) fn theme(&self) -> Theme {
        Theme::Dark
    }

    /// Event sources: the core bridge, keyboard shortcuts, window size, meter timer.
    pub(crate) fn subscription(&self) -> Subscription<Message> {
        let mut subscriptions = vec![
            Subscription::run(bridge::connect).map(Message::Bridge),
            keyboard::listen()
                .filter_map(shortcut)
                .map(Message::Shortcut),
            window::resize_events().map(|(_id, size)| Message::Resized(size)),
            window::close_requests().map(Message::CloseRequested),
        ];
        if !self.first_frame_seen {
            subscriptions.push(window::frames().map(|_| Message::FirstFrame));
        }
        if self.me.is_some() && self.screen != Screen::Settings {
            subscriptions.push(iced::time::every(video::REFRESH).map(|_| Message::VideoTick));
        }
        if self.meter.is_some() {
            subscriptions
                .push(iced::time::every(Duration::from_millis(50)).map(|_| Message::MeterTick));
        }
        Subscription::batch(subscriptions)
    }
}

/// Maps a key press (not taken by a widget) to a shortcut.
pub(crate) fn shortcut(event: keyboard::Event) -> Option<Shortcut> {
    let keyboard::Event::KeyPressed { key, modifiers, .. } = event else {
        return None;
    };
    match key.as_ref() {
        Key::Named(Named::Tab) if modifiers.shift() => Some(Shortcut::FocusPrevious),
        Key::Named(Named::Tab) => Some(Shortcut::FocusNext),
        Key::Named(Named::Escape) => Some(Shortcut::Back),
        Key::Character("d") if modifiers.command() => Some(Shortcut::ToggleMute),
        Key::Character("e" | "E") if modifiers.command() && modifiers.shift() => {
            Some(Shortcut::ToggleShare)
        }
        Key::Character("e") if modifiers.command() => Some(Shortcut::ToggleCamera),
        Key::Character(",") if modifiers.command() => Some(Shortcut::Settings),
        Key::Character("j") if modifiers.command() => Some(Shortcut::FocusInvite),
        Key::Character("n") if modifiers.command() => Some(Shortcut::NewMeeting),
        Key::Character("i") if modifiers.command() => Some(Shortcut::CopyInvite),
        Key::Character("l" | "L") if modifiers.command() && modifiers.shift() => {
            Some(Shortcut::Leave)
        }
        _ => None,
    }
}

mod actions;
mod events;

#[cfg(test)]
mod tests;
