//! The meeting: who is in it, who is joining, who is gone.
//!
//! [`Machine`] is sans-IO (see `STYLE.md` B3): the [driver](crate::net::driver) feeds it
//! discovered candidates, control requests and responses, and time, then drains
//! [`Output`]s (messages to send, DHT actions, [`MeetingEvent`]s) until none is left.
//! It never reads a clock, never touches a socket and never spawns.
//!
//! Phases: `Joining` → `Member` (first mutually authenticated peer, or at once for the
//! creator) → `Left`; or `Joining` → `Refused` / `TimedOut`.

mod event;
mod machine;

pub use event::{LeaveReason, MeetingEvent};
pub use machine::{Config, Machine, Output, Phase, Stats};
