//! What survives a restart, written as the meeting machine reports it: members as bootstrap
//! peers, the meeting for rejoining, chat lines. Failures are logged; the meeting goes on.

use tracing::warn;

use super::{Driver, clock};
use crate::meeting::MeetingEvent;
use crate::store::{ChatRecord, MeetingRecord};

impl Driver {
    /// Keeps what must survive a restart of `event`.
    pub(super) fn record(&mut self, event: &MeetingEvent) {
        let Some(session) = &self.session else { return };
        let meeting = session.invite.meeting_id;
        let result = match event {
            MeetingEvent::MemberJoined { peer_id, .. } => {
                let addrs = self.routing.addrs_of(peer_id);
                self.store
                    .remember_peer(peer_id, addrs, clock::unix_ms() / 1000)
            }
            MeetingEvent::Joined { .. } => self.store.remember_meeting(
                meeting,
                &MeetingRecord {
                    invite: session.invite.to_uri(),
                    last_seen_unix_ms: clock::unix_ms(),
                },
            ),
            MeetingEvent::ChatSent { text, unix_ms, .. } => self.store.append_chat(
                meeting,
                &ChatRecord {
                    from: self.swarm.local_peer_id().to_base58(),
                    name: self.name.clone(),
                    text: text.clone(),
                    unix_ms: *unix_ms,
                },
            ),
            MeetingEvent::Chat {
                from,
                name,
                text,
                unix_ms,
            } => self.store.append_chat(
                meeting,
                &ChatRecord {
                    from: from.to_base58(),
                    name: name.clone(),
                    text: text.clone(),
                    unix_ms: *unix_ms,
                },
            ),
            _ => Ok(()),
        };
        if let Err(err) = result {
            warn!(error = %err, "cannot save meeting data");
        }
    }
}
