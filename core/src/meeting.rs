//! The meeting: admission, presence, and the MLS group that decides who is in it.
//!
//! [`Machine`] is sans-IO (a state machine fed events and time): the runtime feeds it
//! discovered candidates, control requests and responses, and time, then drains
//! [`Output`]s (messages to send, DHT actions, storage writes, [`MeetingEvent`]s) until
//! none is left. It never reads a clock, never touches a socket and never spawns.
//!
//! Phases: `Joining` → `Member` (group created, or MLS welcome received) → `Left` /
//! `Removed`; or `Joining` → `Refused` / `TimedOut`. The rules are in `docs/protocol.md`.

mod event;
mod machine;

pub use event::{AlertKind, CommitViolation, LeaveReason, MeetingEvent};
pub(crate) use machine::AppMessage;
pub use machine::{Config, Machine, Output, Phase, Stats};
