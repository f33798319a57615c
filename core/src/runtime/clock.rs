//! The runtime's clock: the one file of the control plane that reads the time.
//!
//! The sans-IO parts (the meeting machine, routing, TURN fetching) take `now` (and the
//! wall-clock time where a message carries it) as arguments; the runtime reads both here and
//! passes them down.
// The async edge: reading the clocks is this file's purpose (core/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The monotonic time now.
pub(super) fn now() -> Instant {
    Instant::now()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
