//! Settings: sound devices (with a live input meter and a test sound), noise suppression,
//! relays, the relay-only default, and the identity backup (export / restore).

use conclave_core::{MIN_PASSPHRASE_CHARS, parse_relay};
use iced::widget::{
    Column, column, container, progress_bar, row, scrollable, text, text_input, tooltip,
};
use iced::{Alignment, Color, Element, Length};

use crate::gui::audio::{Devices, SILENCE_DBFS};
use crate::gui::prefs::Prefs;
use crate::gui::widget::focus::{button, checkbox, pick_list};

/// Shown in the device lists for "use the system default".
pub(crate) const SYSTEM_DEFAULT: &str = "System default";
/// Id of the microphone list.
pub(crate) const MICROPHONE_LIST: &str = "microphone";
/// Id of the speaker list.
pub(crate) const SPEAKER_LIST: &str = "speakers";

/// Settings screen state (the persisted part lives in [`Prefs`]).
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Devices found, `None` until listed.
    pub(crate) devices: Option<Result<Devices, String>>,
    /// Meter on.
    pub(crate) metering: bool,
    /// Latest meter level (dBFS).
    pub(crate) level_dbfs: Option<f32>,
    /// Why the meter or test sound failed.
    pub(crate) audio_status: Option<String>,
    /// Noise suppression is wired to the core in this build.
    pub(crate) noise_supported: bool,
    /// Relay-only is wired to the core in this build.
    pub(crate) relay_only_supported: bool,
    pub(crate) relay_input: String,
    pub(crate) relay_error: Option<String>,
    pub(crate) export_path: String,
    pub(crate) export_passphrase: String,
    pub(crate) export_repeat: String,
    pub(crate) import_path: String,
    pub(crate) import_passphrase: String,
    /// Outcome of the last backup operation: Ok(sentence) or Err(sentence).
    pub(crate) backup_status: Option<Result<String, String>>,
    /// A backup operation is running.
    pub(crate) busy: bool,
}

/// What the user did on the settings screen.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    Back,
    RefreshDevices,
    InputSelected(String),
    OutputSelected(String),
    ToggleMeter,
    TestSound,
    NoiseToggled(bool),
    RelayOnlyToggled(bool),
    RelayChanged(String),
    AddRelay,
    RemoveRelay(usize),
    ExportPathChanged(String),
    ExportPassphraseChanged(String),
    ExportRepeatChanged(String),
    Export,
    ImportPathChanged(String),
    ImportPassphraseChanged(String),
    Import,
}

/// What the app must do for the settings screen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Back,
    ListDevices,
    /// Prefs changed: save them (and restart the meter on a new input).
    Save,
    StartMeter(Option<String>),
    StopMeter,
    TestSound(Option<String>),
    /// Relays changed: save and apply to the client.
    RelaysChanged,
    /// Noise suppression toggled: save and apply now.
    NoiseSuppression(bool),
    /// The relay-only default changed: save, and preset the home screen's option.
    RelayOnlyDefault(bool),
    Export {
        path: String,
        passphrase: String,
    },
    Import {
        path: String,
        passphrase: String,
    },
}

fn device_choice(choice: String) -> Option<String> {
    (choice != SYSTEM_DEFAULT).then_some(choice)
}

impl State {
    /// Handles a message, editing `prefs`; returns what the app must do.
    pub(crate) fn update(&mut self, message: Message, prefs: &mut Prefs) -> Option<Action> {
        match message {
            Message::Back => {
                self.metering = false;
                Some(Action::Back)
            }
            Message::RefreshDevices
            | Message::InputSelected(_)
            | Message::OutputSelected(_)
            | Message::ToggleMeter
            | Message::TestSound
            | Message::NoiseToggled(_) => self.update_sound(message, prefs),
            Message::RelayOnlyToggled(_)
            | Message::RelayChanged(_)
            | Message::AddRelay
            | Message::RemoveRelay(_) => self.update_relays(message, prefs),
            _ => self.update_backup(message),
        }
    }

    /// The sound section: devices, meter, test sound, noise suppression.
    fn update_sound(&mut self, message: Message, prefs: &mut Prefs) -> Option<Action> {
        match message {
            Message::RefreshDevices => Some(Action::ListDevices),
            Message::InputSelected(choice) => {
                prefs.audio_input = device_choice(choice);
                if self.metering {
                    Some(Action::StartMeter(prefs.audio_input.clone()))
                } else {
                    Some(Action::Save)
                }
            }
            Message::OutputSelected(choice) => {
                prefs.audio_output = device_choice(choice);
                Some(Action::Save)
            }
            Message::ToggleMeter => {
                self.metering = !self.metering;
                self.level_dbfs = None;
                self.audio_status = None;
                Some(if self.metering {
                    Action::StartMeter(prefs.audio_input.clone())
                } else {
                    Action::StopMeter
                })
            }
            Message::TestSound => {
                self.audio_status = Some("Playing a test sound…".to_owned());
                Some(Action::TestSound(prefs.audio_output.clone()))
            }
            Message::NoiseToggled(on) => {
                prefs.noise_suppression = on;
                Some(Action::NoiseSuppression(on))
            }
            _ => None,
        }
    }

    /// The relays section: the list and the relay-only default.
    fn update_relays(&mut self, message: Message, prefs: &mut Prefs) -> Option<Action> {
        match message {
            Message::RelayOnlyToggled(on) => {
                prefs.relay_only = on && self.relay_only_supported;
                Some(Action::RelayOnlyDefault(prefs.relay_only))
            }
            Message::RelayChanged(text) => {
                self.relay_input = text;
                self.relay_error = None;
                None
            }
            Message::AddRelay => {
                let text = self.relay_input.trim().to_owned();
                match parse_relay(&text) {
                    Ok(addr) => {
                        let addr = addr.to_string();
                        if !prefs.relays.contains(&addr) {
                            prefs.relays.push(addr);
                        }
                        self.relay_input.clear();
                        Some(Action::RelaysChanged)
                    }
                    Err(err) => {
                        self.relay_error = Some(format!("Not added: {err}."));
                        None
                    }
                }
            }
            Message::RemoveRelay(index) => {
                if index < prefs.relays.len() {
                    prefs.relays.remove(index);
                    Some(Action::RelaysChanged)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// The identity backup section: export and restore.
    fn update_backup(&mut self, message: Message) -> Option<Action> {
        match message {
            Message::ExportPathChanged(path) => {
                self.export_path = path;
                None
            }
            Message::ExportPassphraseChanged(passphrase) => {
                self.export_passphrase = passphrase;
                None
            }
            Message::ExportRepeatChanged(passphrase) => {
                self.export_repeat = passphrase;
                None
            }
            Message::Export => {
                if let Err(problem) = self.export_problem() {
                    self.backup_status = Some(Err(problem));
                    return None;
                }
                self.busy = true;
                self.backup_status = Some(Ok("Encrypting the backup…".to_owned()));
                Some(Action::Export {
                    path: self.export_path.trim().to_owned(),
                    passphrase: std::mem::take(&mut self.export_passphrase),
                })
                .inspect(|_| self.export_repeat.clear())
            }
            Message::ImportPathChanged(path) => {
                self.import_path = path;
                None
            }
            Message::ImportPassphraseChanged(passphrase) => {
                self.import_passphrase = passphrase;
                None
            }
            Message::Import => {
                if self.import_path.trim().is_empty() || self.import_passphrase.is_empty() {
                    self.backup_status = Some(Err(
                        "Give the backup file and its passphrase to restore.".to_owned(),
                    ));
                    return None;
                }
                self.busy = true;
                self.backup_status = Some(Ok("Restoring…".to_owned()));
                Some(Action::Import {
                    path: self.import_path.trim().to_owned(),
                    passphrase: std::mem::take(&mut self.import_passphrase),
                })
            }
            _ => None,
        }
    }

    /// Why the export form cannot be submitted yet.
    pub(crate) fn export_problem(&self) -> Result<(), String> {
        if self.export_path.trim().is_empty() {
            return Err("Choose a file to write the backup to.".to_owned());
        }
        if self.export_passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(format!(
                "The passphrase needs at least {MIN_PASSPHRASE_CHARS} characters."
            ));
        }
        if self.export_passphrase != self.export_repeat {
            return Err("The two passphrases differ.".to_owned());
        }
        Ok(())
    }

    /// Draws the screen.
    pub(crate) fn view<'a>(&'a self, prefs: &'a Prefs) -> Element<'a, Message> {
        let header = row![
            text("Settings").size(30).width(Length::Fill),
            button("Back").on_press(Message::Back),
        ]
        .align_y(Alignment::Center);
        scrollable(
            column![
                header,
                self.view_sound(prefs),
                self.view_relays(prefs),
                self.view_backup()
            ]
            .spacing(28)
            .padding(24)
            .max_width(900),
        )
        .into()
    }

    /// Sound: the devices, the microphone test and test sound, noise suppression.
    fn view_sound<'a>(&'a self, prefs: &'a Prefs) -> Element<'a, Message> {
        let sound = Column::new()
            .spacing(10)
            .push(text("Sound").size(22))
            .push(self.view_devices(prefs));
        let level = self.level_dbfs.unwrap_or(SILENCE_DBFS);
        let mut sound = sound.push(
            row![
                button(if self.metering {
                    "Stop microphone test"
                } else {
                    "Test microphone"
                })
                .style(button::secondary)
                .on_press(Message::ToggleMeter),
                progress_bar(SILENCE_DBFS..=0.0, level)
                    .length(Length::Fixed(220.0))
                    .girth(14),
                text(if self.metering {
                    format!("{level:.0} dBFS")
                } else {
                    String::new()
                })
                .size(13),
                button("Play test sound")
                    .style(button::secondary)
                    .on_press(Message::TestSound),
                button(text("Refresh devices").size(14))
                    .style(button::secondary)
                    .on_press(Message::RefreshDevices),
            ]
            .spacing(10)
            .align_y(Alignment::Center),
        );
        if let Some(status) = &self.audio_status {
            sound = sound.push(text(status.clone()).size(14));
        }
        let noise = checkbox(
            prefs.noise_suppression,
            "Noise suppression",
            self.noise_supported
                .then_some(Message::NoiseToggled as fn(bool) -> Message),
        );
        sound
            .push(if self.noise_supported {
                noise
            } else {
                with_tooltip(
                    noise,
                    "Remembered; applied once this build's audio pipeline supports it.",
                )
            })
            .into()
    }

    /// The microphone and speaker lists (or why there are none yet).
    fn view_devices<'a>(&'a self, prefs: &'a Prefs) -> Element<'a, Message> {
        let devices = match &self.devices {
            None => return text("Looking for sound devices…").size(14).into(),
            Some(Err(err)) => return text(err.clone()).size(14).into(),
            Some(Ok(devices)) => devices,
        };
        let mut inputs = vec![SYSTEM_DEFAULT.to_owned()];
        inputs.extend(devices.inputs.iter().cloned());
        let mut outputs = vec![SYSTEM_DEFAULT.to_owned()];
        outputs.extend(devices.outputs.iter().cloned());
        let mut lists = Column::new().spacing(10);
        if devices.inputs.is_empty() && devices.outputs.is_empty() {
            lists = lists.push(
                text("No sound devices were found. Meetings still work: you can listen and chat.")
                    .size(14),
            );
        }
        lists
            .push(device_row(
                "Microphone",
                inputs,
                prefs.audio_input.as_deref(),
                Message::InputSelected,
                MICROPHONE_LIST,
            ))
            .push(device_row(
                "Speakers",
                outputs,
                prefs.audio_output.as_deref(),
                Message::OutputSelected,
                SPEAKER_LIST,
            ))
            .push(
                text("Keyboard: Tab to a list, then Up / Down (or Enter) to change the device.")
                    .size(13),
            )
            .into()
    }

    /// Relays: the list, the field to add one, and the relay-only default.
    fn view_relays<'a>(&'a self, prefs: &'a Prefs) -> Element<'a, Message> {
        let mut relays = Column::new().spacing(6);
        if prefs.relays.is_empty() {
            relays = relays.push(
                text("No relays: meetings work on this network (LAN) and with reachable members.")
                    .size(14),
            );
        }
        for (index, relay) in prefs.relays.iter().enumerate() {
            relays = relays.push(
                row![
                    text(relay.clone()).size(13).width(Length::Fill),
                    button(text("Remove").size(13))
                        .style(button::secondary)
                        .on_press(Message::RemoveRelay(index)),
                ]
                .spacing(8)
                .align_y(Alignment::Center),
            );
        }
        let relay_only = checkbox(
            prefs.relay_only,
            "New meetings use relays only",
            self.relay_only_supported
                .then_some(Message::RelayOnlyToggled as fn(bool) -> Message),
        );
        let mut network = column![
            text("Relays").size(22),
            relays,
            row![
                text_input(
                    "/dns4/relay.example.org/tcp/4001/p2p/12D3…",
                    &self.relay_input
                )
                .on_input(Message::RelayChanged)
                .on_submit(Message::AddRelay),
                button("Add relay").on_press(Message::AddRelay),
            ]
            .spacing(8),
        ]
        .spacing(10);
        if let Some(err) = &self.relay_error {
            network = network.push(text(err.clone()).size(13).color(ERROR_RED));
        }
        network
            .push(if self.relay_only_supported {
                relay_only
            } else {
                with_tooltip(relay_only, "Relay-only needs a newer core; coming soon.")
            })
            .into()
    }

    /// Identity backup: export under a passphrase, restore from a file.
    fn view_backup(&self) -> Element<'_, Message> {
        let mut backup = column![
            text("Identity backup").size(22),
            text("Your identity is a key on this computer. Save it, encrypted with a passphrase, to move it to another computer or restore it later.")
                .size(14),
            row![
                text_input("Backup file, e.g. /home/me/conclave-identity.backup", &self.export_path)
                    .on_input(Message::ExportPathChanged),
            ],
            row![
                text_input("Passphrase", &self.export_passphrase)
                    .secure(true)
                    .on_input(Message::ExportPassphraseChanged),
                text_input("Repeat the passphrase", &self.export_repeat)
                    .secure(true)
                    .on_input(Message::ExportRepeatChanged)
                    .on_submit(Message::Export),
                button("Export identity").on_press_maybe((!self.busy).then_some(Message::Export)),
            ]
            .spacing(8),
            text("Restore from a backup (replaces the identity of this computer):").size(14),
            row![
                text_input("Backup file", &self.import_path).on_input(Message::ImportPathChanged),
                text_input("Passphrase", &self.import_passphrase)
                    .secure(true)
                    .on_input(Message::ImportPassphraseChanged)
                    .on_submit(Message::Import),
                button("Restore identity").on_press_maybe((!self.busy).then_some(Message::Import)),
            ]
            .spacing(8),
        ]
        .spacing(10);
        match &self.backup_status {
            Some(Ok(ok)) => backup = backup.push(text(ok.clone()).size(14)),
            Some(Err(err)) => backup = backup.push(text(err.clone()).size(14).color(ERROR_RED)),
            None => {}
        }
        backup.into()
    }
}

/// Colour of error sentences.
const ERROR_RED: Color = Color::from_rgb(1.0, 0.55, 0.55);

/// `control` with `tip` shown below it on hover (why it is disabled).
fn with_tooltip<'a>(control: Element<'a, Message>, tip: &'a str) -> Element<'a, Message> {
    tooltip(
        control,
        container(text(tip).size(13))
            .padding(8)
            .style(container::rounded_box),
        tooltip::Position::Bottom,
    )
    .into()
}

/// A labelled device list: `options`, with `chosen` (or the system default) selected.
fn device_row<'a>(
    label: &'a str,
    options: Vec<String>,
    chosen: Option<&str>,
    on_select: fn(String) -> Message,
    id: &'static str,
) -> Element<'a, Message> {
    row![
        text(label).width(Length::Fixed(110.0)),
        pick_list(
            options,
            chosen.unwrap_or(SYSTEM_DEFAULT).to_owned(),
            on_select,
            Length::Fixed(320.0),
            id,
        ),
    ]
    .spacing(8)
    .align_y(Alignment::Center)
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced::keyboard::{Key, key::Named};
    use iced_test::simulator;

    /// Clicks the widget showing `text`; returns the resulting actions.
    fn click(state: &mut State, prefs: &mut Prefs, text: impl Into<String>) -> Vec<Action> {
        let text = text.into();
        interact(state, prefs, |ui| {
            ui.click(text).unwrap();
        })
    }

    fn interact(
        state: &mut State,
        prefs: &mut Prefs,
        interact: impl FnOnce(&mut iced_test::Simulator<'_, Message>),
    ) -> Vec<Action> {
        let messages: Vec<Message> = {
            let mut ui = simulator(state.view(prefs));
            interact(&mut ui);
            ui.into_messages().collect()
        };
        messages
            .into_iter()
            .filter_map(|m| state.update(m, prefs))
            .collect()
    }

    #[test]
    fn no_sound_devices_is_explained() {
        let prefs = Prefs::default();
        let state = State {
            devices: Some(Ok(Devices::default())),
            ..State::default()
        };
        let mut ui = simulator(state.view(&prefs));
        assert!(
            ui.find("No sound devices were found. Meetings still work: you can listen and chat.")
                .is_ok()
        );
    }

    #[test]
    fn meter_and_test_sound_use_the_chosen_devices() {
        let mut prefs = Prefs {
            audio_input: Some("USB mic".into()),
            audio_output: Some("Headset".into()),
            ..Prefs::default()
        };
        let mut state = State {
            devices: Some(Ok(Devices {
                inputs: vec!["USB mic".into()],
                outputs: vec!["Headset".into()],
            })),
            ..State::default()
        };
        let actions = click(&mut state, &mut prefs, "Test microphone");
        assert_eq!(actions, vec![Action::StartMeter(Some("USB mic".into()))]);
        assert!(state.metering);
        let actions = click(&mut state, &mut prefs, "Play test sound");
        assert_eq!(actions, vec![Action::TestSound(Some("Headset".into()))]);
        // Choosing the system default clears the choice.
        state.update(Message::InputSelected(SYSTEM_DEFAULT.into()), &mut prefs);
        assert_eq!(prefs.audio_input, None);
        let actions = click(&mut state, &mut prefs, "Stop microphone test");
        assert_eq!(actions, vec![Action::StopMeter]);
    }

    #[test]
    fn devices_are_chosen_from_the_keyboard() {
        let mut prefs = Prefs::default();
        let mut state = State {
            devices: Some(Ok(Devices {
                inputs: vec!["USB mic".into(), "Webcam mic".into()],
                outputs: vec!["Headset".into()],
            })),
            ..State::default()
        };
        let keys = |state: &mut State, prefs: &mut Prefs, list: &'static str, keys: &[Named]| {
            interact(state, prefs, |ui| {
                // A press focuses the list (Tab does the same through the app's focus
                // chain, which needs the runtime); from then on, only keys.
                ui.click(iced_test::selector::id(list)).unwrap();
                for key in keys {
                    ui.tap_key(Key::Named(*key));
                }
            })
        };
        let actions = keys(&mut state, &mut prefs, MICROPHONE_LIST, &[Named::ArrowDown]);
        assert_eq!(actions, vec![Action::Save]);
        assert_eq!(prefs.audio_input.as_deref(), Some("USB mic"));
        keys(&mut state, &mut prefs, MICROPHONE_LIST, &[Named::ArrowDown]);
        assert_eq!(prefs.audio_input.as_deref(), Some("Webcam mic"));
        // Enter wraps around to the system default.
        keys(&mut state, &mut prefs, MICROPHONE_LIST, &[Named::Enter]);
        assert_eq!(prefs.audio_input, None);
        keys(&mut state, &mut prefs, MICROPHONE_LIST, &[Named::ArrowUp]);
        assert_eq!(prefs.audio_input.as_deref(), Some("Webcam mic"));
        // The speaker list is separate.
        keys(&mut state, &mut prefs, SPEAKER_LIST, &[Named::Space]);
        assert_eq!(prefs.audio_output.as_deref(), Some("Headset"));
        assert_eq!(prefs.audio_input.as_deref(), Some("Webcam mic"));
        let mut ui = simulator(state.view(&prefs));
        assert!(
            ui.find("Keyboard: Tab to a list, then Up / Down (or Enter) to change the device.")
                .is_ok()
        );
    }

    #[test]
    fn noise_suppression_and_relay_only_defaults() {
        let mut prefs = Prefs::default();
        let mut state = State {
            noise_supported: true,
            relay_only_supported: true,
            ..State::default()
        };
        let actions = click(&mut state, &mut prefs, "Noise suppression");
        assert_eq!(actions, vec![Action::NoiseSuppression(false)]);
        assert!(!prefs.noise_suppression);
        let actions = click(&mut state, &mut prefs, "New meetings use relays only");
        assert_eq!(actions, vec![Action::RelayOnlyDefault(true)]);
        assert!(prefs.relay_only);
    }

    #[test]
    fn relays_are_validated_before_they_are_added() {
        let mut prefs = Prefs::default();
        let mut state = State::default();
        state.update(
            Message::RelayChanged("/ip4/1.2.3.4/tcp/1".into()),
            &mut prefs,
        );
        let actions = click(&mut state, &mut prefs, "Add relay");
        assert!(actions.is_empty());
        assert!(prefs.relays.is_empty());
        let error = state.relay_error.clone().unwrap();
        assert!(error.starts_with("Not added: the relay address"), "{error}");
        let mut ui = simulator(state.view(&prefs));
        assert!(ui.find(error).is_ok());
        drop(ui);

        let relay = format!("/ip4/1.2.3.4/tcp/1/p2p/{}", conclave_core::PeerId::random());
        state.update(Message::RelayChanged(relay.clone()), &mut prefs);
        let actions = click(&mut state, &mut prefs, "Add relay");
        assert_eq!(actions, vec![Action::RelaysChanged]);
        assert_eq!(prefs.relays, vec![relay.clone()]);
        let actions = click(&mut state, &mut prefs, "Remove");
        assert_eq!(actions, vec![Action::RelaysChanged]);
        assert!(prefs.relays.is_empty());
    }

    #[test]
    fn export_checks_the_passphrase_first() {
        let mut prefs = Prefs::default();
        let mut state = State {
            export_path: "/tmp/id.backup".into(),
            export_passphrase: "short".into(),
            export_repeat: "short".into(),
            ..State::default()
        };
        let actions = click(&mut state, &mut prefs, "Export identity");
        assert!(actions.is_empty());
        let mut ui = simulator(state.view(&prefs));
        assert!(
            ui.find("The passphrase needs at least 8 characters.")
                .is_ok()
        );
        drop(ui);
        state.export_passphrase = "long enough phrase".into();
        state.export_repeat = "long enough phrasE".into();
        state.update(Message::Export, &mut prefs);
        assert_eq!(
            state.backup_status,
            Some(Err("The two passphrases differ.".into()))
        );
        state.export_repeat = "long enough phrase".into();
        let actions = click(&mut state, &mut prefs, "Export identity");
        assert_eq!(
            actions,
            vec![Action::Export {
                path: "/tmp/id.backup".into(),
                passphrase: "long enough phrase".into()
            }]
        );
        assert!(
            state.export_passphrase.is_empty(),
            "the passphrase is not kept"
        );
    }

    #[test]
    fn import_needs_a_file_and_a_passphrase() {
        let mut prefs = Prefs::default();
        let mut state = State::default();
        state.update(Message::Import, &mut prefs);
        assert!(matches!(state.backup_status, Some(Err(_))));
        state.import_path = "/tmp/id.backup".into();
        state.import_passphrase = "long enough phrase".into();
        let actions = click(&mut state, &mut prefs, "Restore identity");
        assert_eq!(
            actions,
            vec![Action::Import {
                path: "/tmp/id.backup".into(),
                passphrase: "long enough phrase".into()
            }]
        );
    }
}
