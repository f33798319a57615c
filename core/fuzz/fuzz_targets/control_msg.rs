//! Fuzzes the control-message decoders: arbitrary bytes from the network must decode or
//! fail with a typed error, never panic, and decoded messages must re-encode identically.
#![no_main]

use conclave_core::proto::Message;
use conclave_core::proto::control::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        assert_eq!(Request::decode(&request.encode()).expect("re-decodes"), request);
    }
    if let Ok(response) = Response::decode(data) {
        assert_eq!(Response::decode(&response.encode()).expect("re-decodes"), response);
    }
});
