//! Fuzzes the invite parser: any text must give an invite or a typed error, never a panic,
//! and every accepted invite must survive a format/parse round trip.
#![no_main]

use conclave_core::invite::Invite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(invite) = text.parse::<Invite>() {
        let again: Invite = invite.to_uri().parse().expect("a formatted invite parses");
        assert_eq!(again, invite);
    }
});
