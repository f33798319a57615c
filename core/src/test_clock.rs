//! The one clock reading unit tests make: an arbitrary origin for simulated time (the code
//! under test takes `now` as an argument; only the async edges read the clock).

use std::time::Instant;

/// An arbitrary origin for simulated time.
pub(crate) fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // the tests' one reading of the clock
    Instant::now()
}
