//! The client's commands ([`Command`], sent by [`Client`](crate::Client) handles over a
//! bounded queue, each with a oneshot reply) and how the driver carries them out.

use std::time::Instant;

use libp2p::PeerId;
use rand::SeedableRng;
use rand::rngs::{OsRng, StdRng};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::media_link::MediaInput;
use super::{Driver, clock};
use crate::Error;
use crate::invite::{Invite, MeetingId};
use crate::proto::turn::IceServer;
use crate::store::ChatRecord;

/// Commands from [`Client`](crate::Client) handles.
#[derive(Debug)]
pub(crate) enum Command {
    Create {
        lobby: bool,
        reply: oneshot::Sender<Result<Invite, Error>>,
    },
    Join {
        invite: Invite,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    Chat {
        text: String,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    ResendChat {
        seq: u64,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Kick {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Approve {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Mute or unmute: the media plane stops sending, the members are told.
    Mute {
        muted: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A setting of the media plane (noise suppression).
    Media {
        input: MediaInput,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    History {
        meeting: MeetingId,
        reply: oneshot::Sender<Result<Vec<ChatRecord>, Error>>,
    },
    IceServers {
        reply: oneshot::Sender<Result<Vec<IceServer>, Error>>,
    },
    /// The current members other than us.
    Members {
        reply: oneshot::Sender<Vec<(PeerId, String)>>,
    },
}

/// The refusal of a command that needs a meeting.
const NOT_IN_A_MEETING: Error = Error::Usage("not in a meeting");

impl Driver {
    pub(super) fn on_command(&mut self, command: Command) {
        let now = clock::now();
        match command {
            Command::Create { lobby, reply } => {
                let _ = reply.send(self.create(lobby, now));
            }
            Command::Join { invite, reply } => {
                let _ = reply.send(self.join(invite, now));
            }
            Command::Leave { reply } => self.leave(reply, now),
            Command::Chat { text, reply } => {
                let result = self.with_machine(|m| m.send_chat(now, clock::unix_ms(), &text));
                let _ = reply.send(result);
            }
            Command::ResendChat { seq, reply } => {
                let _ = reply.send(self.with_machine(|m| m.resend_chat(now, seq)));
            }
            Command::Approve { peer, reply } => {
                let _ = reply.send(self.with_machine(|m| m.approve(now, peer)));
            }
            Command::Kick { peer, reply } => {
                let _ = reply.send(self.with_machine(|m| m.kick(now, peer)));
            }
            Command::Mute { muted, reply } => {
                let _ = reply.send(self.mute(muted));
            }
            Command::Media { input, reply } => {
                let result = if self.media.pass(input) {
                    Ok(())
                } else {
                    Err(Error::Usage(
                        "this client has no audio (start it with --audio-in or --audio-out)",
                    ))
                };
                let _ = reply.send(result);
            }
            Command::History { meeting, reply } => {
                let _ = reply.send(self.store.chat_history(meeting).map_err(Error::from));
            }
            Command::IceServers { reply } => self.fetch_ice_servers(Some(reply)),
            Command::Members { reply } => {
                let members = self
                    .session
                    .as_ref()
                    .filter(|s| !s.machine.is_finished())
                    .map(|s| s.machine.members())
                    .unwrap_or_default();
                let _ = reply.send(members);
            }
        }
    }

    /// Runs `action` on the meeting machine, if there is one.
    fn with_machine<T>(
        &mut self,
        action: impl FnOnce(&mut crate::meeting::Machine<StdRng>) -> Result<T, crate::group::GroupError>,
    ) -> Result<T, Error> {
        match self.session.as_mut() {
            Some(session) => action(&mut session.machine).map_err(Error::Group),
            None => Err(NOT_IN_A_MEETING),
        }
    }

    /// Creates a meeting we host; returns its invite.
    fn create(&mut self, lobby: bool, now: Instant) -> Result<Invite, Error> {
        if self.in_meeting() {
            return Err(Error::Usage("already in a meeting"));
        }
        let mut rng = StdRng::from_rng(OsRng).expect("the OS random source is available");
        let mut invite = Invite::new_meeting(&mut rng);
        invite.host = Some(*self.swarm.local_peer_id());
        invite.relays = self
            .config
            .relays
            .iter()
            .take(crate::invite::MAX_RELAYS)
            .cloned()
            .collect();
        invite.lobby = lobby;
        self.session = Some(self.start_session(invite.clone(), true, rng, now)?);
        Ok(invite)
    }

    /// Starts joining the meeting of `invite` (its relays become ours too).
    fn join(&mut self, invite: Invite, now: Instant) -> Result<(), Error> {
        if self.in_meeting() {
            return Err(Error::Usage("already in a meeting"));
        }
        for relay in invite
            .relays
            .iter()
            .filter(|r| !self.config.relays.contains(r))
            .cloned()
            .collect::<Vec<_>>()
        {
            self.add_relay(&relay);
        }
        let rng = StdRng::from_rng(OsRng).expect("the OS random source is available");
        let (invite, banned) = self.current_invite(invite);
        info!(meeting = %invite.meeting_id.short(), "joining");
        let mut session = self.start_session(invite, false, rng, now)?;
        session.machine.ban(banned);
        self.session = Some(session);
        Ok(())
    }

    /// What the store knows of `invite`'s meeting: the invite to use (ours, if a kick
    /// rotated the meeting away from `invite`'s secret while we were in it) and the members
    /// kicked from it.
    fn current_invite(&self, invite: Invite) -> (Invite, Vec<PeerId>) {
        let record = match self.store.meeting(invite.meeting_id) {
            Ok(Some(record)) => record,
            Ok(None) => return (invite, Vec::new()),
            Err(err) => {
                warn!(error = %err, "cannot read the stored meeting");
                return (invite, Vec::new());
            }
        };
        let banned = record
            .banned
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        if record.supersedes(&invite.secret) {
            match record.invite.parse::<Invite>() {
                Ok(current) if current.meeting_id == invite.meeting_id => {
                    info!("a kick changed this meeting's invite: using the current one");
                    return (current, banned);
                }
                _ => warn!("the stored invite of this meeting is unreadable"),
            }
        }
        (invite, banned)
    }

    /// Mutes or unmutes: the members are told (in a meeting), the media plane stops sending.
    fn mute(&mut self, muted: bool) -> Result<(), Error> {
        let in_meeting = self.in_meeting();
        if let Some(session) = self.session.as_mut()
            && in_meeting
        {
            session.machine.set_muted(muted);
        }
        if self.media.pass(MediaInput::Mute(muted)) || in_meeting {
            // Without audio there is nothing to stop, but the members are still told.
            Ok(())
        } else {
            Err(NOT_IN_A_MEETING)
        }
    }
}
