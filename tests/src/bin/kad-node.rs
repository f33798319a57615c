//! `kad-node`: a DHT node that serves Kademlia under Conclave's protocol name and nothing
//! else — no circuit relay, no TURN, no Conclave control — and that, like an
//! implementation following the libp2p Kademlia specification (js-libp2p's kad-dht, for
//! one), stores a provider record only under a key that is a multihash. To a Conclave
//! client it is a site's bootstrap of another implementation; the system tests start it
//! (`discovery::a_bootstrap_that_only_serves_kademlia_carries_discovery`).
//!
//! Prints one JSON line per event on stdout: `listening {peer_id, addrs}`, then
//! `provider_stored {key}` or `provider_refused {key, reason}` for every provider record a
//! peer asks it to keep.

use std::time::Duration;

use anyhow::Context;
use conclave_core::net::behaviour::kad_config;
use conclave_core::net::swarm::{SwarmConfig, build, listen};
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{self, InboundRequest, StoreInserts};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, identify};
use serde_json::json;

/// The node's behaviour: Kademlia and identify, nothing else.
#[derive(NetworkBehaviour)]
struct KadOnly {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

/// Why `key` is not a multihash (a code, a length, that many bytes of digest), if it is not.
fn not_a_multihash(key: &[u8]) -> Option<&'static str> {
    let Some((code, rest)) = read_varint(key) else {
        return Some("no hash function code");
    };
    let Some((length, digest)) = read_varint(rest) else {
        return Some("no digest length");
    };
    if code == 0 {
        return Some("hash function code 0");
    }
    if usize::try_from(length).ok() != Some(digest.len()) {
        return Some("digest length does not match");
    }
    None
}

/// An unsigned varint at the start of `bytes`, and what follows it.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn print(event: &str, fields: serde_json::Value) {
    let mut line = json!({ "event": event });
    if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
        line.extend(fields.clone());
    }
    println!("{line}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let key = Keypair::generate_ed25519();
    let peer_id = key.public().to_peer_id();
    let mut swarm = build(key, SwarmConfig::new(Duration::from_secs(60)), |key, _| {
        let mut config = kad_config();
        // Provider records come to us as requests: we decide what to keep.
        config.set_record_filtering(StoreInserts::FilterBoth);
        let mut kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), config);
        kad.set_mode(Some(kad::Mode::Server));
        let identify = identify::Behaviour::new(identify::Config::new(
            "/other-kademlia/1.0.0".to_owned(),
            key.public(),
        ));
        Ok(KadOnly { kad, identify })
    })
    .context("build the swarm")?;
    let on: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().context("listen address")?;
    let addrs = listen(&mut swarm, &[on], Duration::from_secs(10))
        .await
        .context("listen")?;
    let addrs: Vec<String> = addrs
        .into_iter()
        .map(|addr| addr.with(Protocol::P2p(peer_id)).to_string())
        .collect();
    print(
        "listening",
        json!({ "peer_id": peer_id.to_string(), "addrs": addrs }),
    );
    loop {
        let event = swarm.select_next_some().await;
        match event {
            SwarmEvent::Behaviour(KadOnlyEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(KadOnlyEvent::Kad(kad::Event::InboundRequest {
                request:
                    InboundRequest::AddProvider {
                        record: Some(record),
                    },
            })) => {
                let key = hex(record.key.as_ref());
                match not_a_multihash(record.key.as_ref()) {
                    Some(reason) => {
                        print("provider_refused", json!({ "key": key, "reason": reason }))
                    }
                    None => {
                        if let Err(err) = swarm.behaviour_mut().kad.store_mut().add_provider(record)
                        {
                            print(
                                "provider_refused",
                                json!({ "key": key, "reason": err.to_string() }),
                            );
                        } else {
                            print("provider_stored", json!({ "key": key }));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
