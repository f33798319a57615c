//! Criterion benchmarks of the pure hot paths of the foundation.
//!
//! `cargo bench -p conclave-core` — figures go to `docs/performance.md`.

use std::hint::black_box;

use conclave_core::admission::MeetingKeys;
use conclave_core::identity::Identity;
use conclave_core::invite::Invite;
use conclave_core::media::audio::denoise::NoiseSuppressor;
use conclave_core::media::audio::{FRAME_SAMPLES, Frame};
use conclave_core::proto::Message;
use conclave_core::proto::control::{EpochProof, MemberInfo, Request};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn benches(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut invite = Invite::new_meeting(&mut rng);
    let host = Identity::generate();
    invite.host = Some(host.peer_id());
    invite.relays = vec![
        format!(
            "/ip4/127.0.0.1/tcp/4001/p2p/{}",
            Identity::generate().peer_id()
        )
        .parse()
        .expect("valid"),
    ];
    let uri = invite.to_uri();
    c.bench_function("invite/parse", |b| {
        b.iter(|| black_box(&uri).parse::<Invite>())
    });

    c.bench_function("admission/derive_keys", |b| {
        b.iter(|| MeetingKeys::derive(black_box(invite.meeting_id), &invite.secret))
    });
    let keys = MeetingKeys::derive(invite.meeting_id, &invite.secret);
    let joiner = Identity::generate().peer_id();
    let nonce = [7u8; 16];
    let mac = keys.hello_mac(&joiner, &host.peer_id(), &nonce, 1_000);
    c.bench_function("admission/verify_hello", |b| {
        b.iter(|| {
            keys.verify_hello(
                &joiner,
                &host.peer_id(),
                &nonce,
                1_000,
                black_box(&mac),
                1_000,
            )
        })
    });

    let members: Vec<MemberInfo> = (0..8)
        .map(|i| MemberInfo {
            peer_id: Identity::generate().peer_id(),
            name: format!("member {i}"),
            addrs: vec![
                format!("/ip4/127.0.0.1/tcp/{}", 4000 + i)
                    .parse()
                    .expect("valid"),
            ],
        })
        .collect();
    let heartbeat = Request::Heartbeat {
        meeting_id: invite.meeting_id,
        members,
        epoch: Some(3),
        proof: Some(EpochProof {
            authenticator_hash: [7; 32],
            signature: [9; 64],
        }),
    };
    let bytes = heartbeat.encode();
    c.bench_function("wire/encode_heartbeat_8_members", |b| {
        b.iter(|| black_box(&heartbeat).encode())
    });
    c.bench_function("wire/decode_heartbeat_8_members", |b| {
        b.iter(|| Request::decode(black_box(&bytes)))
    });

    c.bench_function("identity/safety_number", |b| {
        b.iter(|| black_box(&host).safety_number())
    });

    // Noise suppression of one 20 ms microphone frame (speech-like noise input).
    let mut suppressor = NoiseSuppressor::new();
    let mut frame: Frame = [0; FRAME_SAMPLES];
    for (i, sample) in frame.iter_mut().enumerate() {
        *sample = ((i * 7919 % 2000) as i16 - 1000) * 3;
    }
    c.bench_function("audio/noise_suppression_20ms_frame", |b| {
        b.iter(|| {
            let mut work = frame;
            suppressor.process(black_box(&mut work));
            work
        })
    });
}

criterion_group!(core, benches);
criterion_main!(core);
