//! What the screens' actions and the keyboard shortcuts do: bridge requests, iced tasks
//! (clipboard, focus, device work) and screen changes.

use std::path::PathBuf;

use iced::Task;
use iced::widget::operation;
use tracing::info;

use crate::gui::audio::{self, Meter};
use crate::gui::bridge::Request;
use crate::gui::screen::{home, meeting, settings};

use super::{App, Banner, LEAVE_GRACE, Message, Screen, Shortcut};

impl App {
    /// Back to the home screen: the meeting is over for us.
    pub(super) fn leave_to_home(&mut self) {
        info!("back to home");
        self.leaving = false;
        self.meeting = None;
        self.pictures.clear_members();
        self.screen = Screen::Home;
        self.request(Request::Recent);
    }

    /// Carries out what the home screen asked for.
    pub(super) fn on_home(&mut self, action: Option<home::Action>) -> Task<Message> {
        let Some(action) = action else {
            return Task::none();
        };
        match action {
            home::Action::SaveName(name) => {
                if let Some(me) = self.me.as_mut() {
                    me.name = name;
                }
                let config = self.config();
                self.request(Request::Start(Box::new(config)));
            }
            home::Action::Create { lobby, relay_only } => {
                self.use_relay_only(relay_only);
                let Some(me) = &self.me else {
                    return Task::none();
                };
                self.meeting = Some(
                    meeting::State::creating(me.peer_id, me.name.clone())
                        .with_camera(self.camera()),
                );
                self.screen = Screen::Meeting;
                self.request(Request::Create { lobby });
            }
            home::Action::Join(invite) => {
                self.use_relay_only(self.home.relay_only);
                let Some(me) = &self.me else {
                    return Task::none();
                };
                self.meeting = Some(
                    meeting::State::joining(me.peer_id, me.name.clone(), invite.to_uri())
                        .with_camera(self.camera()),
                );
                self.screen = Screen::Meeting;
                self.home.invite.0.clear();
                self.home.invite_check = None;
                self.request(Request::Join(invite));
            }
            home::Action::LoadHistory(meeting) => self.request(Request::History(meeting)),
            home::Action::Forget(meeting) => self.request(Request::Forget(meeting)),
            home::Action::SetLobbyDefault(lobby) => {
                self.prefs.lobby = lobby;
                self.save_prefs();
            }
            home::Action::Copy(text) => return iced::clipboard::write(text),
            home::Action::Camera(on) => self.set_camera(on),
            home::Action::OpenSettings => return self.open_settings(),
        }
        Task::none()
    }

    /// Turns our camera on or off (remembered for the next start).
    pub(super) fn set_camera(&mut self, on: bool) {
        info!(on, "camera");
        self.prefs.camera_on = on;
        self.save_prefs();
        if !on {
            self.pictures.clear_me();
        }
        self.request(Request::Camera(on));
    }

    /// Restarts the client (before a meeting) when the relay-only choice changed: the
    /// media policy is part of the client's configuration.
    pub(super) fn use_relay_only(&mut self, relay_only: bool) {
        if relay_only != self.relay_only_active {
            self.relay_only_active = relay_only;
            info!(relay_only, "restarting the client for the media policy");
            let config = self.config();
            self.request(Request::Start(Box::new(config)));
        }
    }

    /// Carries out what the meeting screen asked for.
    pub(super) fn on_meeting(&mut self, action: Option<meeting::Action>) -> Task<Message> {
        let Some(action) = action else {
            return Task::none();
        };
        match action {
            meeting::Action::Mute(muted) => {
                info!(muted, "microphone");
                self.request(Request::Mute(muted));
            }
            meeting::Action::Share(share) => {
                info!(share, "screen sharing");
                self.request(Request::Share(share));
            }
            meeting::Action::Camera(on) => self.set_camera(on),
            meeting::Action::IncomingVideo(on) => {
                info!(on, "incoming video");
                self.request(Request::IncomingVideo(on));
            }
            meeting::Action::Leave => {
                let joined = self
                    .meeting
                    .as_ref()
                    .is_some_and(|m| m.phase == meeting::Phase::In);
                self.request(Request::Leave);
                if !joined {
                    // Cancelling a join, or leaving after a failure: straight home.
                    self.leave_to_home();
                } else {
                    self.leaving = true;
                    // The sleep is built inside the task, on the runtime's executor.
                    return Task::perform(async { tokio::time::sleep(LEAVE_GRACE).await }, |()| {
                        Message::LeaveGraceOver
                    });
                }
            }
            meeting::Action::Chat(text) => self.request(Request::Chat(text)),
            meeting::Action::ResendChat(seq) => self.request(Request::ResendChat(seq)),
            meeting::Action::Kick(peer) => self.request(Request::Kick(peer)),
            meeting::Action::Approve(peer) => self.request(Request::Approve(peer)),
            meeting::Action::SetVerified(peer, verified) => {
                self.request(Request::SetVerified(peer, verified));
            }
            meeting::Action::Copy(text) => {
                info!("invite copied to the clipboard");
                self.banner = Some(Banner {
                    text: "Invite copied. Share it only with the people you invite: it is the key to the meeting.".to_owned(),
                    error: false,
                });
                return iced::clipboard::write(text);
            }
            meeting::Action::Home => {
                let in_meeting = self
                    .meeting
                    .as_ref()
                    .is_some_and(|m| !matches!(m.phase, meeting::Phase::Ended(_)));
                if in_meeting {
                    self.request(Request::Leave);
                }
                self.leave_to_home();
            }
            meeting::Action::LoadHistory(meeting) => {
                self.request(Request::History(meeting));
                return focus(operation::focus(meeting::CHAT_INPUT), "chat");
            }
        }
        Task::none()
    }

    /// Shows the settings screen (remembering where to go back to) and lists devices.
    pub(super) fn open_settings(&mut self) -> Task<Message> {
        if self.screen != Screen::Settings {
            self.previous = self.screen;
        }
        self.screen = Screen::Settings;
        info!("settings shown");
        list_devices()
    }

    /// Carries out what the settings screen asked for.
    pub(super) fn on_settings(&mut self, action: Option<settings::Action>) -> Task<Message> {
        let Some(action) = action else {
            return Task::none();
        };
        match action {
            settings::Action::Back => {
                self.meter = None;
                self.screen = self.previous;
                info!(screen = ?self.screen, "settings closed");
                self.save_prefs();
            }
            settings::Action::ListDevices => return list_devices(),
            settings::Action::Save => self.save_prefs(),
            settings::Action::NoiseSuppression(on) => {
                self.save_prefs();
                if self.options.noise_suppression.is_none() {
                    self.request(Request::NoiseSuppression(on));
                }
            }
            settings::Action::RelayOnlyDefault(on) => {
                self.home.relay_only = on;
                self.save_prefs();
            }
            settings::Action::StartMeter(device) => {
                self.save_prefs();
                self.meter = None;
                self.meter = Some(Meter::start(device));
            }
            settings::Action::StopMeter => self.meter = None,
            settings::Action::TestSound(device) => {
                return Task::perform(
                    async move {
                        tokio::task::spawn_blocking(move || audio::play_test_sound(device))
                            .await
                            .unwrap_or_else(|_| Err("the sound task stopped".to_owned()))
                    },
                    Message::TestSoundDone,
                );
            }
            settings::Action::RelaysChanged => {
                self.save_prefs();
                if self.meeting.is_none() {
                    let config = self.config();
                    self.request(Request::Start(Box::new(config)));
                } else {
                    self.banner = Some(Banner {
                        text: "The relays apply from your next meeting.".to_owned(),
                        error: false,
                    });
                }
            }
            settings::Action::Export { path, passphrase } => self.request(Request::Export {
                path: PathBuf::from(path),
                passphrase,
            }),
            settings::Action::Import { path, passphrase } => {
                if self.meeting.is_some() {
                    self.settings.busy = false;
                    self.settings.backup_status = Some(Err(
                        "Leave the meeting before restoring an identity.".to_owned(),
                    ));
                } else {
                    self.request(Request::Import {
                        path: PathBuf::from(path),
                        passphrase,
                    });
                }
            }
        }
        Task::none()
    }

    /// A keyboard shortcut, on whatever screen is shown.
    pub(super) fn on_shortcut(&mut self, shortcut: Shortcut) -> Task<Message> {
        match shortcut {
            Shortcut::FocusNext => focus(operation::focus_next(), "next"),
            Shortcut::FocusPrevious => focus(operation::focus_previous(), "previous"),
            Shortcut::ToggleMute => {
                if self.screen == Screen::Meeting {
                    return self.update(Message::Meeting(meeting::Message::ToggleMute));
                }
                Task::none()
            }
            Shortcut::ToggleCamera => match self.screen {
                Screen::Meeting => self.update(Message::Meeting(meeting::Message::ToggleCamera)),
                Screen::Home => {
                    if let Some(on) = self.camera() {
                        self.set_camera(!on);
                    }
                    Task::none()
                }
                Screen::Settings => Task::none(),
            },
            Shortcut::ToggleShare => {
                if self.screen == Screen::Meeting {
                    return self.update(Message::Meeting(meeting::Message::ToggleShare));
                }
                Task::none()
            }
            Shortcut::Leave => {
                if self.screen == Screen::Meeting {
                    return self.update(Message::Meeting(meeting::Message::Leave));
                }
                Task::none()
            }
            Shortcut::Settings => self.open_settings(),
            Shortcut::NewMeeting => {
                if self.screen == Screen::Home && self.meeting.is_none() {
                    return self.update(Message::Home(home::Message::NewMeeting));
                }
                Task::none()
            }
            Shortcut::CopyInvite => {
                if self.screen == Screen::Meeting {
                    return self.update(Message::Meeting(meeting::Message::CopyInvite));
                }
                Task::none()
            }
            Shortcut::FocusInvite => match self.screen {
                Screen::Home => focus(operation::focus(home::INVITE_INPUT), "invite"),
                Screen::Meeting => {
                    if let Some(meeting) = self.meeting.as_mut() {
                        meeting.show_chat();
                    }
                    focus(operation::focus(meeting::CHAT_INPUT), "chat")
                }
                Screen::Settings => Task::none(),
            },
            Shortcut::Back => match self.screen {
                Screen::Settings => self.update(Message::Settings(settings::Message::Back)),
                _ => {
                    if self.banner.take().is_some() {
                        info!("banner dismissed");
                    }
                    Task::none()
                }
            },
        }
    }
}

/// `operation` (a focus change), then [`Message::Focused`] with `target` once the runtime has
/// applied it: tasks of a chain run in order, and the runtime applies a widget operation as
/// soon as it receives it.
pub(super) fn focus(operation: Task<Message>, target: &'static str) -> Task<Message> {
    operation.chain(Task::done(Message::Focused(target)))
}

/// Lists the sound devices in a background task.
pub(super) fn list_devices() -> Task<Message> {
    Task::perform(
        async {
            tokio::task::spawn_blocking(audio::list_devices)
                .await
                .unwrap_or_else(|_| Err("the device task stopped".to_owned()))
        },
        Message::Devices,
    )
}
