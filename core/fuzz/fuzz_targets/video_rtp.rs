//! cargo-fuzz entry for `conclave_core::fuzzing::Target::VideoRtp` (what it checks is
//! documented there; `make fuzz` runs it).
#![no_main]

use conclave_core::fuzzing::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    Target::VideoRtp.run(data);
});
