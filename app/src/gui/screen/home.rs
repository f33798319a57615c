//! Home: who you are (editable name, peer id, safety number), start a meeting, join one by
//! pasting an invite (validated as you type), and the meetings you were in before.

use conclave_core::{ChatRecord, Invite, MeetingId, PeerId};
use iced::widget::{Column, column, container, image, row, scrollable, text, text_input, tooltip};
use iced::{ContentFit, Element, Length};

use crate::gui::bridge::{Me, Recent, Redacted};
use crate::gui::video::Pictures;
use crate::gui::widget::focus::{button, checkbox};
use conclave_core::media::video::VideoKind;
use conclave_core::media::video::display::Owner;

/// Id of the invite field (focused on start).
pub(crate) const INVITE_INPUT: &str = "invite";
/// Id of the name field.
pub(crate) const NAME_INPUT: &str = "name";

/// Longest display name accepted.
pub(crate) const MAX_NAME_CHARS: usize = 64;

/// Home screen state.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The name field.
    pub(crate) name: String,
    /// The invite field (holds a secret: redacted in `Debug`).
    pub(crate) invite: Redacted<String>,
    /// The invite parsed, or why it cannot be used (`None` while empty).
    pub(crate) invite_check: Option<Result<Invite, String>>,
    /// "New meeting" options.
    pub(crate) lobby: bool,
    /// Relay-only is available in this build's core.
    pub(crate) relay_only_supported: bool,
    /// Relay-only chosen.
    pub(crate) relay_only: bool,
    /// Remembered meetings, most recent first.
    pub(crate) recent: Vec<Recent>,
    /// The chat history being shown, if any.
    pub(crate) history: Option<(MeetingId, Vec<ChatRecord>)>,
    /// The meeting whose deletion waits for the user's confirmation.
    pub(crate) confirm_forget: Option<MeetingId>,
}

/// What the user did on the home screen.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    NameChanged(String),
    SaveName,
    InviteChanged(Redacted<String>),
    Join,
    NewMeeting,
    LobbyToggled(bool),
    RelayOnlyToggled(bool),
    Rejoin(usize),
    ShowHistory(usize),
    CloseHistory,
    Forget(usize),
    ConfirmForget,
    CancelForget,
    CopyPeerId,
    OpenSettings,
    /// Camera on or off (the preview shows it).
    Camera(bool),
}

/// What the app must do for the home screen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    SaveName(String),
    Create {
        lobby: bool,
        relay_only: bool,
    },
    Join(Box<Invite>),
    LoadHistory(MeetingId),
    Forget(MeetingId),
    SetLobbyDefault(bool),
    Copy(String),
    OpenSettings,
    /// Turn the camera on or off.
    Camera(bool),
}

/// The invite check, as shown under the field.
pub(crate) fn check_invite(text: &str) -> Option<Result<Invite, String>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(
        text.parse::<Invite>()
            .map_err(|err| format!("This invite cannot be used: {err}.")),
    )
}

impl State {
    /// Handles a message; returns what the app must do.
    pub(crate) fn update(&mut self, message: Message, me: Option<&Me>) -> Option<Action> {
        match message {
            Message::Camera(on) => Some(Action::Camera(on)),
            Message::NameChanged(name) => {
                self.name = name.chars().take(MAX_NAME_CHARS).collect();
                None
            }
            Message::SaveName => {
                let name = self.name.trim().to_owned();
                (!name.is_empty() && me.is_none_or(|me| me.name != name))
                    .then_some(Action::SaveName(name))
            }
            Message::InviteChanged(invite) => {
                self.invite_check = check_invite(&invite.0);
                self.invite = invite;
                None
            }
            Message::Join => match &self.invite_check {
                Some(Ok(invite)) => Some(Action::Join(Box::new(invite.clone()))),
                _ => None,
            },
            Message::NewMeeting => Some(Action::Create {
                lobby: self.lobby,
                relay_only: self.relay_only && self.relay_only_supported,
            }),
            Message::LobbyToggled(lobby) => {
                self.lobby = lobby;
                Some(Action::SetLobbyDefault(lobby))
            }
            Message::RelayOnlyToggled(on) => {
                self.relay_only = on && self.relay_only_supported;
                None
            }
            Message::Rejoin(index) => {
                let recent = self.recent.get(index)?;
                match recent.invite.0.parse::<Invite>() {
                    Ok(invite) => Some(Action::Join(Box::new(invite))),
                    Err(err) => {
                        self.invite_check = Some(Err(format!(
                            "The stored invite of this meeting is damaged: {err}."
                        )));
                        None
                    }
                }
            }
            Message::ShowHistory(index) => {
                let recent = self.recent.get(index)?;
                Some(Action::LoadHistory(recent.meeting_id))
            }
            Message::CloseHistory => {
                self.history = None;
                None
            }
            Message::Forget(index) => {
                self.confirm_forget = Some(self.recent.get(index)?.meeting_id);
                None
            }
            Message::ConfirmForget => self.confirm_forget.take().map(Action::Forget),
            Message::CancelForget => {
                self.confirm_forget = None;
                None
            }
            Message::CopyPeerId => me.map(|me| Action::Copy(me.peer_id.to_string())),
            Message::OpenSettings => Some(Action::OpenSettings),
        }
    }

    /// Draws the screen.
    pub(crate) fn view<'a>(
        &'a self,
        me: Option<&'a Me>,
        camera: Option<bool>,
        pictures: &Pictures,
    ) -> Element<'a, Message> {
        let ready = me.is_some();
        let identity: Element<'a, Message> = match me {
            Some(me) => self.view_identity(me),
            None => text("Starting Conclave…").into(),
        };
        let left = column![identity, self.view_create(ready), self.view_join(ready)]
            .spacing(28)
            .width(Length::FillPortion(3));
        let mut right = column![
            view_preview(camera, pictures),
            text("Recent meetings").size(22),
            self.view_recent(ready)
        ]
        .spacing(10);
        if let Some((meeting, lines)) = &self.history {
            right = right.push(view_history(*meeting, lines));
        }
        let header = row![
            text("Conclave").size(30).width(Length::Fill),
            button("Settings")
                .style(button::secondary)
                .on_press(Message::OpenSettings),
        ]
        .align_y(iced::Alignment::Center);
        scrollable(
            column![
                header,
                text("End-to-end encrypted meetings, peer to peer. No server can listen in.")
                    .size(14)
                    .color(iced::Color::from_rgb(0.78, 0.80, 0.84)),
                row![left, right.width(Length::FillPortion(2))].spacing(32),
            ]
            .spacing(16)
            .padding(24),
        )
        .into()
    }

    /// Who we are: the name field, the peer id and the safety number.
    fn view_identity<'a>(&'a self, me: &'a Me) -> Element<'a, Message> {
        column![
            text("You").size(22),
            row![
                text_input("Your name", &self.name)
                    .id(NAME_INPUT)
                    .on_input(Message::NameChanged)
                    .on_submit(Message::SaveName)
                    .width(Length::Fixed(260.0)),
                button("Save name").on_press_maybe(
                    (!self.name.trim().is_empty() && self.name.trim() != me.name)
                        .then_some(Message::SaveName)
                ),
            ]
            .spacing(8),
            row![
                text(format!("Peer id: {}", short_peer(&me.peer_id))).size(14),
                button(text("Copy peer id").size(13))
                    .style(button::secondary)
                    .on_press(Message::CopyPeerId),
            ]
            .spacing(8)
            .align_y(iced::Alignment::Center),
            text(format!("Safety number: {}", me.safety_number)).size(14),
            text("Others compare this number with the one they see for you to be sure they talk to you.")
                .size(13),
        ]
        .spacing(8)
        .into()
    }

    /// "Start a meeting": the lobby and relay-only options and the button.
    fn view_create(&self, ready: bool) -> Element<'_, Message> {
        let relay_only = checkbox(
            self.relay_only,
            "Relay only (hide my network address)",
            self.relay_only_supported
                .then_some(Message::RelayOnlyToggled as fn(bool) -> Message),
        );
        let relay_only = tooltip(
            relay_only,
            container(
                text(if self.relay_only_supported {
                    "Audio goes only through your relays (Settings): the other members never learn your IP address."
                } else {
                    "Relay-only meetings need a newer core; coming soon."
                })
                .size(13),
            )
            .padding(8)
            .max_width(360)
            .style(container::rounded_box),
            tooltip::Position::Bottom,
        );
        column![
            text("Start a meeting").size(22),
            checkbox(
                self.lobby,
                "Lobby: I let each person in",
                Some(Message::LobbyToggled as fn(bool) -> Message),
            ),
            relay_only,
            button("New meeting").on_press_maybe(ready.then_some(Message::NewMeeting)),
        ]
        .spacing(10)
        .into()
    }

    /// "Join a meeting": the invite field, checked as it is typed.
    fn view_join(&self, ready: bool) -> Element<'_, Message> {
        let can_join = ready && matches!(self.invite_check, Some(Ok(_)));
        let status: Element<'_, Message> = match &self.invite_check {
            None => text("Paste the invite you were sent (it starts with conclave:).")
                .size(13)
                .into(),
            Some(Ok(invite)) => text(format!(
                "Valid invite for meeting {}{}.",
                invite.meeting_id.short(),
                if invite.lobby { " (with a lobby)" } else { "" }
            ))
            .size(13)
            .color(iced::Color::from_rgb(0.45, 0.85, 0.55))
            .into(),
            Some(Err(err)) => text(err.clone())
                .size(13)
                .color(iced::Color::from_rgb(1.0, 0.55, 0.55))
                .into(),
        };
        column![
            text("Join a meeting").size(22),
            row![
                text_input("conclave:…", &self.invite.0)
                    .id(INVITE_INPUT)
                    .on_input(|text| Message::InviteChanged(Redacted(text)))
                    .on_submit(Message::Join),
                button("Join").on_press_maybe(can_join.then_some(Message::Join)),
            ]
            .spacing(8),
            status,
        ]
        .spacing(10)
        .into()
    }

    /// The meetings we were in, each with Rejoin, Chat history and Delete (which asks
    /// first).
    fn view_recent(&self, ready: bool) -> Element<'_, Message> {
        let mut recent = Column::new().spacing(6);
        if self.recent.is_empty() {
            recent = recent.push(text("No meetings yet.").size(14));
        }
        for (index, meeting) in self.recent.iter().enumerate().take(20) {
            let label = text(format!(
                "Meeting {} · {}",
                meeting.meeting_id.short(),
                when(meeting.last_seen_unix_ms)
            ))
            .width(Length::Fill);
            let line = if self.confirm_forget == Some(meeting.meeting_id) {
                row![
                    text("Delete its chat history and invite from this computer for good?")
                        .size(14)
                        .width(Length::Fill),
                    button(text("Delete for good").size(14))
                        .style(button::danger)
                        .on_press_maybe(ready.then_some(Message::ConfirmForget)),
                    button(text("Cancel").size(14))
                        .style(button::secondary)
                        .on_press(Message::CancelForget),
                ]
            } else {
                row![
                    label,
                    button(text("Rejoin").size(14))
                        .on_press_maybe(ready.then_some(Message::Rejoin(index))),
                    button(text("Chat history").size(14))
                        .style(button::secondary)
                        .on_press(Message::ShowHistory(index)),
                    button(text("Delete").size(14))
                        .style(button::secondary)
                        .on_press_maybe(ready.then_some(Message::Forget(index))),
                ]
            };
            recent = recent.push(line.spacing(8).align_y(iced::Alignment::Center));
        }
        recent.into()
    }
}

/// The stored chat of `meeting` (its last 200 lines), with a Close button.
/// Size of the camera preview.
const PREVIEW: (f32, f32) = (320.0, 180.0);

/// The camera preview before joining: the self-view (mirrored) or why there is none,
/// and the button that turns the camera on or off.
fn view_preview<'a>(camera: Option<bool>, pictures: &Pictures) -> Element<'a, Message> {
    let (width, height) = PREVIEW;
    pictures.draw_at(Owner::Me, VideoKind::Camera, width, height);
    let picture: Element<'a, Message> = match (camera, pictures.me()) {
        (Some(true), Some(shown)) => image(shown.handle.clone())
            .content_fit(ContentFit::Cover)
            .filter_method(shown.filter_in(width, height))
            .width(Length::Fill)
            .height(Length::Fill)
            .into(),
        (Some(true), None) => container(text("Starting the camera…").size(14))
            .center(Length::Fill)
            .into(),
        (Some(false), _) => container(text("Your camera is off").size(14))
            .center(Length::Fill)
            .into(),
        (None, _) => {
            container(text("No camera found: the others will see your initials.").size(14))
                .center(Length::Fill)
                .into()
        }
    };
    let frame = container(picture)
        .width(Length::Fixed(width))
        .height(Length::Fixed(height))
        .clip(true)
        .style(container::bordered_box);
    let toggle = button(match camera {
        Some(true) => "Turn camera off",
        _ => "Turn camera on",
    })
    .style(button::secondary)
    .on_press_maybe(camera.map(|on| Message::Camera(!on)));
    column![
        text("Camera preview").size(22),
        frame,
        row![toggle, text("Ctrl+E").size(13)]
            .spacing(10)
            .align_y(iced::Alignment::Center),
    ]
    .spacing(10)
    .padding(iced::Padding::ZERO.bottom(18))
    .into()
}

fn view_history<'a>(meeting: MeetingId, lines: &'a [ChatRecord]) -> Element<'a, Message> {
    let mut list = Column::new().spacing(4);
    if lines.is_empty() {
        list = list.push(text("Nothing was said in this meeting.").size(14));
    }
    for line in lines.iter().rev().take(200).rev() {
        list = list.push(text(format!("{}: {}", line.name, line.text)).size(14));
    }
    container(
        column![
            row![
                text(format!("Chat of meeting {}", meeting.short()))
                    .size(16)
                    .width(Length::Fill),
                button(text("Close").size(13))
                    .style(button::secondary)
                    .on_press(Message::CloseHistory),
            ],
            scrollable(list).height(Length::Fixed(220.0)),
        ]
        .spacing(6),
    )
    .padding(10)
    .style(container::bordered_box)
    .into()
}

/// A peer id shortened for display (first and last characters).
pub(crate) fn short_peer(peer: &PeerId) -> String {
    let full = peer.to_string();
    if full.len() <= 16 {
        return full;
    }
    format!("{}…{}", &full[..8], &full[full.len() - 6..])
}

/// "2026-11-29 15:04 UTC" for a Unix time in ms.
pub(crate) fn when(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No video pictures (leaked: views borrow them for as long as they live).
    fn no_video() -> &'static Pictures {
        Box::leak(Box::default())
    }
    use iced_test::{selector, simulator};

    fn me() -> Me {
        Me {
            peer_id: PeerId::random(),
            safety_number: "12345 67890 12345 67890".to_owned(),
            name: "Ada".to_owned(),
        }
    }

    fn invite() -> Invite {
        Invite::new_meeting(&mut rand::rngs::OsRng)
    }

    /// Renders the screen, runs `interact` on it, and feeds the produced messages back.
    /// Clicks the widget showing `text`; returns the resulting actions.
    fn click(state: &mut State, me: &Me, text: impl Into<String>) -> Vec<Action> {
        let text = text.into();
        interact(state, me, |ui| {
            ui.click(text).unwrap();
        })
    }

    fn interact(
        state: &mut State,
        me: &Me,
        interact: impl FnOnce(&mut iced_test::Simulator<'_, Message>),
    ) -> Vec<Action> {
        let messages: Vec<Message> = {
            let mut ui = simulator(state.view(Some(me), None, no_video()));
            interact(&mut ui);
            ui.into_messages().collect()
        };
        messages
            .into_iter()
            .filter_map(|m| state.update(m, Some(me)))
            .collect()
    }

    #[test]
    fn shows_identity_and_safety_number() {
        let me = me();
        let state = State {
            name: "Ada".into(),
            ..State::default()
        };
        let mut ui = simulator(state.view(Some(&me), None, no_video()));
        assert!(ui.find("Safety number: 12345 67890 12345 67890").is_ok());
        assert!(
            ui.find(format!("Peer id: {}", short_peer(&me.peer_id)))
                .is_ok()
        );
    }

    #[test]
    fn typing_an_invite_validates_it_precisely() {
        let me = me();
        let mut state = State::default();
        let actions = interact(&mut state, &me, |ui| {
            ui.click(selector::id(INVITE_INPUT)).unwrap();
            ui.typewrite("https://example.org");
        });
        assert!(actions.is_empty());
        assert_eq!(state.invite.0, "https://example.org");
        let mut ui = simulator(state.view(Some(&me), None, no_video()));
        assert!(
            ui.find("This invite cannot be used: the invite must start with \"conclave:\".")
                .is_ok()
        );
        drop(ui);
        // Join is disabled: clicking it does nothing.
        let actions = interact(&mut state, &me, |ui| {
            let _ = ui.click("Join");
        });
        assert!(actions.is_empty());
    }

    #[test]
    fn a_valid_invite_joins() {
        let me = me();
        let mut state = State::default();
        let invite = invite();
        state.update(Message::InviteChanged(Redacted(invite.to_uri())), Some(&me));
        let mut ui = simulator(state.view(Some(&me), None, no_video()));
        assert!(
            ui.find(format!(
                "Valid invite for meeting {}.",
                invite.meeting_id.short()
            ))
            .is_ok()
        );
        drop(ui);
        let actions = click(&mut state, &me, "Join");
        assert_eq!(actions, vec![Action::Join(Box::new(invite))]);
    }

    #[test]
    fn new_meeting_with_a_lobby() {
        let me = me();
        let mut state = State::default();
        let actions = click(&mut state, &me, "Lobby: I let each person in");
        assert_eq!(actions, vec![Action::SetLobbyDefault(true)]);
        let actions = click(&mut state, &me, "New meeting");
        assert_eq!(
            actions,
            vec![Action::Create {
                lobby: true,
                relay_only: false
            }]
        );
    }

    #[test]
    fn relay_only_is_disabled_until_the_core_supports_it() {
        let me = me();
        let mut state = State::default();
        let actions = click(&mut state, &me, "Relay only (hide my network address)");
        assert!(actions.is_empty());
        assert!(!state.relay_only);
    }

    #[test]
    fn relay_only_is_an_option_of_new_meetings_when_supported() {
        let me = me();
        let mut state = State {
            relay_only_supported: true,
            ..State::default()
        };
        click(&mut state, &me, "Relay only (hide my network address)");
        assert!(state.relay_only);
        let actions = click(&mut state, &me, "New meeting");
        assert_eq!(
            actions,
            vec![Action::Create {
                lobby: false,
                relay_only: true
            }]
        );
    }

    /// A home screen that remembers the meeting of `invite` (seen 2025-11-29 15:04 UTC).
    fn with_recent(invite: &Invite) -> State {
        State {
            recent: vec![Recent {
                meeting_id: invite.meeting_id,
                invite: Redacted(invite.to_uri()),
                last_seen_unix_ms: 1_764_428_640_000,
            }],
            ..State::default()
        }
    }

    #[test]
    fn recent_meetings_rejoin_and_show_history() {
        let me = me();
        let invite = invite();
        let mut state = with_recent(&invite);
        let mut ui = simulator(state.view(Some(&me), None, no_video()));
        assert!(
            ui.find(format!(
                "Meeting {} · 2025-11-29 15:04 UTC",
                invite.meeting_id.short()
            ))
            .is_ok()
        );
        drop(ui);
        let actions = click(&mut state, &me, "Rejoin");
        assert_eq!(actions, vec![Action::Join(Box::new(invite.clone()))]);
        let actions = click(&mut state, &me, "Chat history");
        assert_eq!(actions, vec![Action::LoadHistory(invite.meeting_id)]);
        state.history = Some((
            invite.meeting_id,
            vec![ChatRecord {
                from: "p".into(),
                name: "Bob".into(),
                text: "hello".into(),
                unix_ms: 1,
            }],
        ));
        let mut ui = simulator(state.view(Some(&me), None, no_video()));
        assert!(ui.find("Bob: hello").is_ok());
    }

    #[test]
    fn deleting_a_meetings_history_asks_first() {
        let me = me();
        let invite = invite();
        let mut state = with_recent(&invite);
        assert!(click(&mut state, &me, "Delete").is_empty(), "nothing yet");
        assert!(click(&mut state, &me, "Cancel").is_empty());
        assert_eq!(state.confirm_forget, None);
        assert!(click(&mut state, &me, "Delete").is_empty());
        let actions = click(&mut state, &me, "Delete for good");
        assert_eq!(actions, vec![Action::Forget(invite.meeting_id)]);
    }

    #[test]
    fn invites_never_reach_debug_output() {
        let invite = invite();
        let mut state = State::default();
        state.update(Message::InviteChanged(Redacted(invite.to_uri())), None);
        let shown = format!("{state:?}");
        assert!(!shown.contains(&invite.to_uri()[10..]), "{shown}");
    }

    #[test]
    fn renaming_saves_the_new_name() {
        let me = me();
        let mut state = State {
            name: "Ada".into(),
            ..State::default()
        };
        let actions = interact(&mut state, &me, |ui| {
            ui.click(selector::id(NAME_INPUT)).unwrap();
            ui.typewrite(" L");
        });
        assert!(actions.is_empty());
        let actions = click(&mut state, &me, "Save name");
        assert_eq!(actions, vec![Action::SaveName("Ada L".into())]);
    }
}
