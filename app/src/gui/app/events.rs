//! What the bridge and the core report, applied to the app: the client started or
//! failed, a request failed or finished, meeting and media events for the meeting screen.

use conclave_core::{Event as CoreEvent, MeetingEvent};
use iced::Task;
use tracing::{info, warn};

use crate::gui::bridge::{self, Request};
use crate::gui::screen::{home, meeting};

use super::{App, Banner, Message};

impl App {
    /// What the bridge reports: the client started or failed, a request finished.
    pub(super) fn on_bridge(&mut self, event: bridge::Event) -> Task<Message> {
        match event {
            bridge::Event::Ready(handle) => {
                self.handle = Some(handle);
                let config = self.config();
                self.request(Request::Start(Box::new(config)));
            }
            bridge::Event::Started {
                me,
                verified,
                recent,
            } => {
                info!(peer_id = %me.peer_id, "identity ready");
                if self.home.name.is_empty() || self.me.is_some() {
                    self.home.name = me.name.clone();
                }
                self.me = Some(me);
                self.verified = verified.into_iter().collect();
                // The core starts with the camera on: off if the user turned it off.
                if self.camera() == Some(false) {
                    self.request(Request::Camera(false));
                }
                self.home.recent = recent;
                if self.banner.as_ref().is_some_and(|b| b.error) {
                    self.banner = None;
                }
            }
            bridge::Event::StartFailed(message) => self.show_error(message),
            bridge::Event::Core(event) => return self.on_core(event),
            bridge::Event::Created(invite) => {
                if let Some(meeting) = self.meeting.as_mut() {
                    meeting.created(invite);
                }
            }
            bridge::Event::Failed { what, message } => self.request_failed(what, &message),
            bridge::Event::Recent(recent) => self.home.recent = recent,
            bridge::Event::History(meeting_id, lines) => match self.meeting.as_mut() {
                Some(meeting) if meeting.meeting_id == Some(meeting_id) => {
                    meeting.history(lines);
                }
                _ => self.home.history = Some((meeting_id, lines)),
            },
            bridge::Event::Resynced {
                meeting,
                members,
                chat,
            } => {
                if let Some(state) = self.meeting.as_mut()
                    && state.meeting_id == Some(meeting)
                {
                    state.resync(members, chat);
                }
            }
            bridge::Event::Verified(verified) => {
                self.verified = verified.into_iter().collect();
            }
            bridge::Event::LeaveDone => {
                if self.closing {
                    info!("goodbye delivered; closing");
                    return iced::exit();
                }
            }
            bridge::Event::Exported(path) => self.backup_done(format!(
                "Identity saved to {}. Keep the file and its passphrase apart.",
                path.display()
            )),
            bridge::Event::Imported(peer) => self.backup_done(format!(
                "Identity restored: you are now {}.",
                home::short_peer(&peer)
            )),
            bridge::Event::Forgotten(meeting) => {
                self.home
                    .recent
                    .retain(|recent| recent.meeting_id != meeting);
                if self
                    .home
                    .history
                    .as_ref()
                    .is_some_and(|(shown, _)| *shown == meeting)
                {
                    self.home.history = None;
                }
                self.banner = Some(Banner {
                    text: format!(
                        "The chat history and invite of meeting {} were deleted.",
                        meeting.short()
                    ),
                    error: false,
                });
            }
            bridge::Event::Stopped => {
                self.show_error(
                    "Conclave's network task stopped. Restart the app to reconnect.".to_owned(),
                );
            }
        }
        Task::none()
    }

    /// A request to the core failed: the meeting being created ends, a backup says why,
    /// anything else is a banner.
    pub(super) fn request_failed(&mut self, what: &'static str, message: &str) {
        if let Some(meeting) = self.meeting.as_mut()
            && matches!(meeting.phase, meeting::Phase::Creating)
        {
            meeting.phase =
                meeting::Phase::Ended(format!("The meeting could not be created: {message}."));
        }
        if matches!(what, "export the identity" | "restore") {
            self.settings.busy = false;
            self.settings.backup_status = Some(Err(format!("Could not {what}: {message}.")));
        } else {
            self.show_error(format!("Could not {what}: {message}."));
        }
    }

    /// A backup operation finished: say so on the settings screen.
    pub(super) fn backup_done(&mut self, sentence: String) {
        self.settings.busy = false;
        self.settings.backup_status = Some(Ok(sentence));
    }

    /// An event of the core: meeting and media events go to the meeting screen.
    pub(super) fn on_core(&mut self, event: CoreEvent) -> Task<Message> {
        match event {
            CoreEvent::Meeting(event) => {
                let is_left = matches!(event, MeetingEvent::Left);
                if let MeetingEvent::Knocking { peer_id, .. } = &event {
                    info!(peer = %peer_id, "waiting in the lobby");
                }
                if let MeetingEvent::LobbyLeft { peer_id, .. } = &event {
                    info!(peer = %peer_id, "left the lobby");
                }
                let Some(meeting) = self.meeting.as_mut() else {
                    return Task::none();
                };
                if let MeetingEvent::MemberMuted { peer_id, muted } = &event {
                    info!(peer = %peer_id, muted, "member muted");
                }
                let before = meeting.members.len();
                let action = meeting.handle_meeting(event);
                if meeting.members.len() != before || action.is_some() {
                    info!(
                        tiles = meeting.members.len() + 1,
                        phase = ?meeting.phase,
                        "meeting view"
                    );
                }
                if is_left {
                    if !self.closing {
                        self.leave_to_home();
                    }
                    // Closing: the window goes when the goodbye is delivered (`LeaveDone`).
                    return Task::none();
                }
                return self.on_meeting(action);
            }
            CoreEvent::Media(event) => {
                if let Some(meeting) = self.meeting.as_mut() {
                    meeting.logging_stage(|meeting| meeting.handle_media(event));
                }
            }
            CoreEvent::Warning { message } => {
                self.banner = Some(Banner {
                    text: message,
                    error: false,
                });
            }
            CoreEvent::Lagged { missed } => {
                // The UI fell behind and the core dropped events: read the state again.
                warn!(missed, "the window fell behind the meeting; catching up");
                if let Some(meeting) = self.meeting.as_ref().and_then(|m| m.meeting_id) {
                    self.request(Request::Resync(meeting));
                }
            }
            other => tracing::debug!(?other, "core event not shown"),
        }
        Task::none()
    }
}
