//! Drawing the meeting screen: the joining progress, the meeting itself (header, lobby,
//! security code, notices, the tiles in a grid or around a stage, controls) and its side
//! panels (chat, participants).

use std::collections::BTreeSet;

use conclave_core::PeerId;
use conclave_core::media::video::VideoKind;
use conclave_core::media::video::display::Owner;
use iced::widget::{
    Column, Row, column, container, image, responsive, row, scrollable, text, text_input, tooltip,
};
use iced::{Alignment, Color, ContentFit, Element, Length};

use super::{
    CHAT_INPUT, CODE_EXPLANATION, Delivery, Layout, Message, Panel, Phase, Stage, Staged, State,
    display_name, safety_number_of,
};
use crate::gui::video::{Pictures, Shown};
use crate::gui::widget::badge::{self, colour};
use crate::gui::widget::focus::button;
use crate::gui::widget::tile::{self, TileInfo, TileSize};

/// A participant's tile of `size` with its camera's `video`; the core is told the size it
/// is drawn at (so its pictures come at that size), and pressing it pins the member.
fn camera_tile<'a>(
    pictures: &Pictures,
    info: &TileInfo,
    video: Option<&Shown>,
    size: TileSize,
) -> Element<'a, Message> {
    let (width, height) = size.dimensions();
    let owner = info.peer.map_or(Owner::Me, Owner::Member);
    pictures.draw_at(owner, VideoKind::Camera, width, height);
    tile::tile(info, video, size, info.peer.map(Message::Pin))
}

/// Space between tiles.
const GAP: f32 = 10.0;
/// Width of the chat and participants panel.
const PANEL_WIDTH: f32 = 340.0;

impl State {
    /// Draws the screen.
    pub(crate) fn view<'a>(
        &'a self,
        verified: &BTreeSet<PeerId>,
        pictures: &'a Pictures,
    ) -> Element<'a, Message> {
        match &self.phase {
            Phase::Creating => progress("Creating the meeting…", None),
            Phase::Joining(stage) => progress(stage.describe(), Some(*stage)),
            Phase::Ended(reason) => container(
                column![
                    text("The meeting is over for you").size(24),
                    text(reason.clone()).size(16),
                    button("Back to home").on_press(Message::BackHome),
                ]
                .spacing(16)
                .align_x(Alignment::Center)
                .max_width(560),
            )
            .center(Length::Fill)
            .into(),
            Phase::In => self.view_in(verified, pictures),
        }
    }

    /// The meeting itself: header, lobby, code, notices, tiles and controls, with the side
    /// panel.
    fn view_in<'a>(
        &'a self,
        verified: &BTreeSet<PeerId>,
        pictures: &'a Pictures,
    ) -> Element<'a, Message> {
        let code = self.security_code.clone().unwrap_or_default();
        let mut body = Column::new().spacing(12).push(self.view_header(&code));
        if let Some(alert) = &self.alert {
            body = body.push(badge::badge(alert.clone(), colour::BAD));
            // The host removes the offender in one click, even when it is the committer.
            if let Some(peer) = self.alert_member.filter(|_| self.host) {
                let who = self.name_of(&peer);
                body = body.push(
                    button(text(format!("Remove {who} from the meeting")).size(13))
                        .style(button::danger)
                        .on_press(Message::Kick(peer)),
                );
            }
        }
        if let Some(sharing) = self.sharing {
            body = body.push(self.view_sharing(sharing));
        }
        if self.reconnecting {
            body = body.push(badge::badge(
                "Connection lost — reconnecting…".to_owned(),
                colour::CAUTION,
            ));
        }
        // Joiners waiting in the lobby come first: right after the header in the Tab order.
        if self.host && !self.knocking.is_empty() {
            body = body.push(self.view_lobby());
        }
        if self.show_code {
            body = body.push(view_code(&code));
        }
        if !self.notices.is_empty() {
            body = body.push(self.view_notices());
        }
        body = body
            .push(self.view_tiles(verified, pictures))
            .push(self.view_controls());

        let main = body.width(Length::Fill);
        let panel: Option<Element<'a, Message>> = match self.panel {
            Panel::Chat => Some(self.view_chat()),
            Panel::Participants => Some(self.view_participants(verified)),
            Panel::Hidden => None,
        };
        let mut layout = row![main].spacing(16).padding(20);
        if let Some(panel) = panel {
            layout = layout.push(
                container(panel)
                    .padding(12)
                    .width(Length::Fixed(PANEL_WIDTH))
                    .height(Length::Fill)
                    .style(container::bordered_box),
            );
        }
        layout.into()
    }

    /// The meeting's name and the security code button (its explanation as a tooltip).
    fn view_header<'a>(&'a self, code: &str) -> Element<'a, Message> {
        row![
            text(format!(
                "Meeting {}",
                self.meeting_id.map(|m| m.short()).unwrap_or_default()
            ))
            .size(22)
            .width(Length::Fill),
            tooltip(
                button(text(format!("Security code {code}")).size(15))
                    .style(button::secondary)
                    .on_press(Message::ToggleCode),
                container(text(CODE_EXPLANATION).size(13))
                    .padding(8)
                    .max_width(360)
                    .style(container::rounded_box),
                tooltip::Position::Bottom,
            ),
        ]
        .spacing(12)
        .align_y(Alignment::Center)
        .into()
    }

    /// The host's lobby: each waiting joiner with its safety number and a button to let
    /// it in.
    fn view_lobby(&self) -> Element<'_, Message> {
        let mut lobby = Column::new().spacing(6).push(badge::badge(
            format!("{} waiting in the lobby", self.knocking.len()),
            colour::CAUTION,
        ));
        for (peer, name) in &self.knocking {
            let shown = display_name(peer, name);
            lobby = lobby.push(
                row![
                    text(format!(
                        "{shown} wants to join (safety number {})",
                        safety_number_of(peer)
                    ))
                    .size(14)
                    .width(Length::Fill),
                    button(text(format!("Let {shown} in")).size(14))
                        .on_press(Message::Approve(*peer)),
                ]
                .spacing(8)
                .align_y(Alignment::Center),
            );
        }
        lobby.into()
    }

    /// Recent notices, newest first, with a button to dismiss them.
    fn view_notices(&self) -> Element<'_, Message> {
        let mut notices = Column::new().spacing(4);
        for notice in self.notices.iter().rev() {
            notices = notices.push(text(notice.clone()).size(14));
        }
        strip(
            notices.width(Length::Fill).into(),
            button(text("Dismiss").size(13))
                .style(button::secondary)
                .on_press(Message::DismissNotices)
                .into(),
            colour::NEUTRAL,
        )
    }

    /// The tiles: a grid that makes them as large as the room allows, or the stage (a
    /// shared screen, the pinned member or the active speaker, large) above a strip of the
    /// others.
    fn view_tiles<'a>(
        &'a self,
        verified: &BTreeSet<PeerId>,
        pictures: &'a Pictures,
    ) -> Element<'a, Message> {
        let tiles = self.tiles(verified);
        let camera = |info: &TileInfo| match info.peer {
            Some(peer) if self.incoming_video => pictures.camera(&peer),
            Some(_) => None,
            None => pictures.me(),
        };
        let Some(staged) = self.staged() else {
            // As many tiles across as makes them largest in the room there is.
            let tiles: Vec<(TileInfo, Option<Shown>)> = tiles
                .into_iter()
                .map(|info| {
                    let video = camera(&info).cloned();
                    (info, video)
                })
                .collect();
            return responsive(move |room| {
                let (size, columns) = tile::grid_tile(tiles.len(), room.width, room.height, GAP);
                let mut grid = Column::new().spacing(GAP);
                for line in tiles.chunks(columns) {
                    let mut row = Row::new().spacing(GAP);
                    for (info, video) in line {
                        row = row.push(camera_tile(pictures, info, video.as_ref(), size));
                    }
                    grid = grid.push(row);
                }
                scrollable(container(grid).center_x(Length::Fill))
                    .height(Length::Fill)
                    .into()
            })
            .into();
        };
        let (stage, on_stage): (Element<'_, Message>, Option<PeerId>) = match staged {
            Staged::Screen(peer) => {
                let picture = pictures
                    .get(Owner::Member(peer), VideoKind::Screen)
                    .filter(|_| self.incoming_video)
                    .cloned();
                (self.view_screen(peer, picture, pictures), None)
            }
            Staged::Camera(peer) => {
                let staged = match tiles.iter().find(|info| info.peer == Some(peer)) {
                    Some(info) => {
                        let (info, video) = (info.clone(), camera(info).cloned());
                        responsive(move |room| {
                            let size = TileSize::Stage {
                                width: room.width,
                                height: room.height,
                            };
                            camera_tile(pictures, &info, video.as_ref(), size)
                        })
                        .into()
                    }
                    None => text("").into(),
                };
                (staged, Some(peer))
            }
        };
        let mut strip = Row::new().spacing(GAP);
        for info in tiles
            .iter()
            .filter(|info| info.peer.is_none() || info.peer != on_stage)
        {
            strip = strip.push(camera_tile(pictures, info, camera(info), TileSize::Strip));
        }
        column![
            container(stage).width(Length::Fill).height(Length::Fill),
            scrollable(strip).direction(scrollable::Direction::Horizontal(
                scrollable::Scrollbar::new()
            )),
        ]
        .spacing(10)
        .height(Length::Fill)
        .into()
    }

    /// A member's shared screen, whole (letterboxed), with whose it is.
    fn view_screen<'a>(
        &'a self,
        peer: PeerId,
        picture: Option<Shown>,
        pictures: &'a Pictures,
    ) -> Element<'a, Message> {
        let whose = format!("{}'s screen", self.name_of(&peer));
        let content: Element<'a, Message> = match picture {
            Some(shown) => responsive(move |room| {
                pictures.draw_at(
                    Owner::Member(peer),
                    VideoKind::Screen,
                    room.width,
                    room.height,
                );
                image(shown.handle.clone())
                    .content_fit(ContentFit::Contain)
                    .filter_method(shown.filter_in(room.width, room.height))
                    .width(Length::Fill)
                    .height(Length::Fill)
                    .into()
            })
            .into(),
            None if !self.incoming_video => container(
                text("Incoming video is off. Turn it on to see the shared screen.").size(16),
            )
            .center(Length::Fill)
            .into(),
            None => container(text(format!("Waiting for {whose}…")).size(16))
                .center(Length::Fill)
                .into(),
        };
        column![
            text(whose).size(15),
            container(content)
                .width(Length::Fill)
                .height(Length::Fill)
                .style(|_theme: &iced::Theme| container::Style {
                    background: Some(Color::BLACK.into()),
                    ..container::Style::default()
                }),
        ]
        .spacing(4)
        .into()
    }

    /// The "you are sharing your screen" strip, with its stop button.
    fn view_sharing(&self, size: Option<(u32, u32)>) -> Element<'_, Message> {
        let what = match size {
            Some((width, height)) => format!(
                "You are sharing your screen ({width}×{height}): everyone in the meeting sees it."
            ),
            None => "Starting to share your screen…".to_owned(),
        };
        strip(
            text(what).size(15).width(Length::Fill).into(),
            button(text("Stop sharing").size(14))
                .style(button::danger)
                .on_press(Message::ToggleShare)
                .into(),
            colour::CAUTION,
        )
    }

    /// Mute, camera, share, the layout and incoming video, the panels, copy invite,
    /// leave, and the keyboard shortcuts.
    fn view_controls(&self) -> Element<'_, Message> {
        let chat_label = if self.unread > 0 {
            format!("Chat ({} new)", self.unread)
        } else {
            "Chat".to_owned()
        };
        let buttons = row![
            button(if self.muted { "Unmute" } else { "Mute" })
                .style(if self.muted {
                    button::danger
                } else {
                    button::primary
                })
                .on_press(Message::ToggleMute),
            button(match self.camera {
                Some(true) => "Stop camera",
                Some(false) => "Start camera",
                None => "No camera",
            })
            .style(if self.camera == Some(false) {
                button::danger
            } else {
                button::secondary
            })
            .on_press_maybe(self.camera.map(|_| Message::ToggleCamera)),
            button(if self.sharing.is_some() {
                "Stop sharing"
            } else {
                "Share screen"
            })
            .style(if self.sharing.is_some() {
                button::danger
            } else {
                button::secondary
            })
            .on_press(Message::ToggleShare),
            button(match self.layout {
                Layout::Grid => "Speaker view",
                Layout::Speaker => "Grid view",
            })
            .style(button::secondary)
            .on_press(Message::ToggleLayout),
            button(if self.incoming_video {
                "Stop incoming video"
            } else {
                "Show incoming video"
            })
            .style(button::secondary)
            .on_press(Message::ToggleIncomingVideo),
            button(text(chat_label))
                .style(button::secondary)
                .on_press(Message::ShowPanel(Panel::Chat)),
            button("Participants")
                .style(button::secondary)
                .on_press(Message::ShowPanel(Panel::Participants)),
            button("Copy invite")
                .style(button::secondary)
                .on_press_maybe(self.invite.is_some().then_some(Message::CopyInvite)),
            button("Leave")
                .style(button::danger)
                .on_press(Message::Leave),
        ]
        .spacing(10)
        .align_y(Alignment::Center)
        .wrap()
        .vertical_spacing(8);
        column![
            buttons,
            text("Ctrl+D: mute · Ctrl+E: camera · Ctrl+Shift+E: share screen · Ctrl+I: copy invite · Ctrl+Shift+L: leave · click a tile to pin it")
                .size(13),
        ]
        .spacing(6)
        .into()
    }

    fn view_chat(&self) -> Element<'_, Message> {
        let mut lines = Column::new().spacing(6);
        if self.chat.is_empty() {
            lines =
                lines.push(text("No messages yet. Messages are end-to-end encrypted.").size(14));
        }
        for line in &self.chat {
            let prefix = if line.earlier { "(earlier) " } else { "" };
            let said = text(format!("{prefix}{}: {}", line.name, line.text)).size(15);
            lines = match line.own {
                None => lines.push(said),
                Some((_, Delivery::Pending)) => {
                    lines.push(column![said, text("sending…").size(12)].spacing(2))
                }
                Some((_, Delivery::Delivered)) => {
                    lines.push(column![said, text("delivered ✓").size(12)].spacing(2))
                }
                Some((seq, Delivery::Failed(missing))) => lines.push(
                    column![
                        said,
                        row![
                            text(format!("not delivered to {missing} member(s)")).size(12),
                            button(text("Resend").size(12)).on_press(Message::ResendChat(seq)),
                        ]
                        .spacing(8)
                        .align_y(Alignment::Center),
                    ]
                    .spacing(2),
                ),
            };
        }
        column![
            text("Chat messages").size(20),
            scrollable(lines).height(Length::Fill).anchor_bottom(),
            row![
                text_input("Write a message…", &self.chat_input)
                    .id(CHAT_INPUT)
                    .on_input(Message::ChatChanged)
                    .on_submit(Message::SendChat),
                button("Send").on_press_maybe(
                    (!self.chat_input.trim().is_empty()).then_some(Message::SendChat)
                ),
            ]
            .spacing(8),
        ]
        .spacing(10)
        .into()
    }

    fn view_participants<'a>(&'a self, verified: &BTreeSet<PeerId>) -> Element<'a, Message> {
        let mut list = Column::new().spacing(12);
        if self.host && !self.knocking.is_empty() {
            list = list.push(text("Waiting in the lobby").size(16));
            for (peer, name) in &self.knocking {
                let shown = display_name(peer, name);
                list = list.push(
                    column![
                        text(shown).size(15),
                        text(format!("Safety number {}", safety_number_of(peer))).size(13),
                        button(text("Let in").size(14)).on_press(Message::Approve(*peer)),
                    ]
                    .spacing(4),
                );
            }
        }
        list = list.push(text(format!("In the meeting ({})", self.members.len() + 1)).size(16));
        list = list.push(
            column![
                text(format!("{} (you)", self.my_name)).size(15),
                text(format!("Safety number {}", safety_number_of(&self.me))).size(13),
            ]
            .spacing(4),
        );
        for (peer, name) in &self.members {
            let is_verified = verified.contains(peer);
            let shown = display_name(peer, name);
            let pin_label = if self.pinned == Some(*peer) {
                format!("Unpin {shown}")
            } else {
                format!("Pin {shown}")
            };
            let mut actions = row![
                button(text(pin_label).size(13))
                    .style(button::secondary)
                    .on_press(Message::Pin(*peer)),
                button(
                    text(if is_verified {
                        format!("Unverify {shown}")
                    } else {
                        format!("Mark {shown} verified")
                    })
                    .size(13)
                )
                .style(button::secondary)
                .on_press(Message::SetVerified(*peer, !is_verified)),
            ]
            .spacing(6);
            if self.host {
                actions = actions.push(
                    button(text(format!("Remove {shown}")).size(13))
                        .style(button::danger)
                        .on_press(Message::Kick(*peer)),
                );
            }
            let mut title = row![text(shown.clone()).size(15)].spacing(6);
            if is_verified {
                title = title.push(badge::badge("verified".to_owned(), colour::GOOD));
            }
            list = list.push(
                column![
                    title,
                    text(format!("Safety number {}", safety_number_of(peer))).size(13),
                    actions,
                ]
                .spacing(4),
            );
        }
        column![
            text("People").size(20),
            text("Compare a person's safety number with them (in person or by phone) before marking them verified.")
                .size(13),
            scrollable(list).height(Length::Fill),
        ]
        .spacing(10)
        .into()
    }
}

/// The security code, large, with what it means.
fn view_code<'a>(code: &str) -> Element<'a, Message> {
    container(
        column![
            text(format!("Security code: {code}")).size(20),
            text(CODE_EXPLANATION).size(14),
        ]
        .spacing(6),
    )
    .padding(12)
    .style(container::bordered_box)
    .into()
}

fn progress<'a>(headline: &'a str, stage: Option<Stage>) -> Element<'a, Message> {
    let mut steps = Column::new().spacing(6);
    if let Some(stage) = stage {
        for step in [Stage::Finding, Stage::Waiting, Stage::Securing] {
            let marker = if step == stage { "→ " } else { "   " };
            let mut line = text(format!("{marker}{}", step.describe())).size(15);
            if step != stage {
                line = line.color(Color::from_rgb(0.65, 0.68, 0.72));
            }
            steps = steps.push(line);
        }
    }
    container(
        column![
            text(headline).size(24),
            steps,
            button("Cancel")
                .style(button::secondary)
                .on_press(Message::Leave),
        ]
        .spacing(16)
        .align_x(Alignment::Center),
    )
    .center(Length::Fill)
    .into()
}

/// A rounded strip of `background` across the meeting: `content`, and `action` at its end.
fn strip<'a>(
    content: Element<'a, Message>,
    action: Element<'a, Message>,
    background: Color,
) -> Element<'a, Message> {
    container(row![content, action].spacing(8).align_y(Alignment::Center))
        .padding(10)
        .style(move |_theme: &iced::Theme| container::Style {
            background: Some(background.into()),
            text_color: Some(Color::WHITE),
            border: iced::Border {
                radius: 8.0.into(),
                ..iced::Border::default()
            },
            ..container::Style::default()
        })
        .into()
}
