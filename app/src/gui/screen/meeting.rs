//! The meeting: joining progress, the grid of tiles, controls (mute, leave, copy invite),
//! the chat and participants panels, the security code, and notices of membership and key
//! changes.
//!
//! Phases: `Creating` or `Joining { stage }` → `In` → `Ended { reason }`. Core events arrive
//! through [`State::handle_meeting`] and [`State::handle_media`]; user actions through
//! [`State::update`], which returns the [`Action`] the app sends to the core. The state and
//! its updates live here, the drawing in `meeting/view.rs`, the tests in `meeting/tests.rs`.

use std::collections::{BTreeMap, BTreeSet};

use conclave_core::{
    AlertKind, ChatRecord, LeaveReason, MediaEvent, MeetingEvent, MeetingId, PeerId, SafetyNumber,
    VideoKind, public_key_of,
};

use crate::gui::bridge::Redacted;
use crate::gui::screen::home::short_peer;
use crate::gui::widget::tile::{SPEAKING_DBFS, TileInfo};
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

/// How the tiles are laid out when nobody shares a screen and nobody is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Layout {
    /// Everyone the same size.
    #[default]
    Grid,
    /// Whoever speaks, large; the others in a strip.
    Speaker,
}

/// What the stage shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Staged {
    /// A member's shared screen.
    Screen(PeerId),
    /// A member's camera (or avatar).
    Camera(PeerId),
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

impl ChatLine {
    /// A line said in this session (not from the stored history).
    fn said(name: String, text: String, own: Option<(u64, Delivery)>) -> Self {
        Self {
            name,
            text,
            earlier: false,
            own,
        }
    }
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
    /// Our screen share: asked for (`Some`), and its size once it is sent.
    pub(crate) sharing: Option<Option<(u32, u32)>>,
    /// Members whose shared screen we receive.
    pub(crate) sharing_members: BTreeSet<PeerId>,
    /// Our camera: on or off, or `None` when there is none.
    pub(crate) camera: Option<bool>,
    /// We receive the others' video (off: the "no incoming video" mode for weak links).
    pub(crate) incoming_video: bool,
    /// The member pinned to the stage.
    pub(crate) pinned: Option<PeerId>,
    /// The layout when nobody shares and nobody is pinned.
    pub(crate) layout: Layout,
    /// The member who spoke last (loudest above the speaking level).
    pub(crate) active_speaker: Option<PeerId>,
    /// Members who announced that they muted themselves.
    pub(crate) muted_members: BTreeSet<PeerId>,
    pub(crate) show_code: bool,
    /// Recent membership / key notices, newest last.
    pub(crate) notices: Vec<String>,
    /// Our network dropped: the core is reaching the members again.
    pub(crate) reconnecting: bool,
    /// The latest alert about a member (a fork, a refused commit), shown as a red banner
    /// for the rest of the meeting.
    pub(crate) alert: Option<String>,
    /// The member whose refused commit the banner is about: the host gets a one-click
    /// "Remove" next to it.
    pub(crate) alert_member: Option<PeerId>,
}

/// What the user did in the meeting.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    ToggleMute,
    /// Share our screen, or stop sharing it.
    ToggleShare,
    /// Turn our camera on or off.
    ToggleCamera,
    /// Stop or resume receiving the others' video.
    ToggleIncomingVideo,
    /// Pin a member to the stage, or unpin it.
    Pin(PeerId),
    /// Grid or speaker layout.
    ToggleLayout,
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
    /// Share our screen (the primary monitor), or stop.
    Share(bool),
    /// Turn our camera on or off.
    Camera(bool),
    /// Receive the others' video, or not.
    IncomingVideo(bool),
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

    /// With our camera on or off (`None`: there is none).
    pub(crate) fn with_camera(mut self, camera: Option<bool>) -> Self {
        self.camera = camera;
        self
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
            sharing: None,
            sharing_members: BTreeSet::new(),
            camera: None,
            incoming_video: true,
            pinned: None,
            layout: Layout::Grid,
            active_speaker: None,
            muted_members: BTreeSet::new(),
            show_code: false,
            notices: Vec::new(),
            reconnecting: false,
            alert: None,
            alert_member: None,
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
        self.sharing_members
            .retain(|peer| present.contains_key(peer));
        self.members = present;
        self.forget_absent();
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
        // Our lines from before a restart that are on their way again keep their state.
        let (resumed, live): (Vec<ChatLine>, Vec<ChatLine>) =
            live.into_iter().partition(|l| l.earlier && l.own.is_some());
        for line in resumed {
            if let Some((seq, delivery)) = line.own {
                self.resumed_state(seq, delivery, line.text);
            }
        }
        self.chat.extend(live.into_iter().filter(|l| !l.earlier));
    }

    /// One of our lines from before a restart is on its way again: it is in the history
    /// (or will be once the history loads), so it gets a delivery state, not a second line.
    fn resumed_line(&mut self, seq: u64, text: String) {
        self.resumed_state(seq, Delivery::Pending, text);
    }

    fn resumed_state(&mut self, seq: u64, delivery: Delivery, text: String) {
        let name = self.my_name.clone();
        let stored = self
            .chat
            .iter_mut()
            .rev()
            .find(|l| l.earlier && l.own.is_none() && l.name == name && l.text == text);
        match stored {
            Some(line) => line.own = Some((seq, delivery)),
            None => self.chat.push(ChatLine {
                name,
                text,
                earlier: true,
                own: Some((seq, delivery)),
            }),
        }
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
        self.forget_absent();
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
        self.sharing_members.remove(&peer_id);
        self.forget_absent();
        let name = display_name(&peer_id, name);
        let why = match reason {
            LeaveReason::Kicked => "was removed",
            LeaveReason::TimedOut => "lost connection",
            _ => "left",
        };
        self.notice(format!("{name} {why}."));
    }

    /// The pin and the active speaker never name someone who is gone.
    fn forget_absent(&mut self) {
        let members = &self.members;
        self.pinned = self.pinned.filter(|peer| members.contains_key(peer));
        self.active_speaker = self
            .active_speaker
            .filter(|peer| members.contains_key(peer));
    }

    /// What the stage shows, if there is a stage: the pinned member (its shared screen if
    /// it shares one, else its camera); else a shared screen; else, in the speaker layout,
    /// whoever spoke last (or the first member). `None`: the grid.
    pub(crate) fn staged(&self) -> Option<Staged> {
        if let Some(pinned) = self.pinned {
            return Some(if self.sharing_members.contains(&pinned) {
                Staged::Screen(pinned)
            } else {
                Staged::Camera(pinned)
            });
        }
        if let Some(sharing) = self.sharing_members.iter().next() {
            return Some(Staged::Screen(*sharing));
        }
        match self.layout {
            Layout::Grid => None,
            Layout::Speaker => self
                .active_speaker
                .or_else(|| self.members.keys().next().copied())
                .map(Staged::Camera),
        }
    }

    /// Runs `change` and logs what the stage shows when that changed (the GUI system test
    /// waits for it).
    pub(crate) fn logging_stage<T>(&mut self, change: impl FnOnce(&mut Self) -> T) -> T {
        let before = self.staged();
        let result = change(self);
        let after = self.staged();
        if after != before {
            tracing::info!(staged = ?after, "stage");
        }
        result
    }

    /// A joiner waits in our lobby: the participants panel opens to show it.
    fn knocked(&mut self, peer_id: PeerId, name: String) {
        let shown = display_name(&peer_id, &name);
        self.knocking.insert(peer_id, name);
        self.panel = Panel::Participants;
        self.notice(format!("{shown} is waiting in the lobby."));
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
            MeetingEvent::Alert {
                kind,
                peer_id,
                epoch,
            } => {
                let who = self.name_of(&peer_id);
                self.alert_member = matches!(kind, AlertKind::Commit(_))
                    .then_some(peer_id)
                    .filter(|p| self.members.contains_key(p));
                self.alert = Some(match kind {
                    AlertKind::Fork => format!(
                        "Warning: the meeting is split — {who} holds different keys at epoch {epoch}. Someone sent different changes to different members; compare security codes."
                    ),
                    AlertKind::Commit(violation) => format!(
                        "Warning: {who} {} (epoch {epoch}). Its change was refused.",
                        violation.describe()
                    ),
                    _ => format!("Warning: {who} misbehaved at epoch {epoch}."),
                });
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
                self.push_chat(ChatLine::said(name, text, None));
            }
            MeetingEvent::ChatSent {
                seq,
                text,
                resumed: true,
                ..
            } => self.resumed_line(seq, text),
            MeetingEvent::ChatSent { seq, text, .. } => {
                let name = format!("{} (you)", self.my_name);
                self.push_chat(ChatLine::said(name, text, Some((seq, Delivery::Pending))));
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
            MeetingEvent::Knocking { peer_id, name } => self.knocked(peer_id, name),
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
            MeetingEvent::InviteChanged { invite } => {
                self.invite = Some(Redacted(invite.to_uri()));
                self.notice(
                    "A member was removed, so the invite changed: invites sent before no longer work. Copy invite gives the new one."
                        .to_owned(),
                );
            }
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
            Message::ToggleShare => {
                let share = self.sharing.is_none();
                self.sharing = share.then_some(None);
                Some(Action::Share(share))
            }
            Message::ToggleCamera => {
                let on = !self.camera?;
                self.camera = Some(on);
                Some(Action::Camera(on))
            }
            Message::ToggleIncomingVideo => {
                self.incoming_video = !self.incoming_video;
                Some(Action::IncomingVideo(self.incoming_video))
            }
            Message::Pin(peer) => {
                self.pinned = (self.pinned != Some(peer)).then_some(peer);
                tracing::info!(pinned = ?self.pinned, "pin");
                None
            }
            Message::ToggleLayout => {
                self.layout = match self.layout {
                    Layout::Grid => Layout::Speaker,
                    Layout::Speaker => Layout::Grid,
                };
                tracing::info!(layout = ?self.layout, "layout");
                None
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
            peer: None,
            pinned: false,
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
                    peer: Some(*peer),
                    pinned: self.pinned == Some(*peer),
                }
            })
            .collect();
        others.sort_by_key(|t| t.label().to_lowercase());
        tiles.extend(others);
        tiles
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
        // The loudest member speaking is the active speaker; it stays so through silence.
        let speaking = |peer: &PeerId| {
            !self.muted_members.contains(peer)
                && self
                    .media
                    .get(peer)
                    .and_then(|m| m.level_dbfs)
                    .is_some_and(|level| level > SPEAKING_DBFS)
        };
        let loudest = self
            .members
            .keys()
            .filter(|peer| speaking(peer))
            .max_by(|a, b| {
                let level = |peer: &PeerId| self.media.get(peer).and_then(|m| m.level_dbfs);
                level(a)
                    .partial_cmp(&level(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .copied();
        if let Some(loudest) = loudest
            && self
                .active_speaker
                .is_none_or(|current| !speaking(&current))
        {
            self.active_speaker = Some(loudest);
        }
    }

    fn audio_started(&mut self, peer_id: PeerId) {
        let name = self.name_of(&peer_id);
        self.media.entry(peer_id).or_default();
        tracing::debug!(%name, "audio started");
    }

    fn video_started(&mut self, peer_id: PeerId, kind: VideoKind, _width: u32, _height: u32) {
        if kind == VideoKind::Screen && self.sharing_members.insert(peer_id) {
            let name = self.name_of(&peer_id);
            self.notice(format!("{name} is sharing their screen."));
        }
    }

    fn video_stopped(&mut self, peer_id: PeerId, kind: VideoKind) {
        if kind == VideoKind::Screen && self.sharing_members.remove(&peer_id) {
            let name = self.name_of(&peer_id);
            self.notice(format!("{name} stopped sharing their screen."));
        }
    }

    fn screen_shared(&mut self, _monitor: u32, width: u32, height: u32) {
        self.sharing = Some(Some((width, height)));
    }

    fn screen_share_stopped(&mut self, error: Option<String>) {
        self.sharing = None;
        if let Some(error) = error {
            self.notice(format!("Your screen is not shared: {error}"));
        }
    }

    fn warning(&mut self, message: String) {
        self.notice(message);
    }
}

/// A member's display name, or its shortened peer id while it has told us none.
fn display_name(peer: &PeerId, name: &str) -> String {
    if name.is_empty() {
        short_peer(peer)
    } else {
        name.to_owned()
    }
}

mod view;

#[cfg(test)]
mod tests;
