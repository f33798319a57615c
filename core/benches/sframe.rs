//! SFrame seal+open throughput against raw AES-128-GCM on the same payloads, same run.
//!
//! `cargo bench -p conclave-core --bench sframe` — payloads: a 20 ms Opus frame at
//! 32 kbit/s (80 bytes) and 1 KiB on the audio stream; 10 KB and 50 KB (a VP8 delta and
//! keyframe at 360p) on the video stream. "raw" is one AES-128-GCM seal and open with ring and a
//! fresh nonce per frame; "sframe" is Conclave's [`Sealer`] + [`Opener`] (header, KID lookup,
//! replay window, per-KID key). Figures go to `docs/performance.md`.

use std::hint::black_box;
use std::time::Instant;

use conclave_core::group::media_keys::sender_base_key;
use conclave_core::media::crypto::keyring::Opener;
use conclave_core::media::crypto::sframe::{Sealer, Stream};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

fn benches(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)] // keys are installed once, at this instant
    let now = Instant::now();
    let mut group = c.benchmark_group("seal_open");
    for (size, stream) in [
        (80usize, Stream::Audio),
        (1024, Stream::Audio),
        (10_000, Stream::Video),
        (50_000, Stream::Video),
    ] {
        let payload = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));

        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7; 16]).expect("16-byte key"));
        let mut counter = 0u64;
        group.bench_with_input(
            BenchmarkId::new("raw_aes128gcm", size),
            &payload,
            |b, payload| {
                b.iter(|| {
                    counter += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&counter.to_be_bytes());
                    let mut buffer = payload.clone();
                    key.seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut buffer,
                    )
                    .expect("seal");
                    let opened = key
                        .open_in_place(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::empty(),
                            &mut buffer,
                        )
                        .expect("open");
                    black_box(opened.len())
                })
            },
        );

        let mut sealer = Sealer::for_stream(1, stream);
        sealer
            .install(3, 1, &sender_base_key(&[9; 32], 1))
            .expect("install");
        let mut opener = Opener::default();
        opener.install(now, 3, [9; 32]);
        group.bench_with_input(BenchmarkId::new("sframe", size), &payload, |b, payload| {
            b.iter(|| {
                let sealed = sealer.seal(payload).expect("seal");
                black_box(opener.open(now, &sealed).expect("open").payload.len())
            })
        });
    }
    group.finish();
}

criterion_group!(sframe, benches);
criterion_main!(sframe);
