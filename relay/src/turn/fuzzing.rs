//! The relay's fuzz target: every datagram or TCP frame a stranger can send to the TURN
//! port, before and at the gate (STUN / ChannelData classification, credential and
//! integrity checks, the 486 answer), the TURN-over-TCP frame header, and REST-API
//! usernames. Any input must give a verdict or a typed error, never a panic.
//!
//! Run by `make fuzz` (cargo-fuzz, `relay/fuzz`) and replayed from its corpus by
//! `relay/tests/fuzz_corpora.rs` in `make test`; [`seeds`] start the corpus. Not public API.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use stun::attributes::{ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::{
    BINDING_REQUEST, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CREATE_PERMISSION, Message,
    MessageType, Setter,
};
use stun::textattrs::TextAttribute;

use super::gate::{Gate, Live, Pending};
use super::{Secret, UDP, Verdict, decode_stun, tcp_frame_len};
use crate::access::{self, Allowlist, parse_username};
use crate::config::TurnConfig;
use crate::metrics::Metrics;

/// The relay secret the target's gate checks credentials against.
const FUZZ_SECRET: &str = "fuzz";

/// Runs one input: `true` if the gate handed it on or answered it (it looked like TURN).
pub fn turn_input(data: &[u8]) -> bool {
    let live = Live::new(&TurnConfig::default(), Allowlist::Open, HashSet::new());
    let gate = Gate::new(Secret::new(FUZZ_SECRET), live, 1, Arc::new(Metrics::new()));
    let verdict = gate.inspect(data, UDP, &Pending::default());
    if let Some(message) = decode_stun(data) {
        assert!(message.raw.len() <= data.len());
    }
    if let Some(header) = data.first_chunk::<4>()
        && let Ok(len) = tcp_frame_len(*header)
    {
        assert!(len >= 4, "a TCP frame is at least its header");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok((_, peer)) = parse_username(text)
    {
        assert!(text.ends_with(&peer.to_string()));
    }
    verdict != Verdict::Drop
}

/// Valid examples of what reaches the TURN port: a binding request, allocations with good
/// and bad credentials, a permission request, ChannelData, a REST-API username.
pub fn seeds() -> Vec<Vec<u8>> {
    let peer = Keypair::ed25519_from_bytes([1; 32])
        .map(|key| key.public().to_peer_id())
        .unwrap_or_else(|_| libp2p::PeerId::random());
    // Valid until 2096, so that the seeds stay the same from one run to the next.
    let good = access::mint(
        FUZZ_SECRET.as_bytes(),
        &peer,
        4_000_000_000,
        Duration::from_secs(3600),
    );
    let mut seeds = Vec::new();
    let binding: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(stun::agent::TransactionId::new()),
    ];
    seeds.extend(build(&binding));
    for password in [good.password.as_str(), "wrong"] {
        for method in [METHOD_ALLOCATE, METHOD_CREATE_PERMISSION] {
            let mut setters: Vec<Box<dyn Setter>> = vec![
                Box::new(MessageType::new(method, CLASS_REQUEST)),
                Box::new(stun::agent::TransactionId::new()),
            ];
            if method == METHOD_CREATE_PERMISSION {
                setters.push(Box::new(turn::proto::peeraddr::PeerAddress {
                    ip: [192, 0, 2, 20].into(),
                    port: 50_000,
                }));
            }
            setters.push(Box::new(TextAttribute::new(
                ATTR_USERNAME,
                good.username.clone(),
            )));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, "conclave".into())));
            setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
                good.username.clone(),
                "conclave".into(),
                password.into(),
            )));
            seeds.extend(build(&setters));
        }
    }
    // ChannelData on channel 0x4000 with four bytes of payload.
    seeds.push(vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]);
    seeds.push(good.username.into_bytes());
    seeds
}

fn build(setters: &[Box<dyn Setter>]) -> Option<Vec<u8>> {
    let mut message = Message::new();
    message.build(setters).ok()?;
    Some(message.raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_but_the_username_reaches_past_the_gate() {
        let seeds = seeds();
        assert!(seeds.len() >= 6);
        let passed = seeds.iter().filter(|seed| turn_input(seed)).count();
        assert_eq!(passed, seeds.len() - 1, "only the bare username is dropped");
        assert!(!turn_input(b"\xffnot turn"));
    }
}
