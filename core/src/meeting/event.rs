//! What a meeting reports to the application.

use libp2p::PeerId;

use crate::group::SecurityCode;
use crate::invite::MeetingId;
use crate::proto::control::RemovalReason;

/// Why a member is no longer in the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It said goodbye.
    Left,
    /// The host removed it.
    Kicked,
    /// Nothing was heard from it within the liveness timeout.
    TimedOut,
}

impl LeaveReason {
    /// The lowercase word used in CLI events.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Kicked => "kicked",
            LeaveReason::TimedOut => "timed out",
        }
    }
}

impl From<RemovalReason> for LeaveReason {
    fn from(reason: RemovalReason) -> Self {
        match reason {
            RemovalReason::Left | RemovalReason::Replaced => LeaveReason::Left,
            RemovalReason::Kicked => LeaveReason::Kicked,
            RemovalReason::TimedOut | RemovalReason::Withheld => LeaveReason::TimedOut,
        }
    }
}

/// What an [`MeetingEvent::Alert`] is about: a member did something honest members never
/// do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AlertKind {
    /// A member proved (signed with its leaf key) another group than ours at our epoch
    /// number: the meeting is split in two, someone sent different commits to different
    /// members.
    Fork,
    /// A member sent a commit that the meeting's rules do not allow (`docs/protocol.md`
    /// §6, "Commit rules"): refused, and the meeting goes on without it.
    Commit(CommitViolation),
}

impl AlertKind {
    /// The lowercase word used in CLI events.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertKind::Fork => "fork",
            AlertKind::Commit(_) => "commit",
        }
    }
}

/// Which commit rule a refused commit broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CommitViolation {
    /// Its sender is not the committer: a member with a lower leaf stays in the group.
    NotCommitter,
    /// It removes a member without a reason the receiver can check (no signed leave, no
    /// signed kick by the host, a member the receiver heard from just now, ...).
    UnjustifiedRemoval,
    /// Its stated reasons do not name exactly the members it removes.
    ReasonsMismatch,
    /// It adds a leaf whose credential is not a well-formed Conclave credential: a member
    /// that would never show in anyone's roster.
    MalformedCredential,
    /// It adds a banned member, a member twice, or (in a lobby meeting) a joiner the host
    /// did not approve.
    UnjustifiedAdd,
    /// It carries proposals Conclave never makes (updates, pre-shared keys, extensions).
    UnexpectedProposal,
}

impl CommitViolation {
    /// The snake-case word used in CLI events.
    pub fn as_str(&self) -> &'static str {
        match self {
            CommitViolation::NotCommitter => "not_committer",
            CommitViolation::UnjustifiedRemoval => "unjustified_removal",
            CommitViolation::ReasonsMismatch => "reasons_mismatch",
            CommitViolation::MalformedCredential => "malformed_credential",
            CommitViolation::UnjustifiedAdd => "unjustified_add",
            CommitViolation::UnexpectedProposal => "unexpected_proposal",
        }
    }

    /// What it means, for people.
    pub fn describe(&self) -> &'static str {
        match self {
            CommitViolation::NotCommitter => "committed although it is not its turn",
            CommitViolation::UnjustifiedRemoval => {
                "tried to remove a member without the member leaving or the host asking"
            }
            CommitViolation::ReasonsMismatch => "gave reasons that do not match its changes",
            CommitViolation::MalformedCredential => "tried to add a hidden member",
            CommitViolation::UnjustifiedAdd => "tried to add someone nobody admitted",
            CommitViolation::UnexpectedProposal => "sent a change Conclave never makes",
        }
    }
}

/// A change in the meeting, for the application to show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeetingEvent {
    /// We are in the meeting's MLS group (created it, or were welcomed).
    Joined {
        /// Which meeting.
        meeting_id: MeetingId,
        /// The MLS epoch we start at.
        epoch: u64,
        /// The security code of that epoch.
        security_code: SecurityCode,
    },
    /// The group moved to a new epoch (membership changed, keys rotated).
    Epoch {
        /// The new epoch.
        epoch: u64,
        /// Its security code: equal at every member of the epoch.
        security_code: SecurityCode,
        /// Members of the epoch (leaf order), us included.
        members: Vec<PeerId>,
    },
    /// Someone is now a member of the group.
    MemberJoined {
        /// Who.
        peer_id: PeerId,
        /// Their display name (empty until they told us).
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
    /// A chat line from a member.
    Chat {
        /// Who wrote it.
        from: PeerId,
        /// Their display name.
        name: String,
        /// The text.
        text: String,
        /// When it was sent (sender's clock, ms since the Unix epoch).
        unix_ms: u64,
    },
    /// Our own chat line `seq` was accepted and is on its way (pending until
    /// [`MeetingEvent::ChatDelivered`] or [`MeetingEvent::ChatFailed`]).
    ChatSent {
        /// Its number in this session (for [`crate::Client::resend_chat`]).
        seq: u64,
        /// Its identity, kept across restarts (receivers take a line once).
        id: u64,
        /// The text.
        text: String,
        /// When it was written (ms since the Unix epoch).
        unix_ms: u64,
        /// Written before this client restarted, and not acknowledged by every member then:
        /// sent again now (it is in the history already).
        resumed: bool,
    },
    /// Every member our line `seq` was written to has it (or left).
    ChatDelivered {
        /// Which line.
        seq: u64,
    },
    /// Our line `seq` did not reach these members in time; it can be sent again.
    ChatFailed {
        /// Which line.
        seq: u64,
        /// Who did not get it.
        peers: Vec<PeerId>,
    },
    /// A member muted or unmuted itself (as it announced in the group). Members are
    /// unmuted until they say otherwise; only changes are reported.
    MemberMuted {
        /// Who.
        peer_id: PeerId,
        /// Whether its microphone is off now.
        muted: bool,
    },
    /// Lobby meeting, host side: someone proved the secret and waits to be let in.
    Knocking {
        /// Who.
        peer_id: PeerId,
        /// Their display name.
        name: String,
    },
    /// Lobby meeting, host side: a joiner that was waiting stopped asking to be let in
    /// (it went away) and is no longer in the lobby.
    LobbyLeft {
        /// Who.
        peer_id: PeerId,
        /// Their display name.
        name: String,
    },
    /// Lobby meeting, joiner side: the secret was accepted; the host must let us in.
    Waiting,
    /// A member refused our proof of the secret: the invite is wrong.
    JoinRefused,
    /// Nobody let us in before the join deadline.
    JoinTimedOut,
    /// We were removed from the group.
    Removed {
        /// Why, as the committer stated it.
        reason: LeaveReason,
    },
    /// Every member and the network fell silent: we are the one cut off. We commit
    /// nothing and keep trying to reach the members; the application shows
    /// "reconnecting…".
    Reconnecting,
    /// We reach the members again (joined again with a new leaf if they removed us
    /// meanwhile), or the network came back without them and they count as gone.
    Reconnected,
    /// A member did something honest members never do; the application shows it
    /// prominently (red banner). Raised at most once per (kind, peer, epoch).
    Alert {
        /// What happened.
        kind: AlertKind,
        /// The member concerned.
        peer_id: PeerId,
        /// The epoch it happened at.
        epoch: u64,
    },
    /// A kick rotated the meeting secret: this is the meeting's invite from now on. Every
    /// invite handed out before (the kicked member's included) no longer finds the meeting
    /// nor proves the secret.
    InviteChanged {
        /// The new invite.
        invite: crate::invite::Invite,
    },
    /// We left.
    Left,
}
