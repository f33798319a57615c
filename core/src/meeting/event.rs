//! What a meeting reports to the application.

use libp2p::PeerId;

use crate::invite::MeetingId;

/// Why a member is no longer in the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It said goodbye.
    Left,
    /// Nothing was heard from it within the liveness timeout.
    TimedOut,
}

impl LeaveReason {
    /// The lowercase word used in CLI events.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::TimedOut => "timed out",
        }
    }
}

/// A change in the meeting, for the application to show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeetingEvent {
    /// We are in the meeting (created it, or the first member accepted us).
    Joined {
        /// Which meeting.
        meeting_id: MeetingId,
    },
    /// Someone is now a member.
    MemberJoined {
        /// Who.
        peer_id: PeerId,
        /// Their display name.
        name: String,
    },
    /// Someone is no longer a member.
    MemberLeft {
        /// Who.
        peer_id: PeerId,
        /// Their display name.
        name: String,
        /// Why.
        reason: LeaveReason,
    },
    /// A member refused our proof of the secret: the invite is wrong.
    JoinRefused,
    /// Nobody answered before the join deadline.
    JoinTimedOut,
    /// We left.
    Left,
}
