//! What survives a restart, written as the meeting machine reports it: members as bootstrap
//! peers, the meeting for rejoining, chat lines, and our lines not yet acknowledged by every
//! member (sent again once we are back in the meeting after a restart). Failures are
//! logged; the meeting goes on.

use libp2p::PeerId;
use tracing::{info, warn};

use super::{Driver, clock};
use crate::meeting::{LeaveReason, MeetingEvent};
use crate::store::{ChatRecord, MeetingRecord, PendingChat, StoreError};

impl Driver {
    /// Changes the stored record of the current meeting (starting from its invite if none is
    /// stored yet) and writes it back; failures are logged.
    pub(super) fn update_meeting_record(&mut self, change: impl FnOnce(&mut MeetingRecord)) {
        let Some(session) = &self.session else { return };
        let meeting = session.invite.meeting_id;
        let mut record = match self.store.meeting(meeting) {
            Ok(Some(record)) => record,
            Ok(None) => MeetingRecord::new(session.invite.to_uri(), clock::unix_ms()),
            Err(err) => {
                warn!(error = %err, "cannot read the stored meeting");
                return;
            }
        };
        change(&mut record);
        if let Err(err) = self.store.remember_meeting(meeting, &record) {
            warn!(error = %err, "cannot save the meeting");
        }
    }

    /// Remembers the addresses the routing table holds for `peers` (merged with what the
    /// store knew).
    fn remember_where(&self, peers: &[PeerId]) -> Result<(), StoreError> {
        let now = clock::unix_ms() / 1000;
        for peer in peers {
            let addrs = self.routing.addrs_of(peer);
            if !addrs.is_empty() {
                self.store.remember_peer(peer, addrs, now)?;
            }
        }
        Ok(())
    }

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
            MeetingEvent::Joined { .. } => {
                let invite = session.invite.to_uri();
                // The bans our welcome named are kept too.
                let banned: Vec<String> = session.machine.banned().map(|p| p.to_base58()).collect();
                self.update_meeting_record(|record| {
                    record.invite = invite;
                    record.last_seen_unix_ms = clock::unix_ms();
                    for peer in banned {
                        if !record.banned.contains(&peer) {
                            record.banned.push(peer);
                        }
                    }
                });
                Ok(())
            }
            MeetingEvent::MemberLeft {
                peer_id,
                reason: LeaveReason::Kicked,
                ..
            } => {
                let banned = peer_id.to_base58();
                self.update_meeting_record(|record| {
                    if !record.banned.contains(&banned) {
                        record.banned.push(banned);
                    }
                });
                Ok(())
            }
            // Where members were reachable when they or we left: what the meeting taught us
            // since they joined (their hellos, heartbeats and identify), for the next time.
            MeetingEvent::MemberLeft { peer_id, .. } => self.remember_where(&[*peer_id]),
            MeetingEvent::Left => {
                let local = *self.swarm.local_peer_id();
                let members: Vec<PeerId> = session
                    .machine
                    .members()
                    .into_iter()
                    .map(|(peer, _)| peer)
                    .filter(|peer| *peer != local)
                    .collect();
                self.remember_where(&members)
            }
            MeetingEvent::ChatSent {
                seq,
                id,
                text,
                unix_ms,
                resumed: false,
            } => self.store.append_own_chat(
                meeting,
                &ChatRecord {
                    from: self.swarm.local_peer_id().to_base58(),
                    name: self.name.clone(),
                    text: text.clone(),
                    unix_ms: *unix_ms,
                },
                &PendingChat {
                    id: *id,
                    unix_ms: *unix_ms,
                    order: *seq,
                    text: text.clone(),
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
        if let Err(err) = self.settle_pending_chat(event) {
            warn!(error = %err, "cannot forget a delivered chat line");
        }
    }

    /// Our chat lines stay in the store (written with the history line on `ChatSent`) until
    /// every member has them, or they failed for someone, who was told: a restart sends
    /// them again.
    fn settle_pending_chat(&mut self, event: &MeetingEvent) -> Result<(), StoreError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        let meeting = session.invite.meeting_id;
        match event {
            MeetingEvent::ChatSent { seq, id, .. } => {
                session.pending_chat.insert(*seq, *id);
            }
            MeetingEvent::ChatDelivered { seq } | MeetingEvent::ChatFailed { seq, .. } => {
                if let Some(id) = session.pending_chat.remove(seq) {
                    self.store.remove_pending_chat(meeting, id)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Once we are (back) in a meeting for the first time in this run: our lines that a
    /// previous run wrote and not every member acknowledged go out again.
    pub(super) fn resume_pending_chat(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if std::mem::replace(&mut session.chat_resumed, true) {
            return;
        }
        let lines = match self.store.pending_chats(session.invite.meeting_id) {
            Ok(lines) => lines,
            Err(err) => {
                warn!(error = %err, "cannot read the unsent chat lines");
                return;
            }
        };
        if lines.is_empty() {
            return;
        }
        info!(
            lines = lines.len(),
            "sending again the chat lines not delivered before the restart"
        );
        let now = clock::now();
        for line in lines {
            if let Err(err) = session
                .machine
                .resume_chat(now, line.id, line.unix_ms, &line.text)
            {
                warn!(error = %err, "cannot send an unsent chat line again");
            }
        }
    }
}
