//! The meeting: joining progress, the grid of tiles, controls (mute, leave, copy invite),
//! the chat and participants panels, the security code, and notices of membership and key
//! changes.
//!
//! Phases: `Creating` or `Joining { stage }` → `In` → `Ended { reason }`. Core events arrive
//! through [`State::handle_meeting`] and [`State::handle_media`]; user actions through
//! [`State::update`], which returns the [`Action`] the app sends to the core.

use std::collections::{BTreeMap, BTreeSet};

use conclave_core::{
    ChatRecord, LeaveReason, MediaEvent, MeetingEvent, MeetingId, PeerId, SafetyNumber,
    public_key_of,
};
use iced::widget::{Column, Row, column, container, row, scrollable, text, text_input, tooltip};
use iced::{Alignment, Color, Element, Length};

use crate::gui::bridge::Redacted;
use crate::gui::screen::home::short_peer;
use crate::gui::widget::badge::{self, colour};
use crate::gui::widget::focus::button;
use crate::gui::widget::tile::{self, TileInfo};
use crate::media::{self, Connection, MediaSink, Stats};

/// Id of the chat field.
pub(crate) const CHAT_INPUT: &str = "chat";
/// Lines kept in the chat panel.
pub(crate) const MAX_CHAT_LINES: usize = 500;
/// Notices kept (newest shown first).
pub(crate) const MAX_NOTICES: usize = 4;
/// What equal security codes mean, in one line.
pub(crate) const CODE_EXPLANATION: &str = "If everyone sees the same code, nobody is listening in the middle. It changes whenever someone joins or leaves.";

/// Where the joining stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Looking the meeting up and asking its members.
    Finding,
    /// Lobby: the host must let us in.
    Waiting,
    /// A member answered; the group keys are being set up.
    Securing,
}

impl Stage {
    /// The words shown.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Stage::Finding => "Finding members…",
            Stage::Waiting => "Waiting for the host to let you in…",
            Stage::Securing => "Securing the meeting…",
        }
    }
}

/// The meeting's phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Creating,
    Joining(Stage),
    In,
    /// The meeting is over for us; one sentence why.
    Ended(String),
}

/// Which side panel is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Panel {
    #[default]
    Chat,
    Participants,
    Hidden,
}

/// Media state of one member.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Media {
    pub(crate) state: String,
    pub(crate) path: Option<String>,
    pub(crate) rtt_ms: Option<f64>,
    pub(crate) level_dbfs: Option<f32>,
}

/// One chat line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatLine {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) earlier: bool,
    /// Our own line of this session: its number and how far it got.
    pub(crate) own: Option<(u64, Delivery)>,
}

/// How far one of our lines got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// On its way.
    Pending,
    /// Every member has it.
    Delivered,
    /// It did not reach this many members; it can be sent again.
    Failed(usize),
}

/// Meeting screen state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) me: PeerId,
    pub(crate) my_name: String,
    pub(crate) host: bool,
    /// Our invite (holds the secret: redacted in `Debug`).
    pub(crate) invite: Option<Redacted<String>>,
    pub(crate) meeting_id: Option<MeetingId>,
    pub(crate) epoch: u64,
    /// The epoch we arrived at: members reported at that epoch were already there.
    pub(crate) joined_epoch: u64,
    pub(crate) security_code: Option<String>,
    /// Members other than us, by peer id, with their names.
    pub(crate) members: BTreeMap<PeerId, String>,
    pub(crate) media: BTreeMap<PeerId, Media>,
    /// Joiners waiting in the lobby (host).
    pub(crate) knocking: BTreeMap<PeerId, String>,
    pub(crate) chat: Vec<ChatLine>,
    pub(crate) chat_input: String,
    pub(crate) unread: usize,
    pub(crate) panel: Panel,
    pub(crate) muted: bool,
    /// Members who announced that they muted themselves.
    pub(crate) muted_members: BTreeSet<PeerId>,
    pub(crate) show_code: bool,
    /// Recent membership / key notices, newest last.
    pub(crate) notices: Vec<String>,
    /// Our network dropped: the core is reaching the members again.
    pub(crate) reconnecting: bool,
}

/// What the user did in the meeting.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    ToggleMute,
    Leave,
    CopyInvite,
    ShowPanel(Panel),
    ChatChanged(String),
    SendChat,
    ResendChat(u64),
    Kick(PeerId),
    Approve(PeerId),
    SetVerified(PeerId, bool),
    ToggleCode,
    DismissNotices,
    BackHome,
}

/// What the app must do for the meeting screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Mute(bool),
    Leave,
    Chat(String),
    ResendChat(u64),
    Kick(PeerId),
    Approve(PeerId),
    SetVerified(PeerId, bool),
    Copy(String),
    Home,
    LoadHistory(MeetingId),
}

/// The safety number of a peer (derived from the key in its peer id).
pub(crate) fn safety_number_of(peer: &PeerId) -> String {
    public_key_of(peer)
        .map(|key| SafetyNumber::of(&key).to_string())
        .unwrap_or_else(|| "unavailable".to_owned())
}

impl State {
    /// A meeting we are creating (as host).
    pub(crate) fn creating(me: PeerId, my_name: String) -> Self {
        Self::new(Phase::Creating, me, my_name, true)
    }

    /// A meeting we are joining.
    pub(crate) fn joining(me: PeerId, my_name: String, invite: String) -> Self {
        let mut state = Self::new(Phase::Joining(Stage::Finding), me, my_name, false);
        state.invite = Some(Redacted(invite));
        state
    }

    fn new(phase: Phase, me: PeerId, my_name: String, host: bool) -> Self {
        Self {
            phase,
            me,
            my_name,
            host,
            invite: None,
            meeting_id: None,
            epoch: 0,
            joined_epoch: 0,
            security_code: None,
            members: BTreeMap::new(),
            media: BTreeMap::new(),
            knocking: BTreeMap::new(),
            chat: Vec::new(),
            chat_input: String::new(),
            unread: 0,
            panel: Panel::Chat,
            muted: false,
            muted_members: BTreeSet::new(),
            show_code: false,
            notices: Vec::new(),
            reconnecting: false,
        }
    }

    fn notice(&mut self, text: String) {
        self.notices.push(text);
        if self.notices.len() > MAX_NOTICES {
            self.notices.remove(0);
        }
    }

    fn push_chat(&mut self, line: ChatLine) {
        if !line.earlier && self.panel != Panel::Chat {
            self.unread += 1;
        }
        self.chat.push(line);
        if self.chat.len() > MAX_CHAT_LINES {
            self.chat.remove(0);
        }
    }

    /// After a lag (events the core dropped because we fell behind): the roster and the
    /// chat as the core has them now. Lines stored before we joined stay marked earlier;
    /// the delivery marks of our own lines are kept where the line is still shown.
    pub(crate) fn resync(&mut self, members: Vec<(PeerId, String)>, chat: Vec<ChatRecord>) {
        let present: BTreeMap<PeerId, String> = members.into_iter().collect();
        self.media.retain(|peer, _| present.contains_key(peer));
        self.muted_members.retain(|peer| present.contains_key(peer));
        self.members = present;
        let earlier = self.chat.iter().filter(|l| l.earlier).count();
        let own: Vec<(String, (u64, Delivery))> = self
            .chat
            .iter()
            .filter_map(|l| l.own.map(|o| (l.text.clone(), o)))
            .collect();
        let me = self.me.to_base58();
        self.chat = chat
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                let mine = line.from == me;
                ChatLine {
                    own: mine
                        .then(|| own.iter().find(|(t, _)| *t == line.text).map(|(_, o)| *o))
                        .flatten(),
                    name: if mine && i >= earlier {
                        format!("{} (you)", line.name)
                    } else {
                        line.name
                    },
                    text: line.text,
                    earlier: i < earlier,
                }
            })
            .collect();
        if self.chat.len() > MAX_CHAT_LINES {
            let excess = self.chat.len() - MAX_CHAT_LINES;
            self.chat.drain(..excess);
        }
        self.notice(
            "Caught up with the meeting (some updates arrived too fast to show).".to_owned(),
        );
    }

    /// Records how far our line `seq` got.
    fn set_delivery(&mut self, seq: u64, delivery: Delivery) {
        if let Some(line) = self
            .chat
            .iter_mut()
            .rev()
            .find(|l| l.own.is_some_and(|(s, _)| s == seq))
        {
            line.own = Some((seq, delivery));
        }
    }

    fn name_of(&self, peer: &PeerId) -> String {
        display_name(peer, self.members.get(peer).map_or("", String::as_str))
    }

    /// Opens the chat panel (and marks everything read).
    pub(crate) fn show_chat(&mut self) {
        self.panel = Panel::Chat;
        self.unread = 0;
    }

    /// Our invite was created.
    pub(crate) fn created(&mut self, invite: Redacted<String>) {
        self.invite = Some(invite);
    }

    /// Stored lines said before we (re)joined.
    pub(crate) fn history(&mut self, lines: Vec<ChatRecord>) {
        let earlier: Vec<ChatLine> = lines
            .into_iter()
            .map(|line| ChatLine {
                name: line.name,
                text: line.text,
                earlier: true,
                own: None,
            })
            .collect();
        let live = std::mem::take(&mut self.chat);
        self.chat = earlier;
        self.chat.extend(live.into_iter().filter(|l| !l.earlier));
    }

    /// We are in (or back in after our network dropped); loads the history the first time.
    fn joined(&mut self, meeting_id: MeetingId, epoch: u64, code: String) -> Option<Action> {
        // Back in after our network dropped (a new leaf, same meeting): the chat on screen
        // is already complete.
        let rejoined = self.phase == Phase::In && self.meeting_id == Some(meeting_id);
        self.phase = Phase::In;
        self.meeting_id = Some(meeting_id);
        self.epoch = epoch;
        self.joined_epoch = epoch;
        self.security_code = Some(code);
        (!rejoined).then_some(Action::LoadHistory(meeting_id))
    }

    /// Keys rotated: the roster follows the new epoch's members, and a change is announced.
    fn new_epoch(&mut self, epoch: u64, code: String, members: Vec<PeerId>) {
        let changed = self.epoch != 0 && epoch != self.epoch;
        self.epoch = epoch;
        let present: BTreeSet<PeerId> = members.into_iter().collect();
        self.members.retain(|peer, _| present.contains(peer));
        self.muted_members.retain(|peer| present.contains(peer));
        for peer in present {
            if peer != self.me {
                self.members.entry(peer).or_default();
            }
        }
        if changed {
            self.notice(format!(
                "Membership changed: new keys are in use (the security code is now {code})."
            ));
        }
        self.security_code = Some(code);
    }

    /// A member is in; announced if it arrived after us.
    fn member_joined(&mut self, peer_id: PeerId, name: String) {
        if let Phase::Joining(_) = self.phase {
            self.phase = Phase::Joining(Stage::Securing);
        }
        if peer_id == self.me {
            return;
        }
        self.knocking.remove(&peer_id);
        let shown = display_name(&peer_id, &name);
        let known = self.members.insert(peer_id, name);
        let arrived_after_us = self.epoch != self.joined_epoch;
        if known.is_none_or(|n| n.is_empty()) && self.phase == Phase::In && arrived_after_us {
            self.notice(format!("{shown} joined."));
        }
    }

    /// A member is gone, with everything we showed of it; announced with the reason.
    fn member_left(&mut self, peer_id: PeerId, name: &str, reason: LeaveReason) {
        self.members.remove(&peer_id);
        self.media.remove(&peer_id);
        self.muted_members.remove(&peer_id);
        let name = display_name(&peer_id, name);
        let why = match reason {
            LeaveReason::Kicked => "was removed",
            LeaveReason::TimedOut => "lost connection",
            _ => "left",
        };
        self.notice(format!("{name} {why}."));
    }

    /// The meeting is over for us, for `why`.
    fn ended(&mut self, why: &str) {
        self.phase = Phase::Ended(why.to_owned());
    }

    /// Applies a meeting event; returns what the app must do next.
    pub(crate) fn handle_meeting(&mut self, event: MeetingEvent) -> Option<Action> {
        match event {
            MeetingEvent::Joined {
                meeting_id,
                epoch,
                security_code,
            } => return self.joined(meeting_id, epoch, security_code.to_string()),
            MeetingEvent::Reconnecting => {
                self.reconnecting = true;
                self.notice("Your connection dropped: reconnecting…".to_owned());
            }
            MeetingEvent::Reconnected => {
                if std::mem::take(&mut self.reconnecting) {
                    self.notice("Reconnected.".to_owned());
                }
            }
            MeetingEvent::Epoch {
                epoch,
                security_code,
                members,
            } => self.new_epoch(epoch, security_code.to_string(), members),
            MeetingEvent::MemberJoined { peer_id, name } => self.member_joined(peer_id, name),
            MeetingEvent::MemberLeft {
                peer_id,
                name,
                reason,
            } => self.member_left(peer_id, &name, reason),
            MeetingEvent::Chat {
                from, name, text, ..
            } => {
                let name = if from == self.me {
                    format!("{name} (you)")
                } else {
                    name
                };
                self.push_chat(ChatLine {
                    name,
                    text,
                    earlier: false,
                    own: None,
                });
            }
            MeetingEvent::ChatSent { seq, text, .. } => {
                self.push_chat(ChatLine {
                    name: format!("{} (you)", self.my_name),
                    text,
                    earlier: false,
                    own: Some((seq, Delivery::Pending)),
                });
            }
            MeetingEvent::ChatDelivered { seq } => self.set_delivery(seq, Delivery::Delivered),
            MeetingEvent::ChatFailed { seq, peers } => {
                self.set_delivery(seq, Delivery::Failed(peers.len()));
            }
            MeetingEvent::MemberMuted { peer_id, muted } => {
                if muted {
                    self.muted_members.insert(peer_id);
                } else {
                    self.muted_members.remove(&peer_id);
                }
            }
            MeetingEvent::Knocking { peer_id, name } => {
                let shown = display_name(&peer_id, &name);
                self.knocking.insert(peer_id, name);
                self.panel = Panel::Participants;
                self.notice(format!("{shown} is waiting in the lobby."));
            }
            MeetingEvent::LobbyLeft { peer_id, name } => {
                if self.knocking.remove(&peer_id).is_some() {
                    let shown = display_name(&peer_id, &name);
                    self.notice(format!("{shown} left the lobby."));
                }
            }
            MeetingEvent::Waiting => self.phase = Phase::Joining(Stage::Waiting),
            MeetingEvent::JoinRefused => self.ended(
                "The meeting refused this invite: its secret is wrong or it was altered.",
            ),
            MeetingEvent::JoinTimedOut => self.ended(
                "Nobody in this meeting could be reached (or nobody let you in). Check the invite, your network or your relay, and try again.",
            ),
            MeetingEvent::Removed { reason } => self.ended(match reason {
                LeaveReason::Kicked => "The host removed you from the meeting.",
                _ => "You are no longer in the meeting.",
            }),
            MeetingEvent::Left => return Some(Action::Home),
            other => tracing::debug!(?other, "meeting event not shown"),
        }
        None
    }

    /// Applies a media event.
    pub(crate) fn handle_media(&mut self, event: MediaEvent) {
        media::dispatch(event, self);
    }

    /// Handles a user action.
    pub(crate) fn update(&mut self, message: Message) -> Option<Action> {
        match message {
            Message::ToggleMute => {
                self.muted = !self.muted;
                Some(Action::Mute(self.muted))
            }
            Message::Leave => Some(Action::Leave),
            Message::CopyInvite => self.invite.clone().map(|invite| Action::Copy(invite.0)),
            Message::ShowPanel(panel) => {
                self.panel = if self.panel == panel {
                    Panel::Hidden
                } else {
                    panel
                };
                if self.panel == Panel::Chat {
                    self.unread = 0;
                }
                None
            }
            Message::ChatChanged(text) => {
                self.chat_input = text.chars().take(2000).collect();
                None
            }
            Message::SendChat => {
                let text = self.chat_input.trim().to_owned();
                if text.is_empty() || self.phase != Phase::In {
                    return None;
                }
                self.chat_input.clear();
                // The core reports the line back (`ChatSent`) once it is on its way.
                Some(Action::Chat(text))
            }
            Message::ResendChat(seq) => {
                self.set_delivery(seq, Delivery::Pending);
                Some(Action::ResendChat(seq))
            }
            Message::Kick(peer) => Some(Action::Kick(peer)),
            Message::Approve(peer) => {
                self.knocking.remove(&peer);
                Some(Action::Approve(peer))
            }
            Message::SetVerified(peer, verified) => Some(Action::SetVerified(peer, verified)),
            Message::ToggleCode => {
                self.show_code = !self.show_code;
                None
            }
            Message::DismissNotices => {
                self.notices.clear();
                None
            }
            Message::BackHome => Some(Action::Home),
        }
    }

    /// Tiles in display order: us first, then members by name.
    pub(crate) fn tiles(&self, verified: &BTreeSet<PeerId>) -> Vec<TileInfo> {
        let mut tiles = vec![TileInfo {
            name: self.my_name.clone(),
            short_id: short_peer(&self.me),
            is_me: true,
            muted: Some(self.muted),
            verified: false,
            level_dbfs: None,
            connection: None,
        }];
        let mut others: Vec<TileInfo> = self
            .members
            .iter()
            .map(|(peer, name)| {
                let media = self.media.get(peer);
                TileInfo {
                    name: name.clone(),
                    short_id: short_peer(peer),
                    is_me: false,
                    muted: Some(self.muted_members.contains(peer)),
                    verified: verified.contains(peer),
                    level_dbfs: media.and_then(|m| m.level_dbfs),
                    connection: media.map(|m| (m.state.clone(), m.path.clone(), m.rtt_ms)),
                }
            })
            .collect();
        others.sort_by_key(|t| t.label().to_lowercase());
        tiles.extend(others);
        tiles
    }

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
        container(
            row![
                notices.width(Length::Fill),
                button(text("Dismiss").size(13))
                    .style(button::secondary)
                    .on_press(Message::DismissNotices),
            ]
            .spacing(8)
            .align_y(Alignment::Center),
        )
        .padding(10)
        .style(|_theme: &iced::Theme| container::Style {
            background: Some(colour::NEUTRAL.into()),
            text_color: Some(Color::WHITE),
            border: iced::Border {
                radius: 8.0.into(),
                ..iced::Border::default()
            },
            ..container::Style::default()
        })
        .into()
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

    /// Mute, the panels, copy invite, leave, and the keyboard shortcuts.
    fn view_controls(&self) -> Element<'_, Message> {
        let chat_label = if self.unread > 0 {
            format!("Chat ({} new)", self.unread)
        } else {
            "Chat".to_owned()
        };
        row![
            button(if self.muted { "Unmute" } else { "Mute" })
                .style(if self.muted {
                    button::danger
                } else {
                    button::primary
                })
                .on_press(Message::ToggleMute),
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
            text("Ctrl+D: mute · Ctrl+I: copy invite · Ctrl+Shift+L: leave").size(13),
        ]
        .spacing(10)
        .align_y(Alignment::Center)
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

impl MediaSink for State {
    fn connection(&mut self, connection: Connection) {
        let was_connected = self
            .media
            .get(&connection.peer_id)
            .is_some_and(|m| m.state == "connected");
        if connection.is_lost() && was_connected {
            let name = self.name_of(&connection.peer_id);
            self.notice(format!(
                "Lost the audio connection to {name}; trying to repair it."
            ));
        }
        let media = self.media.entry(connection.peer_id).or_default();
        media.state = connection.state;
        media.path = Some(connection.path);
        if connection.rtt_ms.is_some() {
            media.rtt_ms = connection.rtt_ms;
        }
    }

    fn stats(&mut self, stats: Stats) {
        let media = self.media.entry(stats.peer_id).or_default();
        media.level_dbfs = Some(stats.level_dbfs);
        if stats.rtt_ms.is_some() {
            media.rtt_ms = stats.rtt_ms;
        }
    }

    fn audio_started(&mut self, peer_id: PeerId) {
        let name = self.name_of(&peer_id);
        self.media.entry(peer_id).or_default();
        tracing::debug!(%name, "audio started");
    }

    fn warning(&mut self, message: String) {
        self.notice(message);
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

/// A member's display name, or its shortened peer id while it has told us none.
fn display_name(peer: &PeerId, name: &str) -> String {
    if name.is_empty() {
        short_peer(peer)
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_core::SecurityCode;
    use iced_test::{selector, simulator};

    /// Whether the view of `state` shows `text`.
    fn shows(state: &State, verified: &BTreeSet<PeerId>, text: impl Into<String>) -> bool {
        simulator(state.view(verified)).find(text.into()).is_ok()
    }

    /// Clicks the widget showing `text` in the view of `state`; returns the resulting
    /// actions.
    fn click(
        state: &mut State,
        verified: &BTreeSet<PeerId>,
        text: impl Into<String>,
    ) -> Vec<Action> {
        let text = text.into();
        interact(state, verified, |ui| {
            ui.click(text).unwrap();
        })
    }

    /// A meeting being joined with a (fake) invite.
    fn joining() -> State {
        State::joining(PeerId::random(), "Ada".into(), "conclave:x".into())
    }

    fn code(n: u8) -> SecurityCode {
        SecurityCode::from_authenticator(&[n; 32])
    }

    fn interact(
        state: &mut State,
        verified: &BTreeSet<PeerId>,
        interact: impl FnOnce(&mut iced_test::Simulator<'_, Message>),
    ) -> Vec<Action> {
        let messages: Vec<Message> = {
            let mut ui = simulator(state.view(verified));
            interact(&mut ui);
            ui.into_messages().collect()
        };
        messages
            .into_iter()
            .filter_map(|m| state.update(m))
            .collect()
    }

    /// A joined meeting with Bob in it.
    fn in_meeting(host: bool) -> (State, PeerId) {
        let me = PeerId::random();
        let bob = PeerId::random();
        let mut state = if host {
            State::creating(me, "Ada".into())
        } else {
            State::joining(me, "Ada".into(), "conclave:v1?...".into())
        };
        let id = MeetingId([7; 16]);
        let action = state.handle_meeting(MeetingEvent::Joined {
            meeting_id: id,
            epoch: 1,
            security_code: code(1),
        });
        assert_eq!(action, Some(Action::LoadHistory(id)));
        state.handle_meeting(MeetingEvent::MemberJoined {
            peer_id: bob,
            name: "Bob".into(),
        });
        (state, bob)
    }

    #[test]
    fn joining_shows_progress_and_can_be_cancelled() {
        let verified = BTreeSet::new();
        let mut state = joining();
        assert!(shows(&state, &verified, "Finding members…"));
        state.handle_meeting(MeetingEvent::Waiting);
        assert!(shows(
            &state,
            &verified,
            "Waiting for the host to let you in…"
        ));
        let actions = click(&mut state, &verified, "Cancel");
        assert_eq!(actions, vec![Action::Leave]);
    }

    #[test]
    fn a_dropped_network_shows_reconnecting_until_back_in() {
        let verified = BTreeSet::new();
        let (mut state, bob) = in_meeting(false);
        state.handle_meeting(MeetingEvent::Reconnecting);
        assert!(shows(&state, &verified, "Connection lost — reconnecting…"));
        // Back in with a new leaf: the same meeting, the chat on screen is kept as it is.
        let id = MeetingId([7; 16]);
        let action = state.handle_meeting(MeetingEvent::Joined {
            meeting_id: id,
            epoch: 3,
            security_code: code(3),
        });
        assert_eq!(action, None, "the history was loaded again");
        state.handle_meeting(MeetingEvent::Reconnected);
        assert!(!shows(&state, &verified, "Connection lost — reconnecting…"));
        assert!(state.members.contains_key(&bob));
        assert_eq!(state.phase, Phase::In);
    }

    #[test]
    fn after_a_lag_the_roster_and_chat_are_read_again() {
        let verified = BTreeSet::new();
        let (mut state, bob) = in_meeting(false);
        let carol = PeerId::random();
        let record = |from: &PeerId, name: &str, text: &str| ChatRecord {
            from: from.to_base58(),
            name: name.into(),
            text: text.into(),
            unix_ms: 1,
        };
        // Bob left and Carol came while the window was not reading; two lines were missed.
        state.resync(
            vec![(carol, "Carol".into())],
            vec![
                record(&bob, "Bob", "bye all"),
                record(&carol, "Carol", "hello"),
            ],
        );
        assert!(!state.members.contains_key(&bob));
        assert_eq!(state.members.get(&carol).map(String::as_str), Some("Carol"));
        assert!(shows(&state, &verified, "Bob: bye all"));
        assert!(shows(&state, &verified, "Carol: hello"));
    }

    #[test]
    fn a_refused_join_says_why() {
        let verified = BTreeSet::new();
        let mut state = joining();
        state.handle_meeting(MeetingEvent::JoinRefused);
        assert!(shows(
            &state,
            &verified,
            "The meeting refused this invite: its secret is wrong or it was altered."
        ));
        let actions = click(&mut state, &verified, "Back to home");
        assert_eq!(actions, vec![Action::Home]);
    }

    #[test]
    fn tiles_badges_and_security_code() {
        let (mut state, bob) = in_meeting(false);
        state.handle_media(MediaEvent::Connection {
            peer_id: bob,
            state: "connected".into(),
            path: "relayed",
            rtt_ms: Some(42.0),
            ice_restarts: 0,
        });
        state.handle_media(MediaEvent::Stats {
            peer_id: bob,
            rx_frames: 10,
            lost_frames: 0,
            recovered_frames: 0,
            decrypt_failures: 0,
            jitter_ms: 1.0,
            level_dbfs: -20.0,
            rtt_ms: None,
        });
        let verified: BTreeSet<PeerId> = [bob].into();
        let mut ui = simulator(state.view(&verified));
        assert!(state.notices.is_empty());
        assert!(ui.find("Ada (you)").is_ok());
        assert!(ui.find("Bob").is_ok());
        assert!(ui.find("relayed · 42 ms").is_ok());
        assert!(ui.find("speaking").is_ok());
        assert!(ui.find("verified").is_ok());
        assert!(ui.find(format!("Security code {}", code(1))).is_ok());
        drop(ui);
        // The code's explanation is one click away.
        let actions = click(&mut state, &verified, format!("Security code {}", code(1)));
        assert!(actions.is_empty());
        assert!(shows(&state, &verified, CODE_EXPLANATION));
        // A broken media path is announced (the badge says it too).
        state.handle_media(MediaEvent::Connection {
            peer_id: bob,
            state: "failed".into(),
            path: "relayed",
            rtt_ms: None,
            ice_restarts: 0,
        });
        let mut ui = simulator(state.view(&verified));
        assert!(
            ui.find("Lost the audio connection to Bob; trying to repair it.")
                .is_ok()
        );
        assert!(ui.find("no media connection").is_ok());
    }

    #[test]
    fn mute_toggles_and_shows() {
        let (mut state, _) = in_meeting(false);
        let verified = BTreeSet::new();
        let actions = click(&mut state, &verified, "Mute");
        assert_eq!(actions, vec![Action::Mute(true)]);
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("Unmute").is_ok());
        assert!(ui.find("muted").is_ok());
    }

    #[test]
    fn another_members_mute_shows_on_their_tile() {
        let (mut state, bob) = in_meeting(false);
        let verified = BTreeSet::new();
        state.handle_media(MediaEvent::Stats {
            peer_id: bob,
            rx_frames: 10,
            lost_frames: 0,
            recovered_frames: 0,
            decrypt_failures: 0,
            jitter_ms: 1.0,
            level_dbfs: -20.0,
            rtt_ms: None,
        });
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("muted").is_err(), "nobody is muted yet");
        assert!(ui.find("speaking").is_ok());
        drop(ui);
        state.handle_meeting(MeetingEvent::MemberMuted {
            peer_id: bob,
            muted: true,
        });
        let tiles = state.tiles(&verified);
        let bob_tile = tiles.iter().find(|t| t.name == "Bob").unwrap();
        assert_eq!(bob_tile.muted, Some(true));
        assert_eq!(tiles[0].muted, Some(false), "we are not muted");
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("muted").is_ok());
        assert!(
            ui.find("speaking").is_err(),
            "a muted member is not speaking"
        );
        assert!(ui.find("Mute").is_ok(), "our own button is unchanged");
        drop(ui);
        state.handle_meeting(MeetingEvent::MemberMuted {
            peer_id: bob,
            muted: false,
        });
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("muted").is_err());
        drop(ui);
        // A member who leaves takes the state along.
        state.handle_meeting(MeetingEvent::MemberMuted {
            peer_id: bob,
            muted: true,
        });
        state.handle_meeting(MeetingEvent::MemberLeft {
            peer_id: bob,
            name: "Bob".into(),
            reason: LeaveReason::Left,
        });
        assert!(state.muted_members.is_empty());
    }

    #[test]
    fn chat_sends_and_counts_unread() {
        let (mut state, bob) = in_meeting(false);
        let verified = BTreeSet::new();
        let actions = interact(&mut state, &verified, |ui| {
            ui.click(selector::id(CHAT_INPUT)).unwrap();
            ui.typewrite("hello all");
        });
        assert!(actions.is_empty());
        let actions = click(&mut state, &verified, "Send");
        assert_eq!(actions, vec![Action::Chat("hello all".into())]);
        assert!(state.chat_input.is_empty());
        // The core reports it on its way, then delivered; a failed line offers a resend.
        state.handle_meeting(MeetingEvent::ChatSent {
            seq: 1,
            text: "hello all".into(),
            unix_ms: 1,
        });
        assert!(shows(&state, &verified, "Ada (you): hello all"));
        assert!(shows(&state, &verified, "sending…"));
        state.handle_meeting(MeetingEvent::ChatDelivered { seq: 1 });
        assert!(shows(&state, &verified, "delivered ✓"));
        state.handle_meeting(MeetingEvent::ChatSent {
            seq: 2,
            text: "are you there".into(),
            unix_ms: 2,
        });
        state.handle_meeting(MeetingEvent::ChatFailed {
            seq: 2,
            peers: vec![bob],
        });
        assert!(shows(&state, &verified, "not delivered to 1 member(s)"));
        let actions = click(&mut state, &verified, "Resend");
        assert_eq!(actions, vec![Action::ResendChat(2)]);
        assert!(shows(&state, &verified, "sending…"));
        // Hide the chat, receive a line: it counts as unread.
        click(&mut state, &verified, "Chat");
        assert_eq!(state.panel, Panel::Hidden);
        state.handle_meeting(MeetingEvent::Chat {
            from: bob,
            name: "Bob".into(),
            text: "hi Ada".into(),
            unix_ms: 1,
        });
        assert!(shows(&state, &verified, "Chat (1 new)"));
        click(&mut state, &verified, "Chat (1 new)");
        assert_eq!(state.unread, 0);
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("Bob: hi Ada").is_ok());
    }

    #[test]
    fn participants_verify_and_host_controls() {
        let (mut state, bob) = in_meeting(true);
        let verified = BTreeSet::new();
        click(&mut state, &verified, "Participants");
        assert!(shows(
            &state,
            &verified,
            format!("Safety number {}", safety_number_of(&bob))
        ));
        let actions = click(&mut state, &verified, "Mark Bob verified");
        assert_eq!(actions, vec![Action::SetVerified(bob, true)]);
        let actions = click(&mut state, &verified, "Remove Bob");
        assert_eq!(actions, vec![Action::Kick(bob)]);
        // A joiner knocks: the host lets them in.
        let carol = PeerId::random();
        state.handle_meeting(MeetingEvent::Knocking {
            peer_id: carol,
            name: "Carol".into(),
        });
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("1 waiting in the lobby").is_ok());
        assert!(ui.find("Let Carol in").is_ok());
        drop(ui);
        let actions = click(&mut state, &verified, "Let in");
        assert_eq!(actions, vec![Action::Approve(carol)]);
    }

    #[test]
    fn a_joiner_that_leaves_the_lobby_disappears_from_it() {
        let (mut state, _bob) = in_meeting(true);
        let verified = BTreeSet::new();
        let (carol, dave) = (PeerId::random(), PeerId::random());
        for (peer_id, name) in [(carol, "Carol"), (dave, "Dave")] {
            state.handle_meeting(MeetingEvent::Knocking {
                peer_id,
                name: name.into(),
            });
        }
        assert!(shows(&state, &verified, "2 waiting in the lobby"));
        state.handle_meeting(MeetingEvent::LobbyLeft {
            peer_id: carol,
            name: "Carol".into(),
        });
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("1 waiting in the lobby").is_ok());
        assert!(ui.find("Let Carol in").is_err(), "Carol is gone");
        assert!(ui.find("Let Dave in").is_ok());
        assert!(ui.find("Carol left the lobby.").is_ok());
    }

    #[test]
    fn membership_changes_and_key_rotation_are_announced() {
        let (mut state, bob) = in_meeting(false);
        let verified = BTreeSet::new();
        state.handle_meeting(MeetingEvent::Epoch {
            epoch: 2,
            security_code: code(2),
            members: vec![state.me],
        });
        state.handle_meeting(MeetingEvent::MemberLeft {
            peer_id: bob,
            name: "Bob".into(),
            reason: LeaveReason::TimedOut,
        });
        let mut ui = simulator(state.view(&verified));
        assert!(ui.find("Bob lost connection.").is_ok());
        assert!(
            ui.find(format!(
                "Membership changed: new keys are in use (the security code is now {}).",
                code(2)
            ))
            .is_ok()
        );
        assert!(ui.find(format!("Security code {}", code(2))).is_ok());
        drop(ui);
        assert_eq!(state.tiles(&verified).len(), 1);
        // Someone new arrives after us: announced.
        state.handle_meeting(MeetingEvent::MemberJoined {
            peer_id: PeerId::random(),
            name: "Dan".into(),
        });
        assert!(state.notices.iter().any(|n| n == "Dan joined."));
        assert!(
            !state.notices.iter().any(|n| n == "Bob joined."),
            "members already there when we arrived are not announced"
        );
        let actions = click(&mut state, &verified, "Leave");
        assert_eq!(actions, vec![Action::Leave]);
    }
}
