//! Fuzzes the TURN credential protocol's decoders (`/conclave/turn/1.0.0`): arbitrary bytes
//! from a relay must decode or fail with a typed error, never panic, and decoded messages
//! must re-encode identically.
#![no_main]

use conclave_core::proto::Message;
use conclave_core::proto::turn::{TurnRequest, TurnResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = TurnResponse::decode(data) {
        assert_eq!(TurnResponse::decode(&response.encode()).expect("re-decodes"), response);
    }
    let _ = TurnRequest::decode(data);
});
