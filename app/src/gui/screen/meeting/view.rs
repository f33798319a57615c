//! Drawing the meeting screen: the joining progress, the meeting itself (header, lobby,
//! security code, notices, tiles, controls) and its side panels (chat, participants).

use std::collections::BTreeSet;

use conclave_core::PeerId;
use iced::widget::{Column, Row, column, container, row, scrollable, text, text_input, tooltip};
use iced::{Alignment, Color, Element, Length};

use super::{
    CHAT_INPUT, CODE_EXPLANATION, Delivery, Message, Panel, Phase, Stage, State, display_name,
    safety_number_of,
};
use crate::gui::widget::badge::{self, colour};
use crate::gui::widget::focus::button;
use crate::gui::widget::tile;

impl State {
    /// Draws the screen.
    pub(crate) fn view<'a>(&'a self, verified: &BTreeSet<PeerId>) -> Element<'a, Message> {
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
            Phase::In => self.view_in(verified),
        }
    }

    /// The meeting itself: header, lobby, code, notices, tiles and controls, with the side
    /// panel.
    fn view_in<'a>(&'a self, verified: &BTreeSet<PeerId>) -> Element<'a, Message> {
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
            .push(self.view_grid(verified))
            .push(self.view_controls());

        let main = body.width(Length::FillPortion(3));
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
                    .width(Length::FillPortion(2))
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

    /// The grid of tiles, wrapping to the width of the window.
    fn view_grid(&self, verified: &BTreeSet<PeerId>) -> Element<'_, Message> {
        let mut grid = Row::new().spacing(12);
        for info in self.tiles(verified) {
            grid = grid.push(tile::tile(&info));
        }
        let grid = grid.wrap().vertical_spacing(12);
        scrollable(grid).height(Length::Fill).into()
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

    /// Mute, share, the panels, copy invite, leave, and the keyboard shortcuts.
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
        .align_y(Alignment::Center);
        column![
            buttons,
            text("Ctrl+D: mute · Ctrl+E: share screen · Ctrl+I: copy invite · Ctrl+Shift+L: leave")
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
            let mut actions = row![
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
