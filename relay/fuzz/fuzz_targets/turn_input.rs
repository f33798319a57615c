//! Fuzzes the relay's own parsers of untrusted bytes: the gate in front of the TURN engine
//! (STUN / ChannelData classification, credential and integrity checks, the 486 answer),
//! the TURN-over-TCP frame header, and REST-API usernames. Any input must give a verdict or
//! a typed error, never a panic; a TCP frame length is always at least its header.
#![no_main]

use conclave_relay::access::parse_username;
use conclave_relay::turn::{fuzzing, tcp_frame_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::inspect(data);
    if let Some(header) = data.first_chunk::<4>() {
        if let Ok(len) = tcp_frame_len(*header) {
            assert!(len >= 4);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_username(text);
    }
});
