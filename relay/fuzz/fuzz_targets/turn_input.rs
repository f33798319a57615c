//! cargo-fuzz entry for `conclave_relay::turn::fuzzing::turn_input` (what it checks is
//! documented there; `make fuzz` runs it).
#![no_main]

use conclave_relay::turn::fuzzing::turn_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    turn_input(data);
});
